using System.Globalization;
using PromptEngine.Models;
using PromptEngine.Tokenization;

namespace PromptEngine.Prompts;

/// <summary>How a prompt's first values were chosen (PEFT's <c>prompt_tuning_init</c>, plus "file").</summary>
public enum PromptInitMethod
{
    /// <summary>Uniform noise on the embedding table's scale (PEFT "RANDOM").</summary>
    Random,
    /// <summary>Rows of the embedding table of distinct ordinary tokens (PEFT "SAMPLE_VOCAB").</summary>
    SampleVocab,
    /// <summary>Rows of the embedding table of a text's tokens (PEFT "TEXT").</summary>
    Text,
    /// <summary>Copied from an existing prompt file or PEFT adapter.</summary>
    File,
}

/// <summary>Initial values for n virtual tokens of one model. Every result is a <see cref="SoftPrompt"/>
/// of the model's width whose metadata describes the model (<see cref="PromptMetadata.ForModel"/>) and
/// the initialisation (<see cref="PromptMetadata.InitMethod"/> and its parameters). The seeded methods
/// use their own SplitMix64 generator, so a seed gives the same prompt on every machine and .NET version.</summary>
public sealed class PromptInit
{
    /// <summary>Most virtual tokens one prompt may have; far above any useful prompt, low enough to catch a typo.</summary>
    public const int MaxVirtualTokens = 4096;

    /// <summary>SentencePiece models (Llama-2 layout) keep &lt;unk&gt;, &lt;s&gt;, &lt;/s&gt; and the 256 byte
    /// pieces in ids 0..258; <see cref="SampledVocabulary"/> never draws them.</summary>
    public const int SentencePieceReservedIds = 259;

    readonly EmbeddingTable table;
    readonly Lazy<(double Mean, double Std, double MaxAbs)> statistics;
    readonly Lazy<Dictionary<string, string>> modelMetadata;
    readonly Lazy<int[]> ordinaryTokens;

    /// <summary>Prepares initialisation for <paramref name="model"/>; nothing is read until a method needs it.</summary>
    public PromptInit(ModelFolder model)
    {
        Model = model ?? throw new ArgumentNullException(nameof(model));
        table = new EmbeddingTable(model);
        statistics = new(() =>
        {
            var s = table.Statistics();
            if (!double.IsFinite(s.Std))
                throw new PromptEngineException($"{model.Path}: the embedding table '{table.TensorName}' holds non-finite values");
            return s;
        });
        modelMetadata = new(() => PromptMetadata.ForModel(model));
        ordinaryTokens = new(FindOrdinaryTokens);
    }

    /// <summary>The model the prompts are made for.</summary>
    public ModelFolder Model { get; }

    /// <summary>Population standard deviation of all values of the token embedding table (V·C values).</summary>
    public double EmbeddingStd => statistics.Value.Std;

    /// <summary>Largest |value| in the token embedding table.</summary>
    public double EmbeddingMaxAbs => statistics.Value.MaxAbs;

    /// <summary>Half-width of <see cref="Random"/>'s uniform distribution: √3 · <see cref="EmbeddingStd"/>, so
    /// that the random prompt's values have the table's standard deviation and its rows the typical norm
    /// of a real token's embedding (PEFT's RANDOM draws N(0, 1), which for most models is far off-scale).</summary>
    public double Spread => Math.Sqrt(3) * EmbeddingStd;

    /// <summary>n rows of values uniform in [−<see cref="Spread"/>, +<see cref="Spread"/>), deterministic for a seed.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is outside 1..<see cref="MaxVirtualTokens"/>.</exception>
    public SoftPrompt Random(int n, int seed)
    {
        CheckCount(n);
        int C = table.Width;
        var spread = Spread;
        var rng = new SplitMix64(seed);
        var values = new float[n * C];
        for (var i = 0; i < values.Length; i++) values[i] = (float)(spread * (2 * rng.NextDouble() - 1));
        return Made(values, n, PromptInitMethod.Random, new()
        {
            [PromptMetadata.InitSeed] = seed.ToString(CultureInfo.InvariantCulture),
            [PromptMetadata.InitSpread] = spread.ToString("R", CultureInfo.InvariantCulture),
        });
    }

