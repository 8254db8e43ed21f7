using System.Net;
using System.Text;
using System.Text.RegularExpressions;

namespace PromptEngine.Data;

/// <summary>
/// Turns a raw RFC 822 / MIME e-mail (its bytes, as stored in the SpamAssassin corpus) into the short
/// text a classifier row holds:
/// <code>Subject: SUBJECT\nBODY</code>
/// <list type="bullet">
/// <item><b>Subject</b>: the first Subject header, unfolded, RFC 2047 encoded words (<c>=?charset?B|Q?…?=</c>)
/// decoded, whitespace collapsed; empty when there is none. No other header is kept: routing headers
/// (Received, mailing-list names, addresses) say more about how the corpus was collected than about the
/// message.</item>
/// <item><b>Body</b>: the first <c>text/plain</c> part, depth-first through <c>multipart/*</c> and
/// <c>message/rfc822</c>, that is not an attachment and not empty; failing that, the first <c>text/html</c>
/// part. A message without a Content-Type is text/plain. A text/plain part that holds an HTML document
/// (it contains <c>&lt;html</c> or <c>&lt;body</c>, as much old spam does) is read as HTML.</item>
/// <item><b>Decoding</b>: the transfer encoding (base64, quoted-printable; anything else as is), then the
/// declared charset (any .NET encoding or Windows code page). With no charset, us-ascii, or one .NET does
/// not know, the bytes are read as UTF-8 when they are valid UTF-8 and as Windows-1252 otherwise;
/// ISO-8859-1 is read as Windows-1252, as browsers do.</item>
/// <item><b>HTML</b>: comments, <c>head</c>, <c>script</c> and <c>style</c> elements (when closed) are dropped,
/// every other tag becomes a space, entities are decoded.</item>
/// <item><b>Whitespace</b>: control characters become spaces, every run of whitespace (line breaks and
/// no-break spaces included) becomes one space, and the ends are trimmed.</item>
/// <item><b>Length</b>: the whole text is cut to at most <c>maxChars</c> UTF-16 characters, at the last
/// space before the cap when one lies in its second half, never inside a surrogate pair.</item>
/// </list>
/// The conversion is a pure function of the bytes and the cap: no culture, clock or platform setting
/// enters it. Malformed input (a missing boundary, broken base64, an unknown charset) never throws; it
/// gives whatever text can be recovered.
/// </summary>
public static partial class EmailText
{
    /// <summary>Nested multiparts deeper than this are not searched; real mail nests two or three levels.</summary>
    const int MaxDepth = 8;

