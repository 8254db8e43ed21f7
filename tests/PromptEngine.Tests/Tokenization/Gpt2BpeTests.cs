using System.Text;
using System.Text.Json;
using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

public class Gpt2BpeTests
{
    static readonly Lazy<Gpt2BpeTokenizer> engine = new(() => Gpt2BpeTokenizer.Load(TestAssets.Gpt2EncoderJson, TestAssets.Gpt2VocabBpe));
    static readonly Lazy<ReferenceGpt2Bpe> reference = new(() => new ReferenceGpt2Bpe(TestAssets.Gpt2EncoderJson, TestAssets.Gpt2VocabBpe));

    static Gpt2BpeTokenizer Engine => engine.Value;

    [Test]
    public void KnownIds()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Engine.Encode("Hello world", false), Is.EqualTo(new[] { 15496, 995 }));
            Assert.That(Engine.Encode(" Hello", false), Is.EqualTo(new[] { 18435 }));
            Assert.That(Engine.Encode("Hello world", true), Is.EqualTo(new[] { 50256, 15496, 995 }));
            Assert.That(Engine.Encode("", true), Is.EqualTo(new[] { 50256 }));
            Assert.That(Engine.Encode("", false), Is.Empty);
            Assert.That((Engine.BosId, Engine.EosId, Engine.VocabSize), Is.EqualTo((50256, 50256, 50257)));
        });
    }

    [TestCase("Once upon a time, there was a little girl named Lily.")]
    [TestCase("it's   three  spaces\n\nand newlines\t\ttabs ")]
    [TestCase("a<|endoftext|>b")]
    [TestCase("emoji 😀 👍🏽 café Zürich 中文 Русский")]
    [TestCase("Hmmm!!!!! -------- 12345 3.14")]
    public void MatchesTheReferenceAndRoundTrips(string text)
    {
        Assert.That(Engine.Encode(text, false), Is.EqualTo(reference.Value.Encode(text)));
        // "<|endoftext|>" is special, so it decodes to nothing.
        Assert.That(Engine.Decode(Engine.Encode(text, true)), Is.EqualTo(text.Replace("<|endoftext|>", "")));
    }

    [Test]
    public void RandomStringsMatchTheReference()
    {
        string[] alphabet = { " ", " ", " ", "e", "t", "a", "H", "m", "'", "s", "!", "-", "1", "2", ".", "\n", "\t", "é", "ж", "中", "😀", "'ll", "\u00a0" };
        var random = new Random(7);
        for (int n = 0; n < 1000; n++)
        {
            var sb = new StringBuilder();
            int length = random.Next(0, 32);
            for (int i = 0; i < length; i++) sb.Append(alphabet[random.Next(alphabet.Length)]);
            var text = sb.ToString();
            var ids = Engine.Encode(text, false);
            Assert.That(ids, Is.EqualTo(reference.Value.Encode(text)), JsonSerializer.Serialize(text));
            Assert.That(Engine.Decode(ids), Is.EqualTo(text), JsonSerializer.Serialize(text));
        }
    }

    [Test]
    public void MissingOrBrokenFilesAreReported()
    {
        var dir = StoriesTokenizer.NewTempFolder();
        var missing = Path.Combine(dir, "vocab.json");
        Assert.That(Assert.Throws<TokenizerException>(() => Gpt2BpeTokenizer.Load(missing, TestAssets.Gpt2VocabBpe))!.Message, Does.Contain(missing));
        File.WriteAllText(missing, "[1, 2");
        Assert.That(Assert.Throws<TokenizerException>(() => Gpt2BpeTokenizer.Load(missing, TestAssets.Gpt2VocabBpe))!.Message, Does.Contain(missing));
    }
}
