using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

public class TokenizerLoaderTests
{
    static string CopyOfStoriesFolder(params string[] files)
    {
        var dir = StoriesTokenizer.NewTempFolder();
        foreach (var file in files) File.Copy(Path.Combine(StoriesTokenizer.Folder, file), Path.Combine(dir, file));
        return dir;
    }

    static string Gpt2Folder()
    {
        var dir = StoriesTokenizer.NewTempFolder();
        File.Copy(TestAssets.Gpt2EncoderJson, Path.Combine(dir, "vocab.json"));
        File.Copy(TestAssets.Gpt2VocabBpe, Path.Combine(dir, "merges.txt"));
        return dir;
    }

    [Test]
    public void TokenizerModelLoadsAsSentencePieceWithConfiguredSpecialIds()
    {
        var tokenizer = TokenizerLoader.Load(StoriesTokenizer.Folder);
        Assert.That(tokenizer, Is.InstanceOf<SentencePieceBpeTokenizer>());
        Assert.That((tokenizer.VocabSize, tokenizer.BosId, tokenizer.EosId), Is.EqualTo((32000, 1, 2)));
        Assert.That(tokenizer.Encode("Once upon a time", true), Is.EqualTo(new[] { 1, 9038, 2501, 263, 931 }));
    }

    [Test]
    public void TokenizerConfigWinsOverConfigJson()
    {
        var dir = CopyOfStoriesFolder("tokenizer.model");
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"bos_token_id": 5, "eos_token_id": [6, 2]}""");
        var fromConfig = TokenizerLoader.Load(dir);
        Assert.That((fromConfig.BosId, fromConfig.EosId), Is.EqualTo((5, 6)));

        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), """{"bos_token": {"content": "</s>", "lstrip": false}, "eos_token": null}""");
        var fromTokenizerConfig = TokenizerLoader.Load(dir);
        Assert.That((fromTokenizerConfig.BosId, fromTokenizerConfig.EosId), Is.EqualTo((2, 6)));
    }

    [Test]
    public void GenerationConfigAndModelDefaultsFillTheGaps()
    {
        var dir = CopyOfStoriesFolder("tokenizer.model");
        var bare = TokenizerLoader.Load(dir);
        Assert.That((bare.BosId, bare.EosId), Is.EqualTo((1, 2)), "ids from the tokenizer.model itself");
        File.WriteAllText(Path.Combine(dir, "generation_config.json"), """{"eos_token_id": 7}""");
        Assert.That(TokenizerLoader.Load(dir).EosId, Is.EqualTo(7));
    }

    [Test]
    public void VocabAndMergesLoadAsGpt2()
    {
        var dir = Gpt2Folder();
        var tokenizer = TokenizerLoader.Load(dir);
        Assert.That(tokenizer, Is.InstanceOf<Gpt2BpeTokenizer>());
        Assert.That((tokenizer.BosId, tokenizer.EosId), Is.EqualTo((50256, 50256)));
        Assert.That(tokenizer.Encode("Hello world", false), Is.EqualTo(new[] { 15496, 995 }));
        File.WriteAllText(Path.Combine(dir, "config.json"), """{"bos_token_id": 50256, "eos_token_id": 198}""");
        Assert.That(TokenizerLoader.Load(dir).EosId, Is.EqualTo(198));
    }

    [Test]
    public void EmptyFolderNamesWhatIsMissing()
    {
        var dir = StoriesTokenizer.NewTempFolder();
        var e = Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!;
        Assert.That(e.Message, Does.Contain(dir).And.Contain("tokenizer.model").And.Contain("vocab.json + merges.txt"));
        var absent = Path.Combine(dir, "nope");
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(absent))!.Message, Does.Contain(absent));
    }

    [Test]
    public void HalfAGpt2PairNamesTheMissingFile()
    {
        var dir = StoriesTokenizer.NewTempFolder();
        File.Copy(TestAssets.Gpt2EncoderJson, Path.Combine(dir, "vocab.json"));
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!.Message, Does.Contain("no merges.txt"));
    }

    [Test]
    public void BadConfigFilesNameFileAndField()
    {
        var dir = CopyOfStoriesFolder("tokenizer.model");
        var config = Path.Combine(dir, "tokenizer_config.json");
        File.WriteAllText(config, "{ not json");
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!.Message, Does.Contain(config));
        File.WriteAllText(config, """{"bos_token": "<nope>"}""");
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!.Message, Does.Contain(config).And.Contain("bos_token").And.Contain("<nope>"));
        File.Delete(config);
        var modelConfig = Path.Combine(dir, "config.json");
        File.WriteAllText(modelConfig, """{"eos_token_id": 99999}""");
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!.Message, Does.Contain(modelConfig).And.Contain("eos_token_id"));
        File.WriteAllText(modelConfig, """{"eos_token_id": "two"}""");
        Assert.That(Assert.Throws<TokenizerException>(() => TokenizerLoader.Load(dir))!.Message, Does.Contain(modelConfig).And.Contain("eos_token_id"));
    }
}
