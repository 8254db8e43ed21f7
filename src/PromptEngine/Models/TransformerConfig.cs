using System.Text.Json;

namespace PromptEngine.Models;

/// <summary>The two model families the engine computes. Llama covers Llama, Mistral and Qwen2
/// (RMSNorm, RoPE, SwiGLU, grouped-query attention); Gpt2 covers GPT-2 (LayerNorm, learned
/// positions, GELU-tanh, fused QKV stored as Conv1D).</summary>
public enum ModelFamily
{
    /// <summary>Llama, Mistral and Qwen2: RMSNorm, rotary positions, SwiGLU, grouped-query attention.</summary>
    Llama,
    /// <summary>GPT-2: LayerNorm, learned positions, GELU (tanh), fused q/k/v stored as Conv1D.</summary>
    Gpt2,
}

/// <summary>A model's shape and numerics, read from a Hugging Face <c>config.json</c> and
/// normalised across families so that the engine never looks at family-specific field names.</summary>
public sealed record TransformerConfig
{
    /// <summary>The <c>architectures[0]</c> entry, e.g. <c>LlamaForCausalLM</c>.</summary>
    public required string Architecture { get; init; }
    /// <summary>Which family of kernels computes it.</summary>
    public required ModelFamily Family { get; init; }
    /// <summary>Model width C (<c>hidden_size</c> / <c>n_embd</c>).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>MLP width (<c>intermediate_size</c> / <c>n_inner</c>, 4·C by default for GPT-2).</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>Number of blocks (<c>num_hidden_layers</c> / <c>n_layer</c>).</summary>
    public required int NumLayers { get; init; }
    /// <summary>Query heads (<c>num_attention_heads</c> / <c>n_head</c>).</summary>
    public required int NumHeads { get; init; }
    /// <summary>Key/value heads; fewer than <see cref="NumHeads"/> means grouped-query attention.</summary>
    public required int NumKvHeads { get; init; }
    /// <summary>Per-head width (<c>head_dim</c>, else C / heads).</summary>
    public required int HeadDim { get; init; }
    /// <summary>Rows of the token embedding table.</summary>
    public required int VocabSize { get; init; }
    /// <summary>Longest sequence the model was trained for (<c>max_position_embeddings</c> / <c>n_positions</c>).</summary>
    public required int MaxPositions { get; init; }
    /// <summary>Epsilon of RMSNorm (Llama) or LayerNorm (GPT-2).</summary>
    public required double NormEps { get; init; }
    /// <summary>RoPE base; 0 for models with learned positions.</summary>
    public required double RopeTheta { get; init; }
    /// <summary>Whether the LM head reuses the token embedding table.</summary>
    public required bool TieWordEmbeddings { get; init; }
    /// <summary>Whether q/k/v projections carry biases (Qwen2, or Llama's <c>attention_bias</c>; always for GPT-2).</summary>
    public required bool QkvBias { get; init; }
    /// <summary>Whether the attention output projection carries a bias (Llama's <c>attention_bias</c>, which transformers
    /// applies to q, k, v and o; always for GPT-2; never for Qwen2, whose bias is q/k/v only).</summary>
    public bool OutputBias { get; init; }
    /// <summary>The sliding attention window (Mistral's <c>sliding_window</c>; Qwen2's with <c>use_sliding_window</c>), when
    /// one applies. The engine computes full causal attention, which is the windowed model's function exactly as long as
    /// no sequence is longer than the window, so <see cref="ContextLength"/> stops there.</summary>
    public int? SlidingWindow { get; init; }
    /// <summary>The longest sequence (deep-prompt prefix included) the engine computes exactly: <see cref="MaxPositions"/>,
    /// or the sliding window when it is shorter.</summary>
    public int ContextLength => SlidingWindow is { } window && window < MaxPositions ? window : MaxPositions;
    /// <summary>Beginning-of-sequence token id, when the config names one.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>End-of-sequence token id, when the config names one.</summary>
    public int? EosTokenId { get; init; }

    /// <summary>Number of query heads that share one key/value head.</summary>
    public int QueriesPerKvHead => NumHeads / NumKvHeads;

