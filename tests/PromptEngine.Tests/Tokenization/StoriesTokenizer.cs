using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Tokenization;

/// <summary>stories15M's tokenizer, converted once per test run into a temporary model folder, and
/// the plain reference encoder on the same tokenizer.bin.</summary>
[SetUpFixture]
public sealed class StoriesTokenizer
{
    static readonly Lazy<string> folder = new(() =>
    {
        var dir = Path.Combine(Path.GetTempPath(), $"pe-tok-{Guid.NewGuid():N}");
        Llama2cTokenizerConverter.WriteTokenizerFiles(TestAssets.Llama2cTokenizerBin, dir);
        return dir;
    });
    static readonly Lazy<SentencePieceBpeTokenizer> engine = new(() => SentencePieceBpeTokenizer.Load(Path.Combine(folder.Value, "tokenizer.model")));
    static readonly Lazy<ReferenceSentencePieceBpe> reference = new(() => new ReferenceSentencePieceBpe(TestAssets.Llama2cTokenizerBin));

    /// <summary>Folder holding tokenizer.model, tokenizer_config.json, special_tokens_map.json.</summary>
    public static string Folder => folder.Value;

    public static SentencePieceBpeTokenizer Engine => engine.Value;

    internal static ReferenceSentencePieceBpe Reference => reference.Value;

    /// <summary>A fresh temporary folder for one test; deleted with the run's other temporaries.</summary>
    public static string NewTempFolder()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"pe-tok-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        lock (temporaries) temporaries.Add(dir);
        return dir;
    }

    static readonly List<string> temporaries = new();

    [OneTimeTearDown]
    public void DeleteTemporaries()
    {
        if (folder.IsValueCreated) temporaries.Add(folder.Value);
        foreach (var dir in temporaries)
            if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true);
    }
}
