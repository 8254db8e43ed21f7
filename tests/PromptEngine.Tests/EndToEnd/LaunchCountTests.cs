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

    /// <summary>A Llama block's four Linears each way (q/k/v, output, gate/up, down), its residual adds all fused into the
    /// norm after them (forward) or before them (backward): only layer 0's attention norm is launched alone.</summary>
    static void AssertFused(IReadOnlyList<OpTime> ops, int layers)
    {
        int Launches(string op) => ops.FirstOrDefault(o => o.Op == op)?.Launches ?? 0;
        Assert.Multiple(() =>
        {
            Assert.That(Launches("Linear.Forward"), Is.EqualTo(4 * layers), "Linear.Forward");
            Assert.That(Launches("Linear.Backward"), Is.EqualTo(4 * layers), "Linear.Backward");
            Assert.That(Launches("Rope.ForwardFromQkv"), Is.EqualTo(layers), "Rope.ForwardFromQkv");
            Assert.That(Launches("Rope.BackwardToQkv"), Is.EqualTo(layers), "Rope.BackwardToQkv");
            Assert.That(Launches("ResidualRmsNorm.Forward"), Is.EqualTo(2 * layers), "ResidualRmsNorm.Forward");
            Assert.That(Launches("RmsNorm.Forward"), Is.EqualTo(1), "RmsNorm.Forward");
            Assert.That(Launches("RmsNorm.Backward"), Is.EqualTo(2 * layers + 1), "RmsNorm.Backward");
            Assert.That(Launches("Residual.Forward") + Launches("Rope.Forward") + Launches("Rope.Backward"), Is.Zero, "unfused residual adds and rotations");
        });
    }

    static (ModelFolder Model, Batch Batch, float[] Prompt) TinyLlama(string folder)
    {
        var model = ModelFolder.Open(folder);
        var rng = new Random(2);
        var rows = Enumerable.Range(0, 4).Select(_ =>
        {
            var tokens = Enumerable.Range(0, 44).Select(_ => rng.Next(3, 1000)).ToList();
            return (IReadOnlyList<Slot>)Enumerable.Range(0, 20).Select(Slot.Prompt)
                .Concat(tokens.Select((t, i) => Slot.Token(t, i + 1 < tokens.Count ? tokens[i + 1] : -1))).ToList();
        }).ToList();
        return (model, BatchBuilder.Build(rows), Enumerable.Range(0, 20 * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray());
    }

    static string TinyLlamaFolder() => ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(hidden: 128, heads: 4, kvHeads: 4,
        layers: 2, vocab: 1000, intermediate: 344), seed: 1);

    /// <summary>The tiny Llama's training step time (forward, loss, backward, optimizer step), median of 40 after 5 to warm
    /// up, printed with the machine's load; for A/B runs of two builds. Asserts only that the loss is finite.</summary>
    [Test, Category("Slow"), NonParallelizable]
    public void TinyLlamaStepTime()
    {
        var folder = TinyLlamaFolder();
        try
        {
            var (model, batch, prompt) = TinyLlama(folder);
            using var _ = model;
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 20));
            engine.SetPrompt(prompt);
            var times = new List<double>();
            float loss = 0;
            for (var step = 0; step < 45; step++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                engine.ZeroPromptGradient();
                loss = engine.LossAndPromptGradient(batch);
                engine.OptimizerStep(1e-3f);
                if (step >= 5) times.Add(clock.Elapsed.TotalMilliseconds);
            }
            times.Sort();
            TestContext.Out.WriteLine($"tiny Llama L2 B4 T64 training step: median {times[times.Count / 2]:F2} ms, fastest {times[0]:F2} ms " +
                $"(40 steps; load {File.ReadAllText("/proc/loadavg").Split(' ')[0]})");
            Assert.That(float.IsFinite(loss));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>The benchmarks' tiny Llama (2 layers, d128, 4 heads, SwiGLU 344, vocabulary 1000), B4, 20 prompt rows + 44
    /// tokens (the benchmark's 64 exceed this test model's 64 positions; the count does not depend on T), language-model
    /// loss at every text position but the last.</summary>
    [Test]
    public void TinyLlamaTrainingStep()
    {
        var folder = TinyLlamaFolder();
        try
        {
            var (model, batch, prompt) = TinyLlama(folder);
            using var _ = model;
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 20));
            engine.SetPrompt(prompt);
            var ops = StepLaunches(engine, batch);
            Print("tiny Llama L2 B4 T64", ops);
            AssertFused(ops, model.Config.NumLayers);
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
        var ops = StepLaunches(engine, batch);
        Print("stories15M B8 T116", ops);
        AssertFused(ops, model.Config.NumLayers);
    }
}