    /// <summary>Architectures this engine computes, by family.</summary>
    public static readonly IReadOnlyDictionary<string, ModelFamily> SupportedArchitectures = new Dictionary<string, ModelFamily>
    {
        ["LlamaForCausalLM"] = ModelFamily.Llama,
        ["MistralForCausalLM"] = ModelFamily.Llama,
        ["Qwen2ForCausalLM"] = ModelFamily.Llama,
        ["GPT2LMHeadModel"] = ModelFamily.Gpt2,
    };

    /// <summary>Reads and checks <c>config.json</c>.</summary>
    /// <exception cref="ModelConfigException">The file is missing, not JSON, names an unsupported
    /// architecture, or has a missing, mistyped or inconsistent field (named in the message).</exception>
    public static TransformerConfig Load(string configPath)
    {
        string text;
        try { text = File.ReadAllText(configPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new ModelConfigException(configPath, null, $"cannot read: {e.Message}", e);
        }
        return Parse(text, configPath);
    }

    /// <summary>Parses the text of a <c>config.json</c>; <paramref name="sourceName"/> names it in errors.</summary>
    public static TransformerConfig Parse(string json, string sourceName)
    {
        JsonDocument document;
        try { document = JsonDocument.Parse(json, new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new ModelConfigException(sourceName, null, $"not valid JSON: {e.Message}", e); }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new ModelConfigException(sourceName, null, "the top level is not a JSON object");
            var fields = new ConfigFields(root, sourceName);
            var architecture = fields.Architecture();
            ConfigFieldRules.Check(root, architecture, sourceName);
            var config = SupportedArchitectures[architecture] == ModelFamily.Gpt2
                ? ParseGpt2(fields, architecture)
                : ParseLlama(fields, architecture);
            config.CheckConsistency(sourceName);
            return config;
        }
    }

    static TransformerConfig ParseLlama(ConfigFields f, string architecture)
    {
        var hidden = f.Int("hidden_size");
        var heads = f.Int("num_attention_heads");
        return new TransformerConfig
        {
            Architecture = architecture,
            Family = ModelFamily.Llama,
            HiddenSize = hidden,
            IntermediateSize = f.Int("intermediate_size"),
            NumLayers = f.Int("num_hidden_layers"),
            NumHeads = heads,
            NumKvHeads = f.OptionalInt("num_key_value_heads") ?? heads,
            HeadDim = f.OptionalInt("head_dim") ?? (heads > 0 && hidden % heads == 0 ? hidden / heads
                : throw new ModelConfigException(f.Source, "hidden_size", $"hidden_size {hidden} is not divisible by num_attention_heads {heads} and no head_dim is given")),
            VocabSize = f.Int("vocab_size"),
            MaxPositions = f.OptionalInt("max_position_embeddings") ?? 2048,
            // Defaults are those of the Hugging Face config classes.
            NormEps = f.OptionalDouble("rms_norm_eps") ?? 1e-6,
            RopeTheta = RopeThetaOf(f),
            TieWordEmbeddings = f.OptionalBool("tie_word_embeddings") ?? false,
            // attention_bias exists only in LlamaConfig (MistralConfig and Qwen2Config ignore the key).
            QkvBias = architecture == "Qwen2ForCausalLM" || (architecture == "LlamaForCausalLM" && (f.OptionalBool("attention_bias") ?? false)),
            OutputBias = architecture == "LlamaForCausalLM" && (f.OptionalBool("attention_bias") ?? false),
            SlidingWindow = SlidingWindowOf(f, architecture),
            BosTokenId = f.OptionalInt("bos_token_id"),
            EosTokenId = f.OptionalInt("eos_token_id"),
        }.WithActivation(f, "hidden_act", "silu");
    }

    static TransformerConfig ParseGpt2(ConfigFields f, string architecture)
    {
        var hidden = f.Int("n_embd");
        var heads = f.Int("n_head");
        return new TransformerConfig
        {
            Architecture = architecture,
            Family = ModelFamily.Gpt2,
            HiddenSize = hidden,
            IntermediateSize = f.OptionalInt("n_inner") ?? 4 * hidden,
            NumLayers = f.Int("n_layer"),
            NumHeads = heads,
            NumKvHeads = heads,
            HeadDim = heads > 0 && hidden % heads == 0 ? hidden / heads
                : throw new ModelConfigException(f.Source, "n_embd", $"n_embd {hidden} is not divisible by n_head {heads}"),
            VocabSize = f.OptionalInt("vocab_size") ?? 50257,
            MaxPositions = f.OptionalInt("n_positions") ?? f.OptionalInt("n_ctx") ?? 1024,
            NormEps = f.OptionalDouble("layer_norm_epsilon") ?? 1e-5,
            RopeTheta = 0,
            TieWordEmbeddings = f.OptionalBool("tie_word_embeddings") ?? true,
            QkvBias = true,
            OutputBias = true,
            BosTokenId = f.OptionalInt("bos_token_id"),
            EosTokenId = f.OptionalInt("eos_token_id"),
        }.WithActivation(f, "activation_function", "gelu_new");
    }

    /// <summary>The RoPE base: <c>rope_theta</c>, or <c>rope_parameters.rope_theta</c> as transformers 5 writes it (default
    /// 10000). Only plain RoPE (<c>rope_type</c> "default") is computed; scaled variants are refused by <see cref="ConfigFieldRules"/>.</summary>
    static double RopeThetaOf(ConfigFields f)
    {
        if (f.Raw("rope_parameters") is { ValueKind: JsonValueKind.Object } parameters
            && parameters.TryGetProperty("rope_theta", out var theta) && theta.ValueKind != JsonValueKind.Null)
        {
            if (theta.ValueKind != JsonValueKind.Number || !theta.TryGetDouble(out var value) || !double.IsFinite(value))
                throw new ModelConfigException(f.Source, "rope_parameters", $"rope_theta must be a number, found {theta.GetRawText()}");
            if (f.OptionalDouble("rope_theta") is { } top && top != value)
                throw new ModelConfigException(f.Source, "rope_parameters", $"rope_theta {value} disagrees with the top-level rope_theta {top}");
            return value;
        }
        return f.OptionalDouble("rope_theta") ?? 10000.0;
    }

    /// <summary>Mistral: <c>sliding_window</c> when set (MistralConfig's default 4096 applies only when the key is absent).
    /// Qwen2: the window applies only with <c>use_sliding_window</c> true (default false), as Qwen2Config does.</summary>
    static int? SlidingWindowOf(ConfigFields f, string architecture)
    {
        int? window = architecture switch
        {
            "MistralForCausalLM" => f.Raw("sliding_window") is null ? 4096 : f.OptionalInt("sliding_window"),
            "Qwen2ForCausalLM" => f.OptionalBool("use_sliding_window") == true ? f.OptionalInt("sliding_window") ?? 4096 : null,
            _ => null,
        };
        if (window is <= 0) throw new ModelConfigException(f.Source, "sliding_window", $"must be positive, found {window}");
        return window;
    }

    TransformerConfig WithActivation(ConfigFields f, string field, string expected)
    {
        var value = f.OptionalString(field) ?? expected;
        // GPT-2's "gelu_new" and "gelu_pytorch_tanh" are the same tanh approximation; Llama's "silu" drives SwiGLU.
        var accepted = expected == "silu" ? new[] { "silu", "swish" } : new[] { "gelu_new", "gelu_pytorch_tanh" };
        if (!accepted.Contains(value))
            throw new ModelConfigException(f.Source, field, $"activation '{value}' is not supported for {Architecture} (expected {string.Join(" or ", accepted)})");
        return this;
    }

    void CheckConsistency(string source)
    {
        void Positive(int value, string field)
        {
            if (value <= 0) throw new ModelConfigException(source, field, $"must be positive, found {value}");
        }
        var (hidden, layers, heads, vocab, inner, positions) = Family == ModelFamily.Gpt2
            ? ("n_embd", "n_layer", "n_head", "vocab_size", "n_inner", "n_positions")
            : ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size", "max_position_embeddings");
        Positive(HiddenSize, hidden);
        Positive(NumLayers, layers);
        Positive(NumHeads, heads);
        Positive(VocabSize, vocab);
        Positive(IntermediateSize, inner);
        Positive(MaxPositions, positions);
        Positive(HeadDim, "head_dim");
        Positive(NumKvHeads, "num_key_value_heads");
        if (NumHeads % NumKvHeads != 0)
            throw new ModelConfigException(source, "num_key_value_heads", $"{NumKvHeads} does not divide num_attention_heads {NumHeads}");
        if (Family == ModelFamily.Llama && HeadDim % 2 != 0)
            throw new ModelConfigException(source, "head_dim", $"RoPE needs an even head dimension, found {HeadDim}");
        if (!(NormEps > 0) || double.IsInfinity(NormEps))
            throw new ModelConfigException(source, Family == ModelFamily.Gpt2 ? "layer_norm_epsilon" : "rms_norm_eps", $"must be a positive number, found {NormEps}");
        if (Family == ModelFamily.Llama && !(RopeTheta > 0))
            throw new ModelConfigException(source, "rope_theta", $"must be positive, found {RopeTheta}");
        if (BosTokenId is { } bos && (bos < 0 || bos >= VocabSize))
            throw new ModelConfigException(source, "bos_token_id", $"{bos} is outside the vocabulary of {VocabSize}");
        if (EosTokenId is { } eos && (eos < 0 || eos >= VocabSize))
            throw new ModelConfigException(source, "eos_token_id", $"{eos} is outside the vocabulary of {VocabSize}");
    }

    /// <summary>Typed access to config fields with errors that name the file and field.</summary>
    sealed class ConfigFields(JsonElement root, string source)
    {
        public string Source => source;

        public JsonElement? Raw(string name) => root.TryGetProperty(name, out var v) ? v : null;

        public string Architecture()
        {
            if (Raw("architectures") is not { ValueKind: JsonValueKind.Array } list || list.GetArrayLength() == 0)
            {
                // Older GPT-2 folders carry only model_type.
                if (OptionalString("model_type") == "gpt2") return "GPT2LMHeadModel";
                throw new ModelConfigException(source, "architectures", "missing or empty; expected one of " + string.Join(", ", SupportedArchitectures.Keys));
            }
            var first = list[0];
            if (first.ValueKind != JsonValueKind.String)
                throw new ModelConfigException(source, "architectures", "the first entry is not a string");
            var name = first.GetString()!;
            if (!SupportedArchitectures.ContainsKey(name))
                throw new ModelConfigException(source, "architectures", $"'{name}' is not supported; supported: {string.Join(", ", SupportedArchitectures.Keys)}");
            return name;
        }

        public int Int(string name) => OptionalInt(name) ?? throw new ModelConfigException(source, name, "required field is missing");

        public int? OptionalInt(string name)
        {
            if (Raw(name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i)) return i;
            // Some configs store integral values as 4096.0.
            if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && d == Math.Floor(d) && Math.Abs(d) <= int.MaxValue) return (int)d;
            throw new ModelConfigException(source, name, $"expected an integer, found {Describe(v)}");
        }

        public double? OptionalDouble(string name)
        {
            if (Raw(name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
            if (v.ValueKind == JsonValueKind.Number && v.TryGetDouble(out var d) && double.IsFinite(d)) return d;
            throw new ModelConfigException(source, name, $"expected a number, found {Describe(v)}");
        }

        public bool? OptionalBool(string name)
        {
            if (Raw(name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind switch
            {
                JsonValueKind.True => true,
                JsonValueKind.False => false,
                _ => throw new ModelConfigException(source, name, $"expected true or false, found {Describe(v)}"),
            };
        }

        public string? OptionalString(string name)
        {
            if (Raw(name) is not { } v || v.ValueKind == JsonValueKind.Null) return null;
            return v.ValueKind == JsonValueKind.String ? v.GetString()
                : throw new ModelConfigException(source, name, $"expected a string, found {Describe(v)}");
        }

        static string Describe(JsonElement v)
        {
            var raw = v.GetRawText();
            return raw.Length > 40 ? raw[..40] + "..." : raw;
        }
    }
}

/// <summary>A <c>config.json</c> that cannot be used; names the file and the field.</summary>
public sealed class ModelConfigException(string filePath, string? field, string problem, Exception? inner = null)
    : PromptEngineException($"{filePath}: " + (field is null ? problem : $"field '{field}': {problem}"), inner)
{
    /// <summary>The config file (or source name) at fault.</summary>
    public string FilePath { get; } = filePath;
    /// <summary>The field at fault, when one is.</summary>
    public string? Field { get; } = field;
}