    /// <summary>The embedding rows of n distinct tokens drawn (without replacement, deterministic for a seed)
    /// from <see cref="OrdinaryTokenIds"/>. The ids drawn are recorded in the metadata.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is outside 1..<see cref="MaxVirtualTokens"/> or above the number of ordinary tokens.</exception>
    /// <exception cref="TokenizerException">The model folder has no usable tokenizer.</exception>
    public SoftPrompt SampledVocabulary(int n, int seed)
    {
        CheckCount(n);
        var candidates = (int[])ordinaryTokens.Value.Clone();
        if (n > candidates.Length)
            throw new ArgumentOutOfRangeException(nameof(n), n, $"{Model.Path}: only {candidates.Length} ordinary tokens to draw {n} distinct ones from");
        var rng = new SplitMix64(seed);
        // A partial Fisher–Yates shuffle: the first n entries become a uniform sample without replacement.
        for (var i = 0; i < n; i++)
        {
            int j = i + rng.NextBelow(candidates.Length - i);
            (candidates[i], candidates[j]) = (candidates[j], candidates[i]);
        }
        var ids = candidates[..n];
        return Made(TableRows(ids), n, PromptInitMethod.SampleVocab, new()
        {
            [PromptMetadata.InitSeed] = seed.ToString(CultureInfo.InvariantCulture),
            [PromptMetadata.InitTokenIds] = string.Join(",", ids),
        });
    }

    /// <summary>The embedding rows of <paramref name="text"/>'s tokens (encoded without BOS), repeated from
    /// the first token when the text is shorter than n and cut after n tokens when longer (PEFT's TEXT rule).</summary>
    /// <exception cref="ArgumentException">The text is empty or gives no tokens.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="n"/> is outside 1..<see cref="MaxVirtualTokens"/>.</exception>
    /// <exception cref="TokenizerException">The model folder has no usable tokenizer.</exception>
    public SoftPrompt FromText(string text, int n)
    {
        ArgumentNullException.ThrowIfNull(text);
        CheckCount(n);
        var tokens = Model.Tokenizer.Encode(text, addBos: false);
        if (tokens.Count == 0) throw new ArgumentException($"the init text \"{text}\" gives no tokens", nameof(text));
        var ids = new int[n];
        for (var i = 0; i < n; i++)
        {
            ids[i] = tokens[i % tokens.Count];
            if ((uint)ids[i] >= (uint)table.Rows)
                throw new PromptEngineException($"{Model.Path}: the tokenizer gives id {ids[i]} for the init text, outside the embedding table's {table.Rows} rows");
        }
        return Made(TableRows(ids), n, PromptInitMethod.Text, new()
        {
            [PromptMetadata.InitText] = text,
            [PromptMetadata.InitTokenIds] = string.Join(",", ids),
        });
    }

    /// <summary>A copy of an existing prompt: a prompt file, or a PEFT adapter folder (one holding
    /// adapter_config.json). Its width must be the model's; unless <paramref name="allowModelMismatch"/>,
    /// a prompt fingerprinted for another model is refused (see <see cref="PromptCompatibility.Check(SoftPrompt, ModelFolder, bool)"/>).</summary>
    /// <exception cref="PromptFormatException">The file or adapter is unreadable.</exception>
    /// <exception cref="PromptCompatibilityException">Another width, or another model without the override.</exception>
    public SoftPrompt FromFile(string path, bool allowModelMismatch = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        var source = Directory.Exists(path) && File.Exists(Path.Combine(path, PeftAdapter.ConfigFileName))
            ? PeftAdapter.Load(path)
            : PromptFile.Load(path);
        PromptCompatibility.Check(source, Model, allowModelMismatch);
        var extra = new Dictionary<string, string> { [PromptMetadata.InitSource] = Path.GetFileName(Path.TrimEndingDirectorySeparator(Path.GetFullPath(path))) };
        return Made((float[])source.Values.Clone(), source.VirtualTokens, PromptInitMethod.File, extra);
    }

