using System.Text.RegularExpressions;

namespace PromptEngine.Models;

/// <summary>What a frozen weight is to the engine, independent of the family's tensor names.</summary>
public enum WeightRole
{
    /// <summary>(V, C) token embedding table.</summary>
    TokenEmbedding,
    /// <summary>(P, C) learned position table (GPT-2).</summary>
    PositionEmbedding,
    /// <summary>(C) pre-attention norm scale.</summary>
    AttentionNorm,
    /// <summary>(C) pre-attention LayerNorm shift (GPT-2).</summary>
    AttentionNormBias,
    /// <summary>(H·hs, C) query projection.</summary>
    Query,
    /// <summary>(KV·hs, C) key projection.</summary>
    Key,
    /// <summary>(KV·hs, C) value projection.</summary>
    Value,
    /// <summary>(H·hs) query bias.</summary>
    QueryBias,
    /// <summary>(KV·hs) key bias.</summary>
    KeyBias,
    /// <summary>(KV·hs) value bias.</summary>
    ValueBias,
    /// <summary>(C, 3C) as stored by GPT-2's Conv1D: fused query, key, value projection.</summary>
    QkvFused,
    /// <summary>(3C) fused q/k/v bias (GPT-2).</summary>
    QkvFusedBias,
    /// <summary>(C, H·hs) attention output projection.</summary>
    AttentionOutput,
    /// <summary>(C) attention output bias (GPT-2).</summary>
    AttentionOutputBias,
    /// <summary>(C) pre-MLP norm scale.</summary>
    MlpNorm,
    /// <summary>(C) pre-MLP LayerNorm shift (GPT-2).</summary>
    MlpNormBias,
    /// <summary>(I, C) SwiGLU gate projection (Llama).</summary>
    MlpGate,
    /// <summary>(I, C) SwiGLU up projection (Llama); GPT-2's c_fc (C, I) as stored.</summary>
    MlpUp,
    /// <summary>(I) MLP up bias (GPT-2).</summary>
    MlpUpBias,
    /// <summary>(C, I) MLP down projection (Llama); GPT-2's mlp.c_proj (I, C) as stored.</summary>
    MlpDown,
    /// <summary>(C) MLP down bias (GPT-2).</summary>
    MlpDownBias,
    /// <summary>(C) final norm scale.</summary>
    FinalNorm,
    /// <summary>(C) final LayerNorm shift (GPT-2).</summary>
    FinalNormBias,
    /// <summary>(V, C) LM head, when not tied to the embedding.</summary>
    LmHead,
}

/// <summary>One tensor a model folder must contain.</summary>
/// <param name="Name">The Hugging Face tensor name.</param>
/// <param name="Role">What it is to the engine.</param>
/// <param name="Layer">Block index, or -1 for model-level weights.</param>
/// <param name="Shape">The shape the config implies, as stored.</param>
/// <param name="ShapeFrom">The config fields the shape follows from, e.g. "(num_key_value_heads·head_dim, hidden_size)".</param>
/// <param name="StoredTransposed">True for GPT-2's Conv1D weights, stored (in, out) rather than (out, in).</param>
public sealed record ExpectedWeight(string Name, WeightRole Role, int Layer, long[] Shape, string ShapeFrom, bool StoredTransposed = false);

/// <summary>The tensors a configuration requires, by Hugging Face name, and the check of a
/// folder's tensors against them. All problems are collected and reported together.</summary>
public sealed class WeightMap
{
    readonly Dictionary<string, ExpectedWeight> byName;

    /// <summary>The configuration the map was built from.</summary>
    public TransformerConfig Config { get; }
    /// <summary>Every tensor the model needs, in the engine's order (embeddings, blocks, head).</summary>
    public IReadOnlyList<ExpectedWeight> Weights { get; }
    /// <summary>The prefix found on the folder's tensor names ("", or GPT-2's "transformer.").</summary>
    public string NamePrefix { get; }

    WeightMap(TransformerConfig config, List<ExpectedWeight> weights, string prefix)
    {
        Config = config;
        Weights = weights;
        NamePrefix = prefix;
        byName = weights.ToDictionary(w => w.Name, StringComparer.Ordinal);
    }

    /// <summary>The expected weight with this Hugging Face name, or null.</summary>
    public ExpectedWeight? Find(string name) => byName.GetValueOrDefault(name);

    /// <summary>The weight of a role in a block (or model-level with layer -1).</summary>
    public ExpectedWeight Get(WeightRole role, int layer = -1) =>
        Weights.FirstOrDefault(w => w.Role == role && w.Layer == layer)
        ?? throw new KeyNotFoundException($"{Config.Architecture} has no weight {role} in layer {layer}");

