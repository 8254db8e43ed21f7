using System.Diagnostics;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Time per training step (forward + prompt-only backward) and per inference forward at the
/// shapes the benchmarks use, with memory by arena. Slow: runs in CI only when time allows; the numbers
/// are printed, and only sanity is asserted (BenchmarkDotNet owns the published figures).</summary>
[Category("Slow"), NonParallelizable]
public class EngineTimingTests
{
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

    static void Measure(string name, ModelFolder model, Batch batch, int promptTableRows)
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows, MaxLossPositions: batch.LossPositions.Length));
        var rng = new Random(1);
        engine.SetPrompt(Enumerable.Range(0, promptTableRows * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray());
        engine.LossAndPromptGradient(batch); // warm-up: kernel compilation
        engine.Loss(batch);
        const int repeats = 3;
        var step = Stopwatch.StartNew();
        float loss = 0;
        for (var i = 0; i < repeats; i++) { engine.ZeroPromptGradient(); loss = engine.LossAndPromptGradient(batch); engine.OptimizerStep(1e-3f); }
        var stepMs = step.Elapsed.TotalMilliseconds / repeats;
        var forward = Stopwatch.StartNew();
        for (var i = 0; i < repeats; i++) engine.Loss(batch);
        var forwardMs = forward.Elapsed.TotalMilliseconds / repeats;
        var m = engine.Memory;
        TestContext.Out.WriteLine($"{name}: B{batch.Rows} T{batch.Length} (prompt {promptTableRows}): train step {stepMs:F0} ms ({batch.Positions / (stepMs / 1000):F0} tokens/s), inference forward {forwardMs:F0} ms; loss {loss:F4}");
        TestContext.Out.WriteLine($"  memory: weights {m.FrozenWeights / 1e6:F2} MB, activations {m.Activations / 1e6:F2} MB, gradients+scratch {m.GradientsAndScratch / 1e6:F2} MB, indices {m.Indices / 1e3:F1} KB, prompt+optimizer {m.PromptAndOptimizer / 1e3:F1} KB, total {m.Total / 1e6:F2} MB");
        Assert.That(float.IsFinite(loss), Is.True);
        Assert.That(m.FrozenWeights, Is.EqualTo(model.ParameterCount * 4), "weights held once, as float32, with no gradient copy");
    }

    [Test]
    public void TinyModel()
    {
        var folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(hidden: 128, heads: 4, kvHeads: 4, layers: 2, vocab: 1000, intermediate: 344)
            .Replace("\"max_position_embeddings\": 64", "\"max_position_embeddings\": 128"), seed: 1);
        try
        {
            using var model = ModelFolder.Open(folder);
            Measure("tiny (2 layers, d128, 4 heads, vocab 1000)", model, RandomBatch(4, 64, 20, 1000, null, 2), 20);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void Stories15MClassification()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        // SentencePiece's dummy prefix makes "positive" encode as "▁positive" (a leading space would add a lone "▁").
        var words = model.Tokenizer.Encode("positive", false).Take(1).Concat(model.Tokenizer.Encode("negative", false).Take(1)).ToArray();
        Assert.That(words.Distinct().Count(), Is.EqualTo(2));
        Measure("stories15M (verbalizer of 2)", model, RandomBatch(8, 96, 20, 32000, words, 3), 20);
    }
}