    static readonly Encoding Windows1252 = System.Text.CodePagesEncodingProvider.Instance.GetEncoding(1252)!;
    static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>The row text of the message <paramref name="message"/> (its raw bytes), at most
    /// <paramref name="maxChars"/> characters.</summary>
    public static string Convert(ReadOnlySpan<byte> message, int maxChars)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxChars);
        // Latin-1 maps each byte to the char of the same value, so the MIME structure (ASCII) can be
        // parsed as a string while every body byte survives until its charset is known.
        var bytes = Encoding.Latin1.GetString(message).Replace("\r\n", "\n");
        var root = Entity.Parse(bytes);
        var subject = CollapseWhitespace(DecodeHeader(root.Header("subject") ?? ""));
        var body = CollapseWhitespace(BodyText(root));
        return Cap($"Subject: {subject}\n{body}".TrimEnd(), maxChars);
    }

    /// <summary>One MIME entity: its unfolded headers and its body, both as byte strings (one char per byte).</summary>
    sealed class Entity
    {
        readonly List<(string Name, string Value)> headers;

        Entity(List<(string Name, string Value)> headers, string body)
        {
            this.headers = headers;
            Body = body;
        }

        public string Body { get; }

        public string? Header(string name) =>
            headers.FirstOrDefault(h => string.Equals(h.Name, name, StringComparison.OrdinalIgnoreCase)).Value;

        /// <summary>Splits at the first blank line. Lines before it that are neither "Name: value" nor a
        /// continuation (mbox's "From " envelope line) are skipped.</summary>
        public static Entity Parse(string text)
        {
            var headers = new List<(string Name, string Value)>();
            var end = text.StartsWith('\n') ? 0 : text.IndexOf("\n\n", StringComparison.Ordinal);
            var headerBlock = end < 0 ? text : text[..end];
            var body = end < 0 ? "" : text[(end + (end == 0 ? 1 : 2))..];
            foreach (var line in headerBlock.Split('\n'))
            {
                if (line.Length > 0 && (line[0] == ' ' || line[0] == '\t'))
                {
                    if (headers.Count > 0) headers[^1] = (headers[^1].Name, headers[^1].Value + " " + line.Trim());
                    continue;
                }
                var colon = line.IndexOf(':');
                if (colon <= 0 || line[..colon].Any(c => c <= ' ' || c > '~')) continue;
                headers.Add((line[..colon], line[(colon + 1)..].Trim()));
            }
            return new Entity(headers, body);
        }

        /// <summary>The lower-case media type ("text/plain" when absent) and its parameters.</summary>
        public (string MediaType, Dictionary<string, string> Parameters) ContentType()
        {
            var parameters = new Dictionary<string, string>(StringComparer.OrdinalIgnoreCase);
            var value = Header("content-type");
            if (value is null) return ("text/plain", parameters);
            var parts = SplitParameters(value);
            var mediaType = parts[0].Trim().ToLowerInvariant();
            foreach (var part in parts.Skip(1))
            {
                var eq = part.IndexOf('=');
                if (eq <= 0) continue;
                var name = part[..eq].Trim();
                var v = part[(eq + 1)..].Trim();
                if (v.Length >= 2 && v[0] == '"' && v[^1] == '"') v = v[1..^1];
                parameters.TryAdd(name, v);
            }
            return (mediaType.Contains('/') ? mediaType : "text/plain", parameters);
        }

        /// <summary>Splits on semicolons outside double quotes.</summary>
        static List<string> SplitParameters(string value)
        {
            var parts = new List<string>();
            var start = 0;
            var quoted = false;
            for (var i = 0; i < value.Length; i++)
            {
                if (value[i] == '"') quoted = !quoted;
                else if (value[i] == ';' && !quoted)
                {
                    parts.Add(value[start..i]);
                    start = i + 1;
                }
            }
            parts.Add(value[start..]);
            return parts;
        }

        public bool IsAttachment => Header("content-disposition")?.TrimStart().StartsWith("attachment", StringComparison.OrdinalIgnoreCase) == true;
    }

    /// <summary>The chosen part's text (see the class comment), HTML already stripped.</summary>
    static string BodyText(Entity root)
    {
        var leaves = new List<(Entity Entity, bool Html)>();
        CollectTextParts(root, 0, leaves);
        string? html = null;
        foreach (var (entity, declaredHtml) in leaves)
        {
            var text = DecodeBody(entity);
            var isHtml = declaredHtml || LooksLikeHtml().IsMatch(text);
            if (isHtml) text = StripHtml(text);
            if (string.IsNullOrWhiteSpace(text)) continue;
            if (!isHtml) return text;
            html ??= text;
        }
        return html ?? "";
    }

    static void CollectTextParts(Entity entity, int depth, List<(Entity, bool Html)> leaves)
    {
        var (mediaType, parameters) = entity.ContentType();
        if (mediaType.StartsWith("multipart/", StringComparison.Ordinal))
        {
            if (depth >= MaxDepth) return;
            if (parameters.TryGetValue("boundary", out var boundary) && boundary.Length > 0)
            {
                var parts = SplitMultipart(entity.Body, boundary);
                if (parts is not null)
                {
                    foreach (var part in parts) CollectTextParts(Entity.Parse(part), depth + 1, leaves);
                    return;
                }
            }
            // A multipart without a usable boundary: its body is the only text there is.
            leaves.Add((entity, false));
            return;
        }
        if (mediaType == "message/rfc822")
        {
            if (depth < MaxDepth) CollectTextParts(Entity.Parse(entity.Body), depth + 1, leaves);
            return;
        }
        if (entity.IsAttachment) return;
        if (mediaType == "text/plain") leaves.Add((entity, false));
        else if (mediaType == "text/html") leaves.Add((entity, true));
    }

    /// <summary>The parts between "--boundary" delimiter lines (up to "--boundary--"), or null when the
    /// body has no delimiter line.</summary>
    static List<string>? SplitMultipart(string body, string boundary)
    {
        var delimiter = "--" + boundary;
        var parts = new List<string>();
        StringBuilder? current = null;
        var found = false;
        foreach (var line in body.Split('\n'))
        {
            if (line.StartsWith(delimiter, StringComparison.Ordinal))
            {
                var rest = line[delimiter.Length..].TrimEnd();
                if (rest.Length == 0 || rest == "--")
                {
                    found = true;
                    if (current is not null) parts.Add(current.ToString());
                    if (rest == "--") return parts;
                    current = new StringBuilder();
                    continue;
                }
            }
            current?.Append(line).Append('\n');
        }
        if (current is not null) parts.Add(current.ToString());
        return found ? parts : null;
    }

    /// <summary>The body of a leaf part, transfer-decoded then charset-decoded.</summary>
    static string DecodeBody(Entity entity)
    {
        var encoding = entity.Header("content-transfer-encoding")?.Trim().ToLowerInvariant() ?? "";
        var raw = encoding switch
        {
            "base64" => DecodeBase64(entity.Body),
            "quoted-printable" => DecodeQuotedPrintable(entity.Body, underscoreIsSpace: false),
            _ => Encoding.Latin1.GetBytes(entity.Body),
        };
        entity.ContentType().Parameters.TryGetValue("charset", out var charset);
        return DecodeCharset(raw, charset);
    }

    /// <summary>Base64 with everything outside the alphabet ignored and a trailing partial quantum dropped.</summary>
    internal static byte[] DecodeBase64(string text)
    {
        var clean = new StringBuilder(text.Length);
        foreach (var c in text)
        {
            if (c is (>= 'A' and <= 'Z') or (>= 'a' and <= 'z') or (>= '0' and <= '9') or '+' or '/') clean.Append(c);
            else if (c == '=') break;
        }
        // Pad a 2- or 3-char tail (its '=' may have been lost); a 1-char tail carries no whole byte.
        var tail = clean.Length % 4;
        if (tail == 1) clean.Length--;
        else if (tail > 1) clean.Append('=', 4 - tail);
        return System.Convert.TryFromBase64String(clean.ToString(), new byte[clean.Length], out _)
            ? System.Convert.FromBase64String(clean.ToString())
            : [];
    }

    /// <summary>Quoted-printable: "=XX" is a byte, "=" at a line end joins lines, anything else is literal.
    /// In RFC 2047's Q encoding "_" is a space.</summary>
    internal static byte[] DecodeQuotedPrintable(string text, bool underscoreIsSpace)
    {
        var bytes = new List<byte>(text.Length);
        for (var i = 0; i < text.Length; i++)
        {
            var c = text[i];
            if (c == '=')
            {
                if (i + 2 < text.Length && Uri.IsHexDigit(text[i + 1]) && Uri.IsHexDigit(text[i + 2]))
                {
                    bytes.Add((byte)((Uri.FromHex(text[i + 1]) << 4) | Uri.FromHex(text[i + 2])));
                    i += 2;
                    continue;
                }
                // A soft line break, possibly with trailing spaces before the newline.
                var j = i + 1;
                while (j < text.Length && text[j] is ' ' or '\t') j++;
                if (j < text.Length && text[j] == '\n')
                {
                    i = j;
                    continue;
                }
                if (j == text.Length)
                {
                    i = j;
                    continue;
                }
            }
            bytes.Add(underscoreIsSpace && c == '_' ? (byte)' ' : (byte)c);
        }
        return bytes.ToArray();
    }

    /// <summary>Decodes <paramref name="bytes"/> as <paramref name="charset"/> (see the class comment for
    /// the fallback).</summary>
    internal static string DecodeCharset(byte[] bytes, string? charset)
    {
        var name = charset?.Trim().Trim('"').ToLowerInvariant() ?? "";
        if (name is "" or "us-ascii" or "ascii" or "utf-8" or "utf8") return DecodeUndeclared(bytes);
        if (name is "iso-8859-1" or "latin1" or "iso8859-1" or "iso_8859-1") return Windows1252.GetString(bytes);
        var encoding = FindEncoding(name);
        return encoding is null ? DecodeUndeclared(bytes) : encoding.GetString(bytes);
    }

    static Encoding? FindEncoding(string name)
    {
        try
        {
            return Encoding.GetEncoding(name);
        }
        catch (Exception e) when (e is ArgumentException or NotSupportedException)
        {
            // Not built in; the code-page provider knows the legacy charsets (windows-125x, gb2312, koi8-r, …).
            return System.Text.CodePagesEncodingProvider.Instance.GetEncoding(name);
        }
    }

    static string DecodeUndeclared(byte[] bytes)
    {
        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return Windows1252.GetString(bytes);
        }
    }

    /// <summary>A header value: RFC 2047 encoded words decoded by their charset (whitespace between two of
    /// them dropped), the rest read as undeclared bytes.</summary>
    internal static string DecodeHeader(string value)
    {
        var result = new StringBuilder();
        var position = 0;
        var previousWasEncoded = false;
        foreach (Match word in EncodedWord().Matches(value))
        {
            var between = value[position..word.Index];
            if (!(previousWasEncoded && string.IsNullOrWhiteSpace(between)))
                result.Append(DecodeUndeclared(Encoding.Latin1.GetBytes(between)));
            var payload = word.Groups["text"].Value;
            var bytes = word.Groups["encoding"].Value is "B" or "b" ? DecodeBase64(payload) : DecodeQuotedPrintable(payload, underscoreIsSpace: true);
            result.Append(DecodeCharset(bytes, word.Groups["charset"].Value));
            position = word.Index + word.Length;
            previousWasEncoded = true;
        }
        result.Append(DecodeUndeclared(Encoding.Latin1.GetBytes(value[position..])));
        return result.ToString();
    }

    /// <summary>HTML to text: comments, head, script and style dropped, tags to spaces, entities decoded.</summary>
    internal static string StripHtml(string html)
    {
        var text = HtmlDropped().Replace(html, " ");
        text = HtmlTag().Replace(text, " ");
        return WebUtility.HtmlDecode(text);
    }

    /// <summary>Control characters to spaces, whitespace runs to one space, ends trimmed.</summary>
    internal static string CollapseWhitespace(string text)
    {
        var chars = text.Select(c => char.IsControl(c) ? ' ' : c).ToArray();
        return Whitespace().Replace(new string(chars), " ").Trim();
    }

    /// <summary>At most <paramref name="maxChars"/> characters, cut at a space in the second half when there is one.</summary>
    internal static string Cap(string text, int maxChars)
    {
        if (text.Length <= maxChars) return text;
        var cut = maxChars;
        var space = text.LastIndexOf(' ', maxChars);
        if (space >= maxChars / 2) cut = space;
        else if (char.IsHighSurrogate(text[cut - 1])) cut--;
        return text[..cut].TrimEnd();
    }

    [GeneratedRegex(@"=\?(?<charset>[^?\s]+)\?(?<encoding>[BbQq])\?(?<text>[^?\s]*)\?=", RegexOptions.CultureInvariant)]
    private static partial Regex EncodedWord();

    [GeneratedRegex(@"<!--.*?-->|<head\b.*?</head\s*>|<script\b.*?</script\s*>|<style\b.*?</style\s*>", RegexOptions.IgnoreCase | RegexOptions.Singleline | RegexOptions.CultureInvariant)]
    private static partial Regex HtmlDropped();

    [GeneratedRegex(@"</?[A-Za-z!?][^>]*>", RegexOptions.CultureInvariant)]
    private static partial Regex HtmlTag();

    [GeneratedRegex(@"<html\b|<body\b", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex LooksLikeHtml();

    [GeneratedRegex(@"\s+", RegexOptions.CultureInvariant)]
    private static partial Regex Whitespace();
}
