using PromptEngine.Models;
using PromptEngine.Safetensors;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Prompts;

/// <summary>Tiny model folders for the prompt tests, deleted at the end of the run, and an
/// independent reading of a model's embedding table.</summary>
static class PromptTestModels
{
    static readonly List<string> Created = [];

    /// <summary>A tiny Llama (hidden 16 unless told) with seeded weights; <paramref name="tweak"/> may change a tensor's values.</summary>
    public static string Tiny(int seed, int hidden = 16, double ropeTheta = 100.0, Action<ExpectedWeight, float[]>? tweak = null, string? configJson = null)
    {
        var config = configJson ?? ModelReferenceTinyModels.LlamaConfig(hidden: hidden, heads: 4, kvHeads: 2, ropeTheta: ropeTheta);
        var folder = ModelReferenceTinyModels.Write(config, w =>
        {
            var values = Seeded(w, seed);
            tweak?.Invoke(w, values);
            return values;
        });
        lock (Created) Created.Add(folder);
        return folder;
    }

    /// <summary>A fresh empty temporary folder, deleted at the end of the run.</summary>
    public static string TempFolder()
    {
        var folder = Directory.CreateTempSubdirectory("pe-prompts-").FullName;
        lock (Created) Created.Add(folder);
        return folder;
    }

    public static void DeleteAll()
    {
        lock (Created)
        {
            foreach (var folder in Created)
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            Created.Clear();
        }
    }

    /// <summary>The whole token embedding table as floats, read through the plain safetensors reader.</summary>
    public static float[] EmbeddingTable(ModelFolder model) =>
        model.Tensors.ReadF32(model.Weights.Get(WeightRole.TokenEmbedding).Name);

    static float[] Seeded(ExpectedWeight w, int seed)
    {
        int nameHash = 17;
        foreach (var ch in w.Name) nameHash = unchecked(nameHash * 31 + ch);
        var rng = new Random(unchecked(seed * 7919 + nameHash));
        var values = new float[w.Shape.Aggregate(1L, (a, d) => a * d)];
        for (var i = 0; i < values.Length; i++) values[i] = (float)(2 * rng.NextDouble() - 1) * 0.5f;
        return values;
    }
}

[SetUpFixture]
public class PromptTestsCleanup
{
    [OneTimeTearDown]
    public void DeleteTinyModels() => PromptTestModels.DeleteAll();
}
