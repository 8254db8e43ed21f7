using System.Text.Json;
using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

/// <summary>A Qwen2-style byte-level BPE folder (vocab.json + merges.txt beside tokenizer.json and tokenizer_config.json):
/// the pre-tokenizer comes from tokenizer.json (Qwen2's regex splits digits one by one, GPT-2's keeps digit runs), the
/// special tokens from its added_tokens, and no BOS is added because tokenizer_config.json has "bos_token": null.</summary>
public class Qwen2TokenizerTests
{
    /// <summary>Qwen2's pre-tokenizer pattern, as its tokenizer.json has it.</summary>
    const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    static readonly Dictionary<string, int> Vocabulary = new()
    {
        ["a"] = 0, ["b"] = 1, ["c"] = 2, ["Ġ"] = 3, ["1"] = 4, ["2"] = 5, ["3"] = 6, ["12"] = 7, ["123"] = 8, ["ab"] = 9,
    };

    static string Folder(bool withTokenizerJson = true, string? preTokenizer = null)
    {
        var dir = StoriesTokenizer.NewTempFolder();
        File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(Vocabulary));
        File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n1 2\n12 3\na b\n");
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"bos_token_id": 10, "eos_token_id": 10}""");
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": null, "eos_token": "<|endoftext|>", "tokenizer_class": "Qwen2Tokenizer"}""");
        if (withTokenizerJson)
        {
            preTokenizer ??= JsonSerializer.Serialize(new Dictionary<string, object>
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new object[]
                {
                    new Dictionary<string, object> { ["type"] = "Split", ["pattern"] = new Dictionary<string, string> { ["Regex"] = Qwen2Pattern }, ["behavior"] = "Isolated", ["invert"] = false },
                    new Dictionary<string, object> { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false },
                },
            });
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"),
                $$"""{"added_tokens": [{"id": 10, "content": "<|endoftext|>", "special": true}], "pre_tokenizer": {{preTokenizer}}}""");
        }
        return dir;
    }

    [Test]
    public void DigitsSplitOneByOneAndNoBosIsAdded()
    {
        var tokenizer = TokenizerLoader.Load(Folder());
        Assert.That((tokenizer.BosId, tokenizer.EosId, tokenizer.VocabSize), Is.EqualTo((-1, 10, 11)), "no BOS although config.json names one");
        // Qwen2: "ab", " ", "1", "2", "3"; GPT-2's pattern would keep " 123" whole and merge it to Ġ + 123.
        Assert.That(tokenizer.Encode("ab 123", addBos: true), Is.EqualTo(new[] { 9, 3, 4, 5, 6 }));
        Assert.That(tokenizer.Encode("ab<|endoftext|>", addBos: false), Is.EqualTo(new[] { 9, 10 }), "the added special token is matched whole");
        Assert.That(tokenizer.Decode([9, 3, 4, 5, 6, 10]), Is.EqualTo("ab 123"));
    }

    [Test]
    public void WithoutTokenizerJsonGpt2sPatternApplies()
    {
        var dir = Folder(withTokenizerJson: false);
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"bos_token_id": 2}""");
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": true}""");
        Assert.That(TokenizerLoader.Load(dir).Encode("ab 123", addBos: true), Is.EqualTo(new[] { 2, 9, 3, 8 }), "GPT-2's pattern keeps \" 123\" whole");
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"add_bos_token": false}""");
        Assert.That(TokenizerLoader.Load(dir).Encode("ab 123", addBos: true), Is.EqualTo(new[] { 9, 3, 8 }), "add_bos_token false: no BOS");
    }

    [TestCase("""{"type": "Whitespace"}""", "Whitespace")]
    [TestCase("""{"type": "ByteLevel", "add_prefix_space": true, "use_regex": true}""", "add_prefix_space")]
    [TestCase("""{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": " "}, "behavior": "Removed", "invert": false}, {"type": "ByteLevel", "use_regex": false}]}""", "Split")]
    public void PreTokenizersThatWouldSplitDifferentlyAreRefused(string preTokenizer, string named)
    {
        var dir = Folder(preTokenizer: preTokenizer);
        var e = Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!;
        Assert.That(e.Message, Does.Contain(Path.Combine(dir, "tokenizer.json")).And.Contain(named));
    }
}
