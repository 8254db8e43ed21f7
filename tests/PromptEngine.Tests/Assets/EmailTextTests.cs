using System.Text;
using PromptEngine.Data;

namespace PromptEngine.Tests.Assets;

/// <summary>EmailText on small hand-written messages: each test is one rule of the conversion.</summary>
public class EmailTextTests
{
    static string Convert(string message, int maxChars = 1000) => EmailText.Convert(Encoding.Latin1.GetBytes(message), maxChars);

    static string Convert(byte[] message, int maxChars = 1000) => EmailText.Convert(message, maxChars);

    [Test]
    public void PlainMessageKeepsSubjectAndCollapsedBodyAndSkipsEnvelopeAndOtherHeaders()
    {
        var message = "From someone@example.com  Thu Aug 22 12:36:23 2002\n" +
                      "Received: from a.example by b.example\n\twith SMTP\n" +
                      "From: Someone <someone@example.com>\n" +
                      "Subject: Meeting\n  moved to Friday\n" +
                      "\n" +
                      "Hi all,\n\n   the meeting\tis moved.\n-- \nsig\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: Meeting moved to Friday\nHi all, the meeting is moved. -- sig"));
    }

    [Test]
    public void CrLfLineEndingsGiveTheSameText()
    {
        var lf = "Subject: x\nContent-Type: text/plain\n\nline one\nline two\n";
        Assert.That(Convert(lf.Replace("\n", "\r\n")), Is.EqualTo(Convert(lf)));
        Assert.That(Convert(lf), Is.EqualTo("Subject: x\nline one line two"));
    }

    [Test]
    public void MissingSubjectAndEmptyBodyKeepTheLayout()
    {
        // The layout is always "Subject: " + subject + "\n" + body, trailing whitespace trimmed.
        Assert.That(Convert("From: a@b\n\n"), Is.EqualTo("Subject:"));
        Assert.That(Convert("Subject: only headers\n"), Is.EqualTo("Subject: only headers"));
        Assert.That(Convert("\nbody without headers\n"), Is.EqualTo("Subject: \nbody without headers"));
    }

    const string Alternative =
        "Subject: offer\n" +
        "MIME-Version: 1.0\n" +
        "Content-Type: multipart/alternative; boundary=\"==b1==\"\n" +
        "\n" +
        "This is a multi-part message in MIME format.\n" +
        "--==b1==\n" +
        "Content-Type: text/html; charset=us-ascii\n" +
        "\n" +
        "<html><body><p>HTML version</p></body></html>\n" +
        "--==b1==\n" +
        "Content-Type: text/plain; charset=us-ascii\n" +
        "\n" +
        "Plain version\n" +
        "--==b1==--\n" +
        "epilogue\n";

    [Test]
    public void MultipartAlternativePrefersThePlainPartWhereverItIs()
    {
        Assert.That(Convert(Alternative), Is.EqualTo("Subject: offer\nPlain version"));
    }

    [Test]
    public void HtmlOnlyMessageIsStrippedOfTagsScriptsStylesCommentsAndHead()
    {
        var message = "Subject: Deal\n" +
                      "Content-Type: text/html; charset=\"iso-8859-1\"\n" +
                      "\n" +
                      "<HTML><HEAD><TITLE>title text</TITLE><STYLE>p { color: red }</STYLE></HEAD>\n" +
                      "<BODY><!-- hidden comment --><script type=\"text/javascript\">var x = 1;</script>\n" +
                      "<P>Save&nbsp;50%&nbsp;&amp; more</P><BR><a href=\"http://x.example/\">Click&#32;here</a>\n" +
                      "</BODY></HTML>\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: Deal\nSave 50% & more Click here"));
    }

    [Test]
    public void PlainPartHoldingAnHtmlDocumentIsReadAsHtml()
    {
        var message = "Subject: hi\n\n<html>\n<body bgcolor=\"#ffffff\"><font size=3>Free <b>money</b></font></body></html>\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: hi\nFree money"));
        // A lone angle bracket in plain text is not a tag.
        Assert.That(Convert("Subject: math\n\nif a < b and c > d then <none>\n"), Is.EqualTo("Subject: math\nif a < b and c > d then <none>"));
    }

    [Test]
    public void NestedMultipartIsSearchedDepthFirstAndAttachmentsAreSkipped()
    {
        var message = "Subject: nested\n" +
                      "Content-Type: multipart/mixed; boundary=outer\n" +
                      "\n" +
                      "--outer\n" +
                      "Content-Type: text/plain; name=\"notes.txt\"\n" +
                      "Content-Disposition: attachment; filename=\"notes.txt\"\n" +
                      "\n" +
                      "attached file text\n" +
                      "--outer\n" +
                      "Content-Type: multipart/alternative;\n\tboundary=\"inner\"\n" +
                      "\n" +
                      "--inner\n" +
                      "Content-Type: text/plain\n" +
                      "\n" +
                      "inner plain text\n" +
                      "--inner--\n" +
                      "--outer\n" +
                      "Content-Type: image/gif\n" +
                      "Content-Transfer-Encoding: base64\n" +
                      "\n" +
                      "R0lGODlhAQABAAAAACw=\n" +
                      "--outer--\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: nested\ninner plain text"));
    }

    [Test]
    public void ForwardedMessageBodyIsReached()
    {
        var message = "Subject: Fwd: story\n" +
                      "Content-Type: multipart/mixed; boundary=b\n" +
                      "\n" +
                      "--b\n" +
                      "Content-Type: message/rfc822\n" +
                      "\n" +
                      "Subject: the original\n" +
                      "Content-Type: text/plain\n" +
                      "\n" +
                      "original body\n" +
                      "--b--\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: Fwd: story\noriginal body"));
    }

    [Test]
    public void QuotedPrintableIsDecodedWithItsCharsetAndSoftLineBreaks()
    {
        var message = "Subject: qp\n" +
                      "Content-Type: text/plain; charset=iso-8859-1\n" +
                      "Content-Transfer-Encoding: quoted-printable\n" +
                      "\n" +
                      "Caf=E9 cr=E8me, a long line that was wrapp=\n" +
                      "ed here; =3D sign and =80 euro\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: qp\nCafé crème, a long line that was wrapped here; = sign and € euro"));
    }

    [Test]
    public void Base64BodyIsDecodedWithItsCharset()
    {
        var utf8Body = System.Convert.ToBase64String(Encoding.UTF8.GetBytes("Grüße aus Köln, 東京"));
        var message = "Subject: b64\n" +
                      "Content-Type: text/plain; charset=\"UTF-8\"\n" +
                      "Content-Transfer-Encoding: BASE64\n" +
                      "\n" +
                      utf8Body[..20] + "\n" + utf8Body[20..] + "\n";
        Assert.That(Convert(message), Is.EqualTo("Subject: b64\nGrüße aus Köln, 東京"));

        var gb2312 = System.Text.CodePagesEncodingProvider.Instance.GetEncoding("gb2312")!;
        var chinese = "Subject: cn\nContent-Type: text/plain; charset=gb2312\nContent-Transfer-Encoding: base64\n\n" +
                      System.Convert.ToBase64String(gb2312.GetBytes("你好，朋友")) + "\n";
        Assert.That(Convert(chinese), Is.EqualTo("Subject: cn\n你好，朋友"));
    }

    [Test]
    public void EncodedWordSubjectsAreDecoded()
    {
        var subject = "Subject: =?iso-8859-1?Q?Caf=E9_au_lait?= =?utf-8?B?" + System.Convert.ToBase64String(Encoding.UTF8.GetBytes(" für €5")) + "?= today\n\nx\n";
        Assert.That(Convert(subject), Is.EqualTo("Subject: Café au lait für €5 today\nx"));
        // Malformed encoded words stay as they are.
        Assert.That(Convert("Subject: =?bogus?X?abc?= plain\n\nx\n"), Is.EqualTo("Subject: =?bogus?X?abc?= plain\nx"));
    }

    [Test]
    public void UndeclaredEightBitTextIsUtf8WhenValidElseWindows1252()
    {
        var utf8 = Encoding.UTF8.GetBytes("Subject: caf\u00e9\n\nna\u00efve \u2014 ok\n");
        Assert.That(Convert(utf8), Is.EqualTo("Subject: café\nnaïve — ok"));
        // 0x92 is Windows-1252's right single quote; 0xA3 its pound sign. Not valid UTF-8.
        var legacy = Encoding.Latin1.GetBytes("Subject: price\n\nnow\u0092s your chance: \u00a3160,000\n");
        Assert.That(Convert(legacy), Is.EqualTo("Subject: price\nnow\u2019s your chance: \u00a3160,000"));
        // A declared us-ascii charset with 8-bit bytes is read the same way, not as '?'.
        var mislabelled = Encoding.Latin1.GetBytes("Subject: p\nContent-Type: text/plain; charset=us-ascii\n\nnow\u0092s\n");
        Assert.That(Convert(mislabelled), Is.EqualTo("Subject: p\nnow\u2019s"));
        // An unknown charset falls back too.
        var unknown = Encoding.Latin1.GetBytes("Subject: p\nContent-Type: text/plain; charset=x-no-such-charset\n\nnow\u0092s\n");
        Assert.That(Convert(unknown), Is.EqualTo("Subject: p\nnow\u2019s"));
    }

    [Test]
    public void MalformedStructureStillGivesText()
    {
        // A multipart whose boundary never appears, and one without a boundary parameter.
        Assert.That(Convert("Subject: a\nContent-Type: multipart/mixed; boundary=zzz\n\njust text\n"), Is.EqualTo("Subject: a\njust text"));
        Assert.That(Convert("Subject: a\nContent-Type: multipart/mixed\n\njust text\n"), Is.EqualTo("Subject: a\njust text"));
        // Broken base64 (a stray character, a missing pad) decodes what it can.
        var b64 = System.Convert.ToBase64String(Encoding.ASCII.GetBytes("hello world")).TrimEnd('=');
        Assert.That(Convert($"Subject: a\nContent-Transfer-Encoding: base64\n\n{b64[..4]}*{b64[4..]}\n"), Is.EqualTo("Subject: a\nhello world"));
        // Control characters become spaces.
        Assert.That(Convert("Subject: a\u0001b\n\nc\u0000d\u001be\n"), Is.EqualTo("Subject: a b\nc d e"));
    }

    [Test]
    public void DeepNestingStopsWithoutFailing()
    {
        var message = new StringBuilder("Subject: deep\n");
        for (var level = 0; level < 40; level++)
            message.Append($"Content-Type: multipart/mixed; boundary=b{level}\n\n--b{level}\n");
        message.Append("Content-Type: text/plain\n\nburied\n");
        Assert.That(Convert(message.ToString()), Is.EqualTo("Subject: deep"));
    }

    [Test]
    public void CapCutsAtTheLastSpaceAndNeverSplitsASurrogatePair()
    {
        var body = string.Join(' ', Enumerable.Range(0, 100).Select(i => $"word{i}"));
        var text = Convert($"Subject: s\n\n{body}\n", maxChars: 50);
        Assert.That(text.Length, Is.LessThanOrEqualTo(50));
        Assert.That(text, Is.EqualTo("Subject: s\nword0 word1 word2 word3 word4 word5"));
        Assert.That(body, Does.StartWith(text["Subject: s\n".Length..] + " "), "cut at a word boundary");

        // No space in the second half: a hard cut, moved back one char rather than split U+1F600.
        var emoji = string.Concat(Enumerable.Repeat("\U0001F600", 20));
        var capped = Convert(Encoding.UTF8.GetBytes($"Subject: {emoji}\n\n"), maxChars: 12);
        Assert.That(capped, Is.EqualTo("Subject:"), "the only space is at 8 of 12: inside the second half");
        var hard = EmailText.Cap("x" + emoji, 4);
        Assert.That(hard, Is.EqualTo("x\U0001F600"));
        Assert.That(EmailText.Cap("x" + emoji, 3), Is.EqualTo("x\U0001F600"));
        Assert.That(EmailText.Cap("xy" + emoji, 3), Is.EqualTo("xy"));
    }

    [Test]
    public void NonPositiveCapIsRejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => EmailText.Convert("Subject: x\n\n"u8, 0));
    }
}