    /// <summary>Builds the map a configuration implies. <paramref name="gpt2Prefix"/> is "" or "transformer."
    /// (GPT-2 checkpoints exist with both spellings).</summary>
    public static WeightMap For(TransformerConfig config, string gpt2Prefix = "") =>
        config.Family == ModelFamily.Gpt2 ? Gpt2(config, gpt2Prefix) : Llama(config);

    static WeightMap Llama(TransformerConfig c)
    {
        long C = c.HiddenSize, I = c.IntermediateSize, V = c.VocabSize, Q = (long)c.NumHeads * c.HeadDim, KV = (long)c.NumKvHeads * c.HeadDim;
        const string qRows = "num_attention_heads·head_dim", kvRows = "num_key_value_heads·head_dim";
        var list = new List<ExpectedWeight>
        {
            new("model.embed_tokens.weight", WeightRole.TokenEmbedding, -1, [V, C], "(vocab_size, hidden_size)"),
        };
        for (var i = 0; i < c.NumLayers; i++)
        {
            var p = $"model.layers.{i}.";
            list.Add(new(p + "input_layernorm.weight", WeightRole.AttentionNorm, i, [C], "(hidden_size)"));
            list.Add(new(p + "self_attn.q_proj.weight", WeightRole.Query, i, [Q, C], $"({qRows}, hidden_size)"));
            list.Add(new(p + "self_attn.k_proj.weight", WeightRole.Key, i, [KV, C], $"({kvRows}, hidden_size)"));
            list.Add(new(p + "self_attn.v_proj.weight", WeightRole.Value, i, [KV, C], $"({kvRows}, hidden_size)"));
            if (c.QkvBias)
            {
                list.Add(new(p + "self_attn.q_proj.bias", WeightRole.QueryBias, i, [Q], $"({qRows})"));
                list.Add(new(p + "self_attn.k_proj.bias", WeightRole.KeyBias, i, [KV], $"({kvRows})"));
                list.Add(new(p + "self_attn.v_proj.bias", WeightRole.ValueBias, i, [KV], $"({kvRows})"));
            }
            list.Add(new(p + "self_attn.o_proj.weight", WeightRole.AttentionOutput, i, [C, Q], $"(hidden_size, {qRows})"));
            if (c.OutputBias) list.Add(new(p + "self_attn.o_proj.bias", WeightRole.AttentionOutputBias, i, [C], "(hidden_size)"));
            list.Add(new(p + "post_attention_layernorm.weight", WeightRole.MlpNorm, i, [C], "(hidden_size)"));
            list.Add(new(p + "mlp.gate_proj.weight", WeightRole.MlpGate, i, [I, C], "(intermediate_size, hidden_size)"));
            list.Add(new(p + "mlp.up_proj.weight", WeightRole.MlpUp, i, [I, C], "(intermediate_size, hidden_size)"));
            list.Add(new(p + "mlp.down_proj.weight", WeightRole.MlpDown, i, [C, I], "(hidden_size, intermediate_size)"));
        }
        list.Add(new("model.norm.weight", WeightRole.FinalNorm, -1, [C], "(hidden_size)"));
        if (!c.TieWordEmbeddings) list.Add(new("lm_head.weight", WeightRole.LmHead, -1, [V, C], "(vocab_size, hidden_size)"));
        return new WeightMap(c, list, "");
    }

