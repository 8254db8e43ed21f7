using System.Diagnostics;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.Prompts;

/// <summary>Prompt initialisation: seeded determinism, shapes, the random spread against the table's
/// own statistics, and the table rows of sampled and text tokens against the real stories15M.</summary>
public class PromptInitTests
{
    [Test]
    public void RandomIsDeterministicPerSeedAndShaped()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 1));
        var init = new PromptInit(model);
        foreach (var n in new[] { 1, 7, 300 })
        {
            var a = init.Random(n, seed: 42);
            var b = new PromptInit(model).Random(n, seed: 42);
            var c = init.Random(n, seed: 43);
            Assert.That((a.VirtualTokens, a.Width, a.Values.Length), Is.EqualTo((n, 16, n * 16)));
            Assert.That(b.Values, Is.EqualTo(a.Values), "same seed, same values");
            Assert.That(c.Values, Is.Not.EqualTo(a.Values), "another seed, other values");
        }
        // The generator is SplitMix64 (fixed forever, unlike System.Random's seeding): its published first
        // outputs for seed 0 are 0xE220A8397B1DCDAF and 0x6E789E6AA1B965F4.
        var zero = init.Random(1, seed: 0);
        foreach (var (index, output) in new[] { (0, 0xE220A8397B1DCDAFUL), (1, 0x6E789E6AA1B965F4UL) })
        {
            double unit = (output >> 11) * (1.0 / (1UL << 53));
            Assert.That(zero.Values[index], Is.EqualTo((float)(init.Spread * (2 * unit - 1))), $"value {index}");
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => init.Random(0, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => init.Random(PromptInit.MaxVirtualTokens + 1, 1));
    }

    [Test]
    public void RandomValuesSpanTheTablesSpreadWithTheTablesStd()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var table = PromptTestModels.EmbeddingTable(model);
        double mean = table.Average(v => (double)v);
        double std = Math.Sqrt(table.Sum(v => (v - mean) * (v - mean)) / table.Length);
        var init = new PromptInit(model);
        Assert.That(init.EmbeddingStd, Is.EqualTo(std).Within(1e-9 * std), "std over all V·C values");
        Assert.That(init.EmbeddingMaxAbs, Is.EqualTo(table.Max(v => Math.Abs(v))));
        Assert.That(init.Spread, Is.EqualTo(Math.Sqrt(3) * std).Within(1e-12));

        var prompt = init.Random(200, seed: 5);
        var values = prompt.Values;
        Assert.That(values.All(v => Math.Abs(v) <= init.Spread), "inside ±spread");
        Assert.That(values.Max(), Is.GreaterThan(0.99 * init.Spread), "reaches the upper edge");
        Assert.That(values.Min(), Is.LessThan(-0.99 * init.Spread), "reaches the lower edge");
        double promptMean = values.Average(v => (double)v);
        double promptStd = Math.Sqrt(values.Sum(v => (v - promptMean) * (v - promptMean)) / values.Length);
        // 57,600 uniform values: the sample std is within ~0.5 % of the distribution's (= the table's).
        Assert.That(promptStd, Is.EqualTo(std).Within(0.02 * std));
        Assert.That(Math.Abs(promptMean), Is.LessThan(0.02 * std));
        TestContext.Out.WriteLine($"table std {std:G6}, spread {init.Spread:G6}, max |x| {init.EmbeddingMaxAbs:G6}; prompt std {promptStd:G6}");

        Assert.That(prompt.Meta(PromptMetadata.InitMethod), Is.EqualTo("random"));
        Assert.That(prompt.Meta(PromptMetadata.InitSeed), Is.EqualTo("5"));
        Assert.That(double.Parse(prompt.Meta(PromptMetadata.InitSpread)!, System.Globalization.CultureInfo.InvariantCulture), Is.EqualTo(init.Spread));
        Assert.That(prompt.Meta(PromptMetadata.BaseModelFingerprint), Is.EqualTo(ModelFingerprint.Compute(model)));
        Assert.That(prompt.Meta(PromptMetadata.BaseModelWidth), Is.EqualTo("288"));
        Assert.That(prompt.Meta(PromptMetadata.NumLayers), Is.EqualTo("6"));
        Assert.That(prompt.Meta(PromptMetadata.VirtualTokens), Is.EqualTo("200"));
    }

    [Test]
    public void SampledVocabularyCopiesDistinctOrdinaryTableRows()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var table = PromptTestModels.EmbeddingTable(model);
        int C = model.Config.HiddenSize;
        var init = new PromptInit(model);
        var clock = Stopwatch.StartNew();
        var a = init.SampledVocabulary(64, seed: 11);
        TestContext.Out.WriteLine($"first sample (ordinary-token scan included) {clock.ElapsedMilliseconds} ms; {init.OrdinaryTokenIds.Count} ordinary tokens of {model.Config.VocabSize}");
        var b = new PromptInit(model).SampledVocabulary(64, seed: 11);
        var c = init.SampledVocabulary(64, seed: 12);

        var ids = Ids(a);
        Assert.That(ids, Has.Length.EqualTo(64));
        Assert.That(ids, Is.Unique, "drawn without replacement");
        Assert.That(ids.All(id => id >= PromptInit.SentencePieceReservedIds && id < model.Config.VocabSize), "no <unk>, <s>, </s> or byte piece");
        Assert.That(b.Values, Is.EqualTo(a.Values));
        Assert.That(Ids(c), Is.Not.EqualTo(ids));
        for (var i = 0; i < ids.Length; i++)
            Assert.That(a.Row(i).ToArray(), Is.EqualTo(table.AsSpan(ids[i] * C, C).ToArray()), $"row {i} is the table row of token {ids[i]}");
        Assert.That(a.Meta(PromptMetadata.InitMethod), Is.EqualTo("sample_vocab"));
        Assert.That(a.Meta(PromptMetadata.InitSeed), Is.EqualTo("11"));

        // The candidate set: ordinary words in, control and byte pieces out.
        var ordinary = init.OrdinaryTokenIds.ToHashSet();
        var sentencePiece = (PromptEngine.Tokenization.SentencePieceBpeTokenizer)model.Tokenizer;
        Assert.That(Enumerable.Range(0, PromptInit.SentencePieceReservedIds).Any(ordinary.Contains), Is.False);
        Assert.That(ordinary.Any(id => sentencePiece.IdToPiece(id).StartsWith("<0x")), Is.False);
        // (The encoder's dummy prefix makes each word "▁word"; a leading space would add a lone "▁", which decodes to nothing.)
        foreach (var word in new[] { "Once", "girl", "happy", "upon" })
            Assert.That(model.Tokenizer.Encode(word, addBos: false).All(ordinary.Contains), $"'{word}' is made of ordinary tokens");
        Assert.That(ordinary.Count, Is.GreaterThan(31000).And.LessThan(32000 - 258));
    }

    [Test]
    public void FromTextTilesOrTruncatesTheTextsTableRows()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var table = PromptTestModels.EmbeddingTable(model);
        int C = model.Config.HiddenSize;
        var init = new PromptInit(model);
        const string text = "Once upon a time";
        var tokens = model.Tokenizer.Encode(text, addBos: false);
        Assert.That(tokens, Has.Count.GreaterThanOrEqualTo(4), "the tokenizer splits the text into several tokens");
        Assert.That(tokens, Has.No.Member(1), "no BOS");

        var tiled = init.FromText(text, 2 * tokens.Count + 1);
        for (var i = 0; i < tiled.VirtualTokens; i++)
            Assert.That(tiled.Row(i).ToArray(), Is.EqualTo(table.AsSpan(tokens[i % tokens.Count] * C, C).ToArray()), $"tiled row {i}");

        var cut = init.FromText(text, tokens.Count - 1);
        Assert.That(cut.VirtualTokens, Is.EqualTo(tokens.Count - 1));
        for (var i = 0; i < cut.VirtualTokens; i++)
            Assert.That(cut.Row(i).ToArray(), Is.EqualTo(table.AsSpan(tokens[i] * C, C).ToArray()), $"truncated row {i}");

        var exact = init.FromText(text, tokens.Count);
        Assert.That(Ids(exact), Is.EqualTo(tokens.ToArray()));
        Assert.That(exact.Meta(PromptMetadata.InitMethod), Is.EqualTo("text"));
        Assert.That(exact.Meta(PromptMetadata.InitText), Is.EqualTo(text));

        Assert.Throws<ArgumentException>(() => init.FromText("", 4));
        Assert.Throws<ArgumentOutOfRangeException>(() => init.FromText(text, 0));
    }

    [Test]
    public void Gpt2SampledVocabularySkipsEndOfTextAndPartialUtf8Bytes()
    {
        // A tiny GPT-2 with the real 50,257-token vocabulary, so that the tokenizer's ids all have rows.
        var folder = PromptTestModels.Tiny(seed: 8, configJson: Reference.ModelReferenceTinyModels.Gpt2Config(hidden: 8, heads: 2, layers: 1, vocab: 50257, positions: 16));
        File.Copy(TestAssets.Gpt2EncoderJson, Path.Combine(folder, "vocab.json"));
        File.Copy(TestAssets.Gpt2VocabBpe, Path.Combine(folder, "merges.txt"));
        using var model = ModelFolder.Open(folder);
        var init = new PromptInit(model);
        var ordinary = init.OrdinaryTokenIds.ToHashSet();
        var eos = model.Tokenizer.EosId;
        Assert.That(eos, Is.EqualTo(50256));
        Assert.That(ordinary, Does.Not.Contain(eos), "<|endoftext|>");
        var highByte = model.Tokenizer.Encode("é", addBos: false);
        Assert.That(highByte, Has.Count.EqualTo(1));
        var lone = Enumerable.Range(0, 50257).First(id => model.Tokenizer.Decode([id]) == "\uFFFD");
        Assert.That(ordinary, Does.Not.Contain(lone), $"token {lone} is half of a UTF-8 sequence");
        Assert.That(ordinary, Does.Contain(highByte[0]), "a whole character is ordinary");
        foreach (var id in model.Tokenizer.Encode("Hello world! The cat sat.", addBos: false))
            Assert.That(ordinary, Does.Contain(id));

        var table = PromptTestModels.EmbeddingTable(model);
        var prompt = init.SampledVocabulary(20, seed: 1);
        var ids = Ids(prompt);
        Assert.That(ids, Is.Unique);
        for (var i = 0; i < ids.Length; i++)
            Assert.That(prompt.Row(i).ToArray(), Is.EqualTo(table.AsSpan(ids[i] * 8, 8).ToArray()));
    }

    [Test]
    public void FromFileCopiesAPromptOfTheSameWidthAndRefusesAnother()
    {
        var folder = PromptTestModels.TempFolder();
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 2));
        using var wide = ModelFolder.Open(PromptTestModels.Tiny(seed: 2, hidden: 24));
        var init = new PromptInit(model);
        var original = init.Random(5, seed: 9);
        var path = Path.Combine(folder, "p.safetensors");
        PromptFile.Save(path, original, model);

        var copy = init.FromFile(path);
        Assert.That(copy.Values, Is.EqualTo(original.Values));
        Assert.That(copy.Meta(PromptMetadata.InitMethod), Is.EqualTo("file"));
        Assert.That(copy.Meta(PromptMetadata.InitSource), Is.EqualTo(Path.GetFileName(path)), "the file's name; a prompt carries no path of this machine");

        var widePath = Path.Combine(folder, "wide.safetensors");
        PromptFile.Save(widePath, new PromptInit(wide).Random(5, 1), wide);
        var e = Assert.Throws<PromptCompatibilityException>(() => init.FromFile(widePath));
        Assert.That(e!.Message, Does.Contain(widePath).And.Contain("24").And.Contain("16"));

        var adapter = Path.Combine(folder, "adapter");
        PeftAdapter.Save(adapter, original, model);
        Assert.That(init.FromFile(adapter).Values, Is.EqualTo(original.Values), "a PEFT adapter folder works too");
    }

    static int[] Ids(SoftPrompt prompt) => prompt.Meta(PromptMetadata.InitTokenIds)!.Split(',').Select(int.Parse).ToArray();
}
