using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>CPU-shaped contexts run on CPU multiprocessors of 2 threads (cheaper launches) instead of 16: the kernels
/// launch with group size 1 and split their work by <see cref="KernelContext.ParallelThreads"/>, not by the device's
/// threads, so a train step and an inference forward give the same loss, logits and prompt gradient bit for bit. Also
/// checks the context's launch counter that the report divides by steps.</summary>
public class CpuLaunchLayoutTests
{
    [Test]
    public void TwoThreadMultiprocessorsGiveTheSameStepBitForBit([Values] bool gpt2)
    {
        var config = gpt2 ? ModelReferenceTinyModels.Gpt2Config(layers: 2, positions: 64) : ModelReferenceTinyModels.LlamaConfig(layers: 2);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 17);
        try
        {
            using var model = ModelFolder.Open(folder);
            var rng = new Random(9);
            int V = model.Config.VocabSize, C = model.Config.HiddenSize;
            const int promptTableRows = 3;
            List<Slot> Row(int tokens)
            {
                var sources = Enumerable.Range(0, promptTableRows).Select(p => -1 - p).Concat(Enumerable.Range(0, tokens).Select(_ => rng.Next(V))).ToList();
                return sources.Select((s, i) => new Slot(s, i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1)).ToList();
            }
            var batch = BatchBuilder.Build([Row(9), Row(6), Row(4)]);
            var prompt = Enumerable.Range(0, promptTableRows * C).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();

            (float Loss, float[] DPrompt, float InferenceLoss, float[] Logits, long Launches) Run(int threadsPerMultiprocessor)
            {
                using var kernels = KernelContext.Create(KernelBackend.Cpu, cpuThreadsPerMultiprocessor: threadsPerMultiprocessor);
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows));
                engine.SetPrompt(prompt);
                long before = kernels.Launches;
                var loss = engine.LossAndPromptGradient(batch);
                long launches = kernels.Launches - before;
                return (loss, engine.GetPromptGradient(), engine.Loss(batch), engine.Logits(batch), launches);
            }
            var sixteen = Run(KernelContext.CpuMaxGroupSize);
            var two = Run(KernelContext.CpuWarpSize);
            Assert.That(two.Loss, Is.EqualTo(sixteen.Loss), "training loss");
            Assert.That(two.DPrompt, Is.EqualTo(sixteen.DPrompt), "dPrompt");
            Assert.That(two.InferenceLoss, Is.EqualTo(sixteen.InferenceLoss), "inference loss");
            Assert.That(two.Logits, Is.EqualTo(sixteen.Logits), "logits");
            Assert.That(two.Launches, Is.EqualTo(sixteen.Launches), "launches of one train step");
            // Not vacuous: a real loss, a real gradient, and at least a forward and a backward launch per layer.
            Assert.That(float.IsFinite(sixteen.Loss) && sixteen.Loss > 0);
            Assert.That(sixteen.DPrompt.Max(Math.Abs), Is.GreaterThan(1e-5f));
            Assert.That(sixteen.Launches, Is.GreaterThan(2 * model.Config.NumLayers));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void DefaultLayoutFollowsTheKernelShape()
    {
        using var cpu = KernelContext.Create(KernelBackend.Cpu);
        using var gpu = KernelContext.Create(KernelBackend.Cpu, KernelShape.Gpu);
        Assert.That(cpu.Accelerator.MaxNumThreadsPerMultiprocessor, Is.EqualTo(KernelContext.CpuWarpSize));
        Assert.That(gpu.Accelerator.MaxNumThreadsPerMultiprocessor, Is.EqualTo(KernelContext.CpuMaxGroupSize));
        Assert.That(gpu.GroupSize, Is.EqualTo(KernelContext.CpuMaxGroupSize), "the GPU-shaped kernels keep their 16-thread groups on the CPU");
    }

    [TestCase(1)]
    [TestCase(3)]
    [TestCase(32)]
    public void ThreadsPerMultiprocessorOutsideThePowersOfTwoAllowedAreRefused(int threads)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => KernelContext.Create(KernelBackend.Cpu, cpuThreadsPerMultiprocessor: threads));
        Assert.That(error!.ParamName, Is.EqualTo("cpuThreadsPerMultiprocessor"));
    }

    [Test]
    public void EveryLauncherCallIsCounted()
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var a = kernels.Accelerator.Allocate1D<float>(3);
        a.CopyFromCPU(new float[] { 1, 2, 3 });
        using var b = kernels.Accelerator.Allocate1D<float>(3);
        b.CopyFromCPU(new float[] { 10, 20, 30 });
        long before = kernels.Launches;
        kernels.Residual.Forward(a.View, a.View, b.View, 3);
        kernels.Residual.Forward(a.View, a.View, b.View, 3);
        kernels.Synchronize();
        Assert.That(kernels.Launches - before, Is.EqualTo(2));
        Assert.That(a.GetAsArray1D(), Is.EqualTo(new float[] { 21, 42, 63 }));
    }
}
