using PromptEngine.Assets;
using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Benchmarks.Workloads;

/// <summary>One end-to-end case: a model folder on disk, a fixed batch and a prompt length. Every implementation
/// (engine, TorchSharp same-math, TorchSharp idiomatic) reads the same folder and the same batch.</summary>
/// <param name="Name">Short name used in tables and filters ("tiny", "stories15M").</param>
/// <param name="ModelFolder">Hugging Face folder: config.json + model.safetensors.</param>
/// <param name="Batch">B rows of P prompt slots followed by T tokens (prefix placement), no padding.</param>
/// <param name="PromptTableRows">P.</param>
/// <param name="Temporary">The folder was written for this run and is deleted on dispose.</param>
public sealed record Workload(string Name, string ModelFolder, Batch Batch, int PromptTableRows, bool Temporary) : IDisposable
{
    /// <summary>Tokens a step processes: B·(T+P).</summary>
    public int TokensPerStep => Batch.Positions;

    /// <summary>Tokens T of each row (prompt excluded).</summary>
    public int TextTokens => Batch.Length - PromptTableRows;

    /// <summary>The initial prompt (P, C): seeded uniform ±0.05, the same for every implementation.</summary>
    public float[] InitialPrompt(int hidden)
    {
        var rng = new Random(1);
        return Enumerable.Range(0, PromptTableRows * hidden).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray();
    }

    /// <summary>Tiny Llama: 2 layers, d = 128, 4 heads (no grouping), SwiGLU 344, vocabulary 1000; B4, T64 + 20 prompt
    /// rows, language-model loss over the whole vocabulary at every text position but the last.</summary>
    public static Workload Tiny()
    {
        var folder = TinyModel.WriteRandom(TinyModel.LlamaConfig(hidden: 128, heads: 4, kvHeads: 4, layers: 2, vocab: 1000, intermediate: 344, maxPositions: 128), seed: 1);
        return new Workload("tiny", folder, RandomBatch(4, 64, 20, 1000, null, seed: 2), 20, Temporary: true);
    }

    /// <summary>stories15M (6 layers, d = 288, 6 heads, vocabulary 32000) from the asset cache; B8, T96 + 20 prompt rows,
    /// classification: one scored position per row (the last), softmax over a two-word verbalizer ("positive", "negative").</summary>
    public static Workload Stories15M()
    {
        var folder = DemoWorkspace.Prepare(new AssetStore()).Stories15MFolder;
        using var model = PromptEngine.Models.ModelFolder.Open(folder);
        // SentencePiece's dummy prefix makes "positive" encode as "▁positive" (a leading space would add a lone "▁").
        var words = model.Tokenizer.Encode("positive", false).Take(1).Concat(model.Tokenizer.Encode("negative", false).Take(1)).ToArray();
        if (words.Distinct().Count() != 2) throw new InvalidOperationException($"stories15M: the verbalizer words encode to [{string.Join(", ", words)}], not two distinct tokens");
        return new Workload("stories15M", folder, RandomBatch(8, 96, 20, model.Config.VocabSize, words, seed: 3), 20, Temporary: false);
    }

    /// <summary>Both workloads by name.</summary>
    public static Workload Create(string name) => name switch
    {
        "tiny" => Tiny(),
        "stories15M" => Stories15M(),
        _ => throw new ArgumentException($"unknown workload '{name}' (tiny, stories15M)"),
    };

    /// <summary>B rows of P prompt slots then T random tokens. Without a verbalizer every text position but the last
    /// predicts the next token; with one, the last position of row b predicts verbalizer[b mod R].</summary>
    static Batch RandomBatch(int rows, int tokens, int promptTableRows, int vocab, int[]? verbalizer, int seed)
    {
        var rng = new Random(seed);
        var list = new List<IReadOnlyList<Slot>>();
        for (var b = 0; b < rows; b++)
        {
            var row = Enumerable.Range(0, promptTableRows).Select(Slot.Prompt).Concat(Enumerable.Range(0, tokens).Select(_ => Slot.Token(rng.Next(3, vocab)))).ToList();
            if (verbalizer is null)
                for (var i = promptTableRows; i + 1 < row.Count; i++) row[i] = row[i] with { Target = row[i + 1].Source };
            else
                row[^1] = row[^1] with { Target = verbalizer[b % verbalizer.Length] };
            list.Add(row);
        }
        return BatchBuilder.Build(list, verbalizer);
    }

    /// <summary>Deletes a temporary model folder.</summary>
    public void Dispose()
    {
        if (Temporary && Directory.Exists(ModelFolder)) Directory.Delete(ModelFolder, recursive: true);
    }
}

/// <summary>Writes seeded random Hugging Face Llama folders, with the same value ranges as the tests' tiny models.</summary>
public static class TinyModel
{
    /// <summary>config.json of a Llama (GQA when <paramref name="kvHeads"/> &lt; <paramref name="heads"/>).</summary>
    public static string LlamaConfig(int hidden, int heads, int kvHeads, int layers, int vocab, int intermediate, int maxPositions) => $$"""
        { "architectures": ["LlamaForCausalLM"], "hidden_size": {{hidden}}, "intermediate_size": {{intermediate}},
          "num_hidden_layers": {{layers}}, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kvHeads}},
          "vocab_size": {{vocab}}, "max_position_embeddings": {{maxPositions}}, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "attention_bias": false, "tie_word_embeddings": false }
        """;

    /// <summary>Writes config.json and every weight it implies into a new temporary folder: matrices uniform in
    /// ±1.5/√fan-in, norm scales 1 ± 0.3, embeddings and head ±1. Returns the folder.</summary>
    public static string WriteRandom(string configJson, int seed)
    {
        var folder = Directory.CreateTempSubdirectory("pe-bench-").FullName;
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson);
        var map = WeightMap.For(TransformerConfig.Parse(configJson, "config.json"));
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"),
            map.Weights.Select(w => TensorToWrite.F32(w.Name, w.Shape, RandomValues(w, seed))));
        return folder;
    }

    static float[] RandomValues(ExpectedWeight w, int seed)
    {
        // A stable per-name seed (string.GetHashCode is randomised per process) keeps the model identical across runs.
        int hash = 17;
        foreach (var ch in w.Name) hash = unchecked(hash * 31 + ch);
        var rng = new Random(unchecked(seed * 7919 + hash));
        long count = w.Shape.Aggregate(1L, (a, d) => a * d);
        var (centre, radius) = w.Role switch
        {
            WeightRole.TokenEmbedding or WeightRole.LmHead => (0.0, 1.0),
            WeightRole.AttentionNorm or WeightRole.MlpNorm or WeightRole.FinalNorm => (1.0, 0.3),
            _ when w.Shape.Length == 1 => (0.0, 0.2),
            _ => (0.0, 1.5 / Math.Sqrt(w.StoredTransposed ? w.Shape[0] : w.Shape[1])),
        };
        var values = new float[count];
        for (long i = 0; i < count; i++) values[i] = (float)(centre + radius * (2 * rng.NextDouble() - 1));
        return values;
    }
}
