using System.Diagnostics;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Activation recomputation (<see cref="EngineOptions.Recompute"/>): the same loss and gradients as the normal
/// path, bit for bit (the recomputed block runs the same kernels on the same inputs), with less activation memory.</summary>
public class RecomputeTests
{
    public enum Family { LlamaGqa, Gpt2 }

    [Test]
    public void RecomputedGradientsAreBitIdentical([Values] Family family, [Values(0, 2)] int deepVirtualTokens)
    {
        var config = family == Family.LlamaGqa ? ModelReferenceTinyModels.LlamaConfig(layers: 3) : ModelReferenceTinyModels.Gpt2Config(layers: 3, positions: 64);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 61);
        try
        {
            using var model = ModelFolder.Open(folder);
            var rng = new Random(3);
            int V = model.Config.VocabSize, C = model.Config.HiddenSize;
            List<Slot> Row(int tokens)
            {
                var sources = new List<int> { -1, -2, -3 };
                for (var i = 0; i < tokens; i++) sources.Add(rng.Next(V));
                return sources.Select((s, i) => new Slot(s, i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1)).ToList();
            }
            var batch = BatchBuilder.Build([Row(9), Row(5), Row(7)]);
            var prompt = Enumerable.Range(0, 3 * C).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var prefix = Enumerable.Range(0, (int)TransformerEngine.PrefixLengthOf(model.Config, deepVirtualTokens)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            (float Loss, float[] DPrompt, float[] DPrefix, MemoryReport Memory) Run(bool recompute)
            {
                using var kernels = KernelContext.Create(KernelBackend.Cpu);
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 3, DeepVirtualTokens: deepVirtualTokens, Recompute: recompute));
                engine.SetPrompt(prompt);
                engine.SetPrefix(prefix);
                var loss = engine.LossAndPromptGradient(batch);
                return (loss, engine.GetPromptGradient(), engine.GetPrefixGradient(), engine.Memory);
            }
            var normal = Run(false);
            var recomputed = Run(true);
            Assert.That(recomputed.Loss, Is.EqualTo(normal.Loss));
            Assert.That(recomputed.DPrompt, Is.EqualTo(normal.DPrompt));
            Assert.That(recomputed.DPrefix, Is.EqualTo(normal.DPrefix));
            Assert.That(normal.DPrompt.Max(Math.Abs), Is.GreaterThan(1e-4f));
            TestContext.Out.WriteLine($"{family}, Pv {deepVirtualTokens}: activations {normal.Memory.Activations} → {recomputed.Memory.Activations} bytes");
            Assert.That(recomputed.Memory.Activations, Is.LessThan(normal.Memory.Activations));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>stories15M at B8, T256 (20 prompt rows + 236 tokens): activation memory and time per training step
    /// with and without recomputation; two measured steps each after one warm-up (numbers printed, sanity asserted).</summary>
    [Test, Category("Slow"), NonParallelizable]
    public void Stories15MMemoryAndStepTime()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var rng = new Random(5);
        var rows = Enumerable.Range(0, 8).Select(_ =>
        {
            var row = Enumerable.Range(0, 20).Select(Slot.Prompt).Concat(Enumerable.Range(0, 236).Select(_ => Slot.Token(rng.Next(3, 32000)))).ToList();
            for (var i = 20; i + 1 < row.Count; i++) row[i] = row[i] with { Target = row[i + 1].Source };
            return (IReadOnlyList<Slot>)row;
        }).ToArray();
        var batch = BatchBuilder.Build(rows);
        var prompt = Enumerable.Range(0, 20 * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray();
        float? reference = null;
        foreach (var recompute in new[] { false, true })
        {
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(8, 256, 20, MaxLossPositions: batch.LossPositions.Length, Recompute: recompute));
            engine.SetPrompt(prompt);
            var loss = engine.LossAndPromptGradient(batch); // warm-up: kernel compilation
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < 2; i++) { engine.ZeroPromptGradient(); engine.LossAndPromptGradient(batch); }
            var stepSeconds = clock.Elapsed.TotalSeconds / 2;
            var m = engine.Memory;
            TestContext.Out.WriteLine($"stories15M B8 T256 recompute={recompute}: activations {m.Activations / 1e6:F1} MB, gradients+scratch {m.GradientsAndScratch / 1e6:F1} MB, total {m.Total / 1e6:F1} MB; {stepSeconds:F2} s per step (loss {loss:F4})");
            if (reference is { } r) Assert.That(loss, Is.EqualTo(r));
            reference = loss;
        }
    }
}
