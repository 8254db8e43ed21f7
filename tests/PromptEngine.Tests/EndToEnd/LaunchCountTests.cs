using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Kernel launches per training step, counted by <see cref="KernelProfiler"/>: on a small model each launch's fixed
/// cost, not its arithmetic, sets the step time, so the fusions (q/k/v as one Linear, gate and up as one Linear, residual
/// add and RMSNorm as one kernel) are held to the count they reach. Prints the per-op counts.</summary>
public class LaunchCountTests
{
    /// <summary>One training step's launches by op (after a first step, which compiles the kernels).</summary>
    internal static IReadOnlyList<OpTime> StepLaunches(TransformerEngine engine, Batch batch)
    {
        engine.LossAndPromptGradient(batch);
        var profiler = new KernelProfiler();
        profiler.Start(engine.Kernels);
        engine.ZeroPromptGradient();
        engine.LossAndPromptGradient(batch);
        engine.OptimizerStep(1e-3f, maxGradNorm: 1f);
        profiler.Stop();
        return profiler.Ops.OrderBy(op => op.Op, StringComparer.Ordinal).ToList();
    }

    static int Print(string name, IReadOnlyList<OpTime> ops)
    {
        int total = ops.Sum(op => op.Launches);
        TestContext.Out.WriteLine($"{name}: {total} launches per training step");
        foreach (var op in ops) TestContext.Out.WriteLine($"  {op.Op,-28} {op.Launches,4}");
        return total;
    }

    /// <summary>The benchmarks' tiny Llama (2 layers, d128, 4 heads, SwiGLU 344, vocabulary 1000), B4, 20 prompt rows + 44
    /// tokens (the benchmark's 64 exceed this test model's 64 positions; the count does not depend on T), language-model
    /// loss at every text position but the last.</summary>
    [Test]
    public void TinyLlamaTrainingStep()
    {
        var folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(hidden: 128, heads: 4, kvHeads: 4, layers: 2,
            vocab: 1000, intermediate: 344), seed: 1);
        try
        {
            using var model = ModelFolder.Open(folder);
            var rng = new Random(2);
            var rows = Enumerable.Range(0, 4).Select(_ =>
            {
                var tokens = Enumerable.Range(0, 44).Select(_ => rng.Next(3, 1000)).ToList();
                return (IReadOnlyList<Slot>)Enumerable.Range(0, 20).Select(Slot.Prompt)
                    .Concat(tokens.Select((t, i) => Slot.Token(t, i + 1 < tokens.Count ? tokens[i + 1] : -1))).ToList();
            }).ToList();
            var batch = BatchBuilder.Build(rows);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 20));
            engine.SetPrompt(Enumerable.Range(0, 20 * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray());
            var ops = StepLaunches(engine, batch);
            int total = Print("tiny Llama L2 B4 T64", ops);
            Assert.That(total, Is.GreaterThan(0));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>stories15M at the benchmarks' classification shape: B8, 20 prompt rows + 96 tokens, the last position of
    /// each row scored over a two-word verbalizer.</summary>
    [Test]
    public void Stories15MTrainingStep()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var rng = new Random(3);
        int[] words = [model.Tokenizer.Encode("positive", false)[0], model.Tokenizer.Encode("negative", false)[0]];
        var rows = Enumerable.Range(0, 8).Select(b => (IReadOnlyList<Slot>)Enumerable.Range(0, 20).Select(Slot.Prompt)
            .Concat(Enumerable.Range(0, 96).Select(i => Slot.Token(rng.Next(3, model.Config.VocabSize), i == 95 ? words[b % 2] : -1))).ToList()).ToList();
        var batch = BatchBuilder.Build(rows, words);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(8, batch.Length, 20));
        engine.SetPrompt(Enumerable.Range(0, 20 * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray());
        int total = Print("stories15M B8 T116", StepLaunches(engine, batch));
        Assert.That(total, Is.GreaterThan(0));
    }
}
