using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

public class SentencePieceBpeTests
{
    static SentencePieceBpeTokenizer Engine => StoriesTokenizer.Engine;

    static ReferenceSentencePieceBpe Reference => StoriesTokenizer.Reference;

    public static readonly string[] Cases =
    {
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine.",
        "Hmmm", "Hmmmmmmm...", "!!!!!", "--------", "================", "aaaaaaaaaaaaaaaaa",
        new string(' ', 16), new string(' ', 17), " ", "  ", "a", " a", "  leading", "trailing   ", "multiple     inner  spaces",
        "line one\nline two\n\nline four", "\n", "\r\n", "tab\tseparated\tvalues\t", "a;\r\nb",
        "emoji 😀 and 👍🏽 and 🇫🇷", "control \u0001\u0002\u007f chars", "\0",
        "中文测试，你好世界", "Русский текст, привет мир", "النص العربي مرحبا", "हिन्दी पाठ नमस्ते", "日本語のテキスト",
        "mixed: café naïve Zürich — “quotes” ‘single’ … ½ € ™", "\u2581already escaped",
    };

    [TestCaseSource(nameof(Cases))]
    public void EncodesLikeTheReference(string text)
    {
        foreach (bool bos in new[] { false, true })
            Assert.That(Engine.Encode(text, bos), Is.EqualTo(Reference.Encode(text, bos)), Pieces(text));
    }

    [Test]
    public void EmptyTextIsBosOnlyWhenAsked()
    {
        Assert.That(Engine.Encode("", addBos: true), Is.EqualTo(new[] { 1 }));
        Assert.That(Engine.Encode("", addBos: false), Is.Empty);
        Assert.That(Reference.Encode("", true), Is.EqualTo(new[] { 1 }));
    }

    [Test]
    public void OnceUponATimeHasLlama2cIds()
    {
        // The claim [1, 9038, 2501, 263, 931] is checked against the reference before the engine.
        int[] expected = { 1, 9038, 2501, 263, 931 };
        Assert.That(Reference.Encode("Once upon a time", true), Is.EqualTo(expected));
        Assert.That(Engine.Encode("Once upon a time", true), Is.EqualTo(expected));
        Assert.That(expected.Skip(1).Select(Engine.IdToPiece), Is.EqualTo(new[] { "▁Once", "▁upon", "▁a", "▁time" }));
    }

    [Test]
    public void RepeatedCharactersMergeLeftmostFirst()
    {
        // Sixteen spaces: every "▁▁…" piece has score -1e9, so only the tie rule decides.
        var ids = Engine.Encode(new string(' ', 16), false);
        Assert.That(ids, Is.EqualTo(Reference.Encode(new string(' ', 16), false)));
        Assert.That(string.Concat(ids.Select(Engine.IdToPiece)), Is.EqualTo(new string('▁', 17)));
        TestContext.Out.WriteLine($"16 spaces -> {Pieces(new string(' ', 16))}; Hmmm -> {Pieces("Hmmm")}; !!!!! -> {Pieces("!!!!!")}");
    }

    [Test]
    public void ByteFallbackForCharactersOutsideTheVocabulary()
    {
        // '\n' is not a normal piece in Llama's vocabulary: it must come out as <0x0A> (id 13);
        // 😀 (F0 9F 98 80) as four byte pieces.
        Assert.That(Engine.Encode("\n", false), Is.EqualTo(new[] { 29871, 13 }));
        var emoji = Engine.Encode("😀", false).Select(Engine.IdToPiece).ToArray();
        Assert.That(emoji, Is.EqualTo(new[] { "▁", "<0xF0>", "<0x9F>", "<0x98>", "<0x80>" }));
    }

    [Test]
    public void RoundTripsTheCases()
    {
        foreach (var text in Cases.Where(t => !t.Contains('\u2581')))
            foreach (bool bos in new[] { false, true })
                Assert.That(Engine.Decode(Engine.Encode(text, bos)), Is.EqualTo(text), Pieces(text));
    }

    [Test]
    public void DecodesLikeSentencePiece()
    {
        // Only the dummy-prefix space of the first piece goes; EOS vanishes; broken UTF-8 bytes become U+FFFD one by one.
        Assert.That(Engine.Decode(new[] { 1, 9038, 2501, 2 }), Is.EqualTo("Once upon"));
        Assert.That(Engine.Decode(new[] { 29871, 9038 }), Is.EqualTo(" Once"));
        Assert.That(Engine.Decode(new[] { 3 + 0xE2, 3 + 0x82, 3 + 0x41 }), Is.EqualTo("\uFFFD\uFFFDA"));
        Assert.That(Engine.Decode(new[] { 3 + 0xE2, 3 + 0x82, 3 + 0xAC }), Is.EqualTo("€"));
        Assert.That(Engine.Decode(Array.Empty<int>()), Is.EqualTo(""));
        Assert.Throws<ArgumentOutOfRangeException>(() => Engine.Decode(new[] { 32000 }));
    }