    /// <summary>Token ids <see cref="SampledVocabulary"/> draws from: ids below both the tokenizer's and the
    /// table's size, except BOS and EOS; for SentencePiece also ids 0..258 (<see cref="SentencePieceReservedIds"/>)
    /// and every piece written "&lt;…&gt;" (control, unknown and byte pieces); for every tokenizer also tokens
    /// that decode alone to nothing (control tokens, SentencePiece's lone "▁") or to U+FFFD (a partial UTF-8
    /// byte sequence, e.g. GPT-2's byte tokens above 0x7F).</summary>
    public IReadOnlyList<int> OrdinaryTokenIds => ordinaryTokens.Value;

    int[] FindOrdinaryTokens()
    {
        var tokenizer = Model.Tokenizer;
        int limit = Math.Min(tokenizer.VocabSize, table.Rows);
        var sentencePiece = tokenizer as SentencePieceBpeTokenizer;
        var ids = new List<int>(limit);
        for (var id = 0; id < limit; id++)
        {
            if (id == tokenizer.BosId || id == tokenizer.EosId) continue;
            if (sentencePiece is not null)
            {
                if (id < SentencePieceReservedIds) continue;
                var piece = sentencePiece.IdToPiece(id);
                if (piece.Length >= 3 && piece[0] == '<' && piece[^1] == '>') continue;
            }
            var surface = tokenizer.Decode([id]);
            if (surface.Length == 0 || surface.Contains('\uFFFD')) continue;
            ids.Add(id);
        }
        return ids.ToArray();
    }

    float[] TableRows(int[] ids)
    {
        int C = table.Width;
        var values = new float[ids.Length * C];
        for (var i = 0; i < ids.Length; i++) table.ReadRows(ids[i], values.AsSpan(i * C, C));
        return values;
    }

    SoftPrompt Made(float[] values, int n, PromptInitMethod method, Dictionary<string, string> extra)
    {
        var metadata = new Dictionary<string, string>(modelMetadata.Value, StringComparer.Ordinal)
        {
            [PromptMetadata.VirtualTokens] = n.ToString(CultureInfo.InvariantCulture),
            [PromptMetadata.InitMethod] = MethodName(method),
        };
        foreach (var (key, value) in extra) metadata[key] = value;
        var prompt = new SoftPrompt(values, n, table.Width, metadata);
        prompt.Validate();
        return prompt;
    }

    /// <summary>The metadata spelling of a method: "random", "sample_vocab", "text", "file".</summary>
    public static string MethodName(PromptInitMethod method) => method switch
    {
        PromptInitMethod.Random => "random",
        PromptInitMethod.SampleVocab => "sample_vocab",
        PromptInitMethod.Text => "text",
        PromptInitMethod.File => "file",
        _ => throw new ArgumentOutOfRangeException(nameof(method), method, null),
    };

    /// <summary>Parses a metadata spelling (case-insensitive; PEFT's upper-case names and the CLI's "vocab" accepted too).</summary>
    public static bool TryParseMethod(string? name, out PromptInitMethod method)
    {
        switch (name?.ToLowerInvariant())
        {
            case "random": method = PromptInitMethod.Random; return true;
            case "sample_vocab" or "vocab": method = PromptInitMethod.SampleVocab; return true;
            case "text": method = PromptInitMethod.Text; return true;
            case "file": method = PromptInitMethod.File; return true;
            default: method = default; return false;
        }
    }

    static void CheckCount(int n)
    {
        if (n is < 1 or > MaxVirtualTokens)
            throw new ArgumentOutOfRangeException(nameof(n), n, $"the number of virtual tokens must be 1..{MaxVirtualTokens}");
    }

    /// <summary>Steele, Lea and Flood's SplitMix64: tiny, fast, and fixed forever, unlike System.Random's seeding.</summary>
    struct SplitMix64(long seed)
    {
        ulong state = unchecked((ulong)seed);

        public ulong Next()
        {
            ulong z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return z ^ (z >> 31);
        }

        /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
        public double NextDouble() => (Next() >> 11) * (1.0 / (1UL << 53));

        /// <summary>Uniform in [0, bound) by rejection, without modulo bias.</summary>
        public int NextBelow(int bound)
        {
            ulong limit = ulong.MaxValue - ulong.MaxValue % (ulong)bound;
            ulong x;
            do x = Next(); while (x >= limit);
            return (int)(x % (ulong)bound);
        }
    }
}
