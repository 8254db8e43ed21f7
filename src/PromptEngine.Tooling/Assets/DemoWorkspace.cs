using PromptEngine.Data;
using PromptEngine.Import;

namespace PromptEngine.Assets;

/// <summary>Where the prepared real assets live: stories15M as a Hugging Face folder, IMDB and
/// SpamAssassin as train/validation/test JSONL, GPT-2's vocabulary.</summary>
/// <param name="Stories15MFolder">HF Llama folder (config.json, model.safetensors, tokenizer.model).</param>
/// <param name="ImdbFolder">train.jsonl, validation.jsonl, test.jsonl and split.json (labels positive, negative).</param>
/// <param name="Gpt2Vocab">encoder.json (vocab.json) and vocab.bpe (merges.txt).</param>
/// <param name="SpamFolder">train.jsonl, validation.jsonl, test.jsonl and split.json (labels ham, spam).</param>
public sealed record PreparedAssets(string Stories15MFolder, string ImdbFolder, Gpt2VocabAssets Gpt2Vocab, string SpamFolder);

/// <summary>Installs the real assets through <see cref="AssetStore"/> and derives what the demo and
/// the tests use from them, once: the imported stories15M folder and the seeded IMDB and SpamAssassin splits. Each
/// derived folder is published atomically by its writer, so a folder that exists is complete.</summary>
public static class DemoWorkspace
{
    /// <summary>Bumped when the importer's or the splitter's output changes, so old derivations are not reused.</summary>
    public const string DerivationVersion = "v1";

    /// <summary>The fixed seed of the IMDB split, so every machine trains and evaluates on the same rows.</summary>
    public const int ImdbSeed = 1234;

    /// <summary>The fixed seed of the SpamAssassin split (1,000 validation and 1,000 test messages).</summary>
    public const int SpamSeed = 1234;

    /// <summary>Ensures everything is installed and derived; cheap when it already is.</summary>
    public static PreparedAssets Prepare(AssetStore store, Action<string>? log = null)
    {
        var stories = store.EnsureStories15M();
        var reviews = store.EnsureImdbReviews();
        var gpt2 = store.EnsureGpt2Vocab();
        var messages = store.EnsureSpamAssassin();

        var modelFolder = Path.Combine(store.Root, "models", $"stories15M-{DerivationVersion}");
        DeriveOnce(Path.Combine(modelFolder, "tokenizer.model"),
            () => Llama2cImporter.ImportModel(stories.ModelBin, modelFolder, overwrite: true, tokenizerBin: stories.TokenizerBin), log);

        var imdbFolder = Path.Combine(store.Root, "data", $"imdb-{DerivationVersion}-seed{ImdbSeed}");
        // split.json is written last, so its presence means the three splits are complete.
        DeriveOnce(Path.Combine(imdbFolder, "split.json"), () => ImdbPreparer.Prepare(reviews, imdbFolder, ImdbSeed), log);

        var spamFolder = Path.Combine(store.Root, "data", $"spam-assassin-{DerivationVersion}-seed{SpamSeed}");
        DeriveOnce(Path.Combine(spamFolder, "split.json"), () => SpamAssassinPreparer.Prepare(messages, spamFolder, SpamSeed), log);
        return new PreparedAssets(modelFolder, imdbFolder, gpt2, spamFolder);
    }

    // Two processes preparing at once would derive the same bytes twice and race on the rename;
    // a lock file keeps it to one, and the loser finds the work done when it gets the lock.
    static void DeriveOnce(string completionFile, Action derive, Action<string>? log)
    {
        var lockPath = Path.GetDirectoryName(completionFile) + ".lock";
        Directory.CreateDirectory(Path.GetDirectoryName(lockPath)!);
        var deadline = DateTime.UtcNow.AddMinutes(10);
        FileStream held;
        while (true)
        {
            try
            {
                held = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.DeleteOnClose);
                break;
            }
            catch (IOException) when (DateTime.UtcNow < deadline)
            {
                Thread.Sleep(200);
            }
        }
        using (held)
        {
            if (File.Exists(completionFile)) return;
            log?.Invoke($"preparing {Path.GetDirectoryName(completionFile)}");
            derive();
        }
    }
}