    [Test]
    public void RandomStringsMatchTheReference()
    {
        // Mixed alphabet weighted towards spaces and repeats so that tied merges are common.
        string[] alphabet =
        {
            " ", " ", " ", " ", "e", "e", "t", "a", "o", "n", "H", "m", "m", "!", "-", "-", "=", ".", ",", "'", "\"",
            "0", "1", "9", "\n", "\t", "\r", "\u0001", "\u00a0", "é", "ü", "ß", "ж", "П", "и", "中", "文", "の",
            "ع", "ب", "ह", "ि", "😀", "👍", "🏽", "\u2581", "€", "…",
        };
        var random = new Random(20240611);
        var stopwatch = Stopwatch.StartNew();
        int compared = 0, roundTripped = 0;
        for (int n = 0; n < 3000; n++)
        {
            var sb = new StringBuilder();
            int length = random.Next(0, 48);
            for (int i = 0; i < length; i++)
            {
                var piece = alphabet[random.Next(alphabet.Length)];
                int repeat = random.Next(8) == 0 ? random.Next(2, 9) : 1;
                for (int r = 0; r < repeat; r++) sb.Append(piece);
            }
            var text = sb.ToString();
            bool bos = (n & 1) == 0;
            var ids = Engine.Encode(text, bos);
            Assert.That(ids, Is.EqualTo(Reference.Encode(text, bos)), $"string #{n}: {JsonSerializer.Serialize(text)}");
            compared++;
            if (!text.Contains('\u2581'))
            {
                Assert.That(Engine.Decode(ids), Is.EqualTo(text), $"round trip of string #{n}: {JsonSerializer.Serialize(text)}");
                roundTripped++;
            }
        }
        TestContext.Out.WriteLine($"{compared}/{compared} random strings equal to the reference, {roundTripped} round-tripped, {stopwatch.ElapsedMilliseconds} ms");
    }

    [Test]
    public void LongReviewsEncodeFastAndLikeTheReference()
    {
        var reviews = ReadReviews(200);
        foreach (var review in reviews) Engine.Encode(review, true); // warm-up: the first pass is mostly JIT
        var stopwatch = Stopwatch.StartNew();
        long tokens = 0, chars = 0;
        foreach (var review in reviews)
        {
            tokens += Engine.Encode(review, true).Count;
            chars += review.Length;
        }
        var elapsed = stopwatch.Elapsed;
        TestContext.Out.WriteLine($"{reviews.Count} reviews, {chars} chars -> {tokens} tokens in {elapsed.TotalMilliseconds:F0} ms ({chars / 1e6 / elapsed.TotalSeconds:F2} M chars/s)");

        // The O(n²) reference on the three longest of them.
        foreach (var review in reviews.OrderByDescending(r => r.Length).Take(3))
        {
            Assert.That(Engine.Encode(review, true), Is.EqualTo(Reference.Encode(review, true)));
            Assert.That(Engine.Decode(Engine.Encode(review, true)), Is.EqualTo(review));
        }
    }

    [Test]
    public void LibraryAgreesOnOrdinaryTextAndDiffersOnTiedRuns()
    {
        // Measures what Microsoft.ML.Tokenizers' own SentencePiece BPE does with the same tokenizer.model;
        // the differences are why the engine has its own merge loop.
        var library = Engine.Library!;
        Assert.That(library.Vocabulary.Count, Is.EqualTo(32000));
        for (int id = 0; id < Engine.VocabSize; id++)
            Assert.That(library.Vocabulary.TryGetValue(Engine.IdToPiece(id), out int libraryId) && libraryId == id, $"piece {id} '{Engine.IdToPiece(id)}'");
        const string prose = "Once upon a time, there was a little girl named Lily.";
        Assert.That(library.EncodeToIds(prose, addBeginningOfSentence: true, addEndOfSentence: false), Is.EqualTo(Engine.Encode(prose, true)));

        var differing = new List<string>();
        foreach (var text in Cases.Append(""))
        {
            var libraryIds = library.EncodeToIds(text, addBeginningOfSentence: true, addEndOfSentence: false);
            if (!libraryIds.SequenceEqual(Engine.Encode(text, true)))
                differing.Add($"{JsonSerializer.Serialize(text)}: library [{string.Join(",", libraryIds)}] vs [{string.Join(",", Engine.Encode(text, true))}]");
        }
        int decodeDiffers = Cases.Count(t => library.Decode(Engine.Encode(t, true), considerSpecialTokens: false) != Engine.Decode(Engine.Encode(t, true)));
        TestContext.Out.WriteLine($"library encode differs on {differing.Count}/{Cases.Length + 1} cases:\n  " + string.Join("\n  ", differing));
        TestContext.Out.WriteLine($"library decode differs on {decodeDiffers}/{Cases.Length} cases");
        // Sequences where SentencePiece's decoding rules matter (an <unk>, a byte run before the first
        // word, a broken UTF-8 sequence); printed, not asserted, as they describe the library.
        foreach (var ids in new[] { new[] { 0, 9038 }, new[] { 13, 9038 }, new[] { 3 + 0xE2, 3 + 0x82, 3 + 0x41 } })
            TestContext.Out.WriteLine($"decode [{string.Join(",", ids)}]: library {JsonSerializer.Serialize(library.Decode(ids, considerSpecialTokens: false))}, engine {JsonSerializer.Serialize(Engine.Decode(ids))}");
    }

    static string Pieces(string text) => string.Join("|", Engine.Encode(text, false).Select(Engine.IdToPiece));

    internal static List<string> ReadReviews(int count)
    {
        using var stream = File.OpenRead(TestAssets.ImdbReviewsJson);
        return JsonSerializer.DeserializeAsyncEnumerable<Review>(stream).ToBlockingEnumerable().Take(count).Select(r => r!.T).ToList();
    }

    sealed record Review(string T, int S)
    {
        [System.Text.Json.Serialization.JsonPropertyName("t")] public string T { get; init; } = T;
        [System.Text.Json.Serialization.JsonPropertyName("s")] public int S { get; init; } = S;
    }
}
