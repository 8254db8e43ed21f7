using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Reference;

/// <summary>Tiny random Hugging Face model folders (config.json + model.safetensors) for the
/// whole-model reference and, later, the engine: names and shapes come from <see cref="WeightMap"/>.</summary>
public static class ModelReferenceTinyModels
{
    /// <summary>config.json of a tiny Llama (GQA when <paramref name="kvHeads"/> &lt; <paramref name="heads"/>).</summary>
    public static string LlamaConfig(int hidden = 16, int heads = 4, int kvHeads = 2, int layers = 2, int vocab = 37,
        int intermediate = 24, bool qkvBias = false, bool tied = false, double ropeTheta = 100.0) => $$"""
        { "architectures": ["LlamaForCausalLM"], "hidden_size": {{hidden}}, "intermediate_size": {{intermediate}},
          "num_hidden_layers": {{layers}}, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kvHeads}},
          "vocab_size": {{vocab}}, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": {{ropeTheta}},
          "attention_bias": {{(qkvBias ? "true" : "false")}}, "tie_word_embeddings": {{(tied ? "true" : "false")}} }
        """;

    /// <summary>config.json of a tiny GPT-2 (tied head, learned positions).</summary>
    public static string Gpt2Config(int hidden = 16, int heads = 2, int layers = 2, int vocab = 41, int positions = 32) => $$"""
        { "architectures": ["GPT2LMHeadModel"], "n_embd": {{hidden}}, "n_head": {{heads}}, "n_layer": {{layers}},
          "vocab_size": {{vocab}}, "n_positions": {{positions}}, "layer_norm_epsilon": 1e-5, "activation_function": "gelu_new" }
        """;

    /// <summary>Writes <paramref name="configJson"/> and every weight it implies, valued by <paramref name="values"/>
    /// (stored shape, row-major), into a new temporary folder, and returns the folder.</summary>
    public static string Write(string configJson, Func<ExpectedWeight, float[]> values)
    {
        var folder = Directory.CreateTempSubdirectory("pe-modelref-").FullName;
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson);
        var map = WeightMap.For(TransformerConfig.Parse(configJson, "config.json"));
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"),
            map.Weights.Select(w => TensorToWrite.F32(w.Name, w.Shape, values(w))));
        return folder;
    }

    /// <summary>Writes a model with seeded random weights: matrices uniform in ±1.5/√fan-in (enough
    /// to make attention far from uniform), norm scales near 1, small biases, embeddings in ±1.</summary>
    public static string WriteRandom(string configJson, int seed) => Write(configJson, w => RandomValues(w, seed));

    /// <summary>Opens <paramref name="folder"/> and loads the reference; the folder is deleted afterwards.</summary>
    public static ModelReference LoadAndDelete(string folder)
    {
        try
        {
            using var model = ModelFolder.Open(folder);
            return ModelReference.Load(model);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>The seeded values <see cref="WriteRandom"/> gives weight <paramref name="w"/>.</summary>
    public static float[] RandomValues(ExpectedWeight w, int seed)
    {
        // HashCode.Combine is randomised per process; a stable mix keeps the tiny models identical across runs.
        var rng = new Random(unchecked(seed * 7919 + StableHash(w.Name)));
        long count = w.Shape.Aggregate(1L, (a, d) => a * d);
        var values = new float[count];
        var (centre, radius) = w.Role switch
        {
            WeightRole.TokenEmbedding or WeightRole.LmHead => (0.0, 1.0),
            WeightRole.PositionEmbedding => (0.0, 0.5),
            WeightRole.AttentionNorm or WeightRole.MlpNorm or WeightRole.FinalNorm => (1.0, 0.3),
            _ when w.Shape.Length == 1 => (0.0, 0.2),
            // Stored (out, in), or (in, out) when transposed.
            _ => (0.0, 1.5 / Math.Sqrt(w.StoredTransposed ? w.Shape[0] : w.Shape[1])),
        };
        for (long i = 0; i < count; i++) values[i] = (float)(centre + radius * (2 * rng.NextDouble() - 1));
        return values;
    }

    static int StableHash(string text)
    {
        int hash = 17;
        foreach (var ch in text) hash = hash * 31 + ch;
        return hash;
    }
}