    static WeightMap Gpt2(TransformerConfig c, string prefix)
    {
        long C = c.HiddenSize, I = c.IntermediateSize, V = c.VocabSize, P = c.MaxPositions;
        var list = new List<ExpectedWeight>
        {
            new(prefix + "wte.weight", WeightRole.TokenEmbedding, -1, [V, C], "(vocab_size, n_embd)"),
            new(prefix + "wpe.weight", WeightRole.PositionEmbedding, -1, [P, C], "(n_positions, n_embd)"),
        };
        for (var i = 0; i < c.NumLayers; i++)
        {
            var p = $"{prefix}h.{i}.";
            list.Add(new(p + "ln_1.weight", WeightRole.AttentionNorm, i, [C], "(n_embd)"));
            list.Add(new(p + "ln_1.bias", WeightRole.AttentionNormBias, i, [C], "(n_embd)"));
            list.Add(new(p + "attn.c_attn.weight", WeightRole.QkvFused, i, [C, 3 * C], "(n_embd, 3·n_embd), Conv1D (in, out)", StoredTransposed: true));
            list.Add(new(p + "attn.c_attn.bias", WeightRole.QkvFusedBias, i, [3 * C], "(3·n_embd)"));
            list.Add(new(p + "attn.c_proj.weight", WeightRole.AttentionOutput, i, [C, C], "(n_embd, n_embd), Conv1D (in, out)", StoredTransposed: true));
            list.Add(new(p + "attn.c_proj.bias", WeightRole.AttentionOutputBias, i, [C], "(n_embd)"));
            list.Add(new(p + "ln_2.weight", WeightRole.MlpNorm, i, [C], "(n_embd)"));
            list.Add(new(p + "ln_2.bias", WeightRole.MlpNormBias, i, [C], "(n_embd)"));
            list.Add(new(p + "mlp.c_fc.weight", WeightRole.MlpUp, i, [C, I], "(n_embd, n_inner), Conv1D (in, out)", StoredTransposed: true));
            list.Add(new(p + "mlp.c_fc.bias", WeightRole.MlpUpBias, i, [I], "(n_inner)"));
            list.Add(new(p + "mlp.c_proj.weight", WeightRole.MlpDown, i, [I, C], "(n_inner, n_embd), Conv1D (in, out)", StoredTransposed: true));
            list.Add(new(p + "mlp.c_proj.bias", WeightRole.MlpDownBias, i, [C], "(n_embd)"));
        }
        list.Add(new(prefix + "ln_f.weight", WeightRole.FinalNorm, -1, [C], "(n_embd)"));
        list.Add(new(prefix + "ln_f.bias", WeightRole.FinalNormBias, -1, [C], "(n_embd)"));
        if (!c.TieWordEmbeddings) list.Add(new("lm_head.weight", WeightRole.LmHead, -1, [V, C], "(vocab_size, n_embd)"));
        return new WeightMap(c, list, prefix);
    }

    // Buffers some checkpoints carry that are not weights: recomputed by the engine, safe to skip.
    static readonly Regex IgnorableBuffer = new(
        @"(^|\.)rotary_emb\.inv_freq$|(^|\.)attn\.(masked_)?bias$", RegexOptions.CultureInvariant);

    /// <summary>Checks a folder's tensors (name → shape) against what <paramref name="config"/> implies,
    /// and returns the map. Every missing tensor, unexpected tensor and wrong shape is reported in one
    /// <see cref="WeightMismatchException"/>.</summary>
    /// <param name="config">The parsed configuration.</param>
    /// <param name="found">The tensors present, by name, with their stored shapes.</param>
    /// <param name="folder">Names the model in the error.</param>
    public static WeightMap Validate(TransformerConfig config, IReadOnlyDictionary<string, long[]> found, string folder)
    {
        // GPT-2 checkpoints are saved with and without the "transformer." prefix.
        var prefix = config.Family == ModelFamily.Gpt2 && found.Keys.Any(k => k.StartsWith("transformer.", StringComparison.Ordinal)) ? "transformer." : "";
        var map = For(config, prefix);
        var problems = new List<string>();
        foreach (var w in map.Weights)
        {
            if (!found.TryGetValue(w.Name, out var shape))
                problems.Add($"missing tensor '{w.Name}' (expected shape [{string.Join(", ", w.Shape)}] from {w.ShapeFrom})");
            else if (!shape.SequenceEqual(w.Shape))
                problems.Add($"tensor '{w.Name}' has shape [{string.Join(", ", shape)}], expected [{string.Join(", ", w.Shape)}] from config {w.ShapeFrom}");
        }
        foreach (var (name, shape) in found.OrderBy(p => p.Key, StringComparer.Ordinal))
        {
            if (map.byName.ContainsKey(name) || IgnorableBuffer.IsMatch(name)) continue;
            // A tied model may still store its head; accept it when it is shaped like the embedding.
            if (name == "lm_head.weight" && config.TieWordEmbeddings && shape.SequenceEqual(new long[] { config.VocabSize, config.HiddenSize })) continue;
            problems.Add($"unexpected tensor '{name}' [{string.Join(", ", shape)}] not used by {config.Architecture} with this config");
        }
        if (problems.Count > 0) throw new WeightMismatchException(folder, problems);
        return map;
    }
}

/// <summary>A folder's tensors do not match its config; lists every problem at once.</summary>
public sealed class WeightMismatchException(string folder, IReadOnlyList<string> problems)
    : PromptEngineException($"{folder}: {problems.Count} weight problem(s):\n  " + string.Join("\n  ", problems))
{
    /// <summary>The model folder or file at fault.</summary>
    public string Folder { get; } = folder;
    /// <summary>One line per problem.</summary>
    public IReadOnlyList<string> Problems { get; } = problems;
}
