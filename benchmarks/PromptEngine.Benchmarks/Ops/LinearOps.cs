using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Linear forward (Y = X·Wᵀ) and backward-data (dX = dY·W) at every projection shape of the two models,
/// launched through <see cref="KernelContext.Linear"/> on the CPU accelerator.</summary>
/// <remarks>Baselines: TorchSharp's <c>linear</c> (forward) and <c>mm</c> (backward-data) on the same shapes and cores.</remarks>
[BenchmarkCategory("Ops"), GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
public class LinearOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> x, w, y, dY, dX;
    Tensor tx = null!, tw = null!, tdY = null!;

    [ParamsSource(nameof(Shapes))]
    public LinearShape Shape { get; set; } = null!;

    public static IEnumerable<LinearShape> Shapes() => LinearShape.All();

    [GlobalSetup]
    public void Setup()
    {
        kernels = KernelContext.Create(KernelBackend.Cpu);
        buffers = new DeviceBuffers(kernels, seed: 1);
        var (n, k, m) = (Shape.N, Shape.K, Shape.M);
        x = buffers.Random((long)n * k);
        w = buffers.Random((long)m * k, 1f / MathF.Sqrt(k));
        y = buffers.Zeros((long)n * m);
        dY = buffers.Random((long)n * m);
        dX = buffers.Zeros((long)n * k);
        TorchThreads.Ensure();
        torch.manual_seed(1);
        tx = torch.rand(n, k) * 2 - 1;
        tw = (torch.rand(m, k) * 2 - 1) / MathF.Sqrt(k);
        tdY = torch.rand(n, m) * 2 - 1;
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Forward")]
    public void TorchForward()
    {
        using var result = nn.functional.linear(tx, tw);
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Backward")]
    public void TorchBackward()
    {
        using var result = tdY.mm(tw);
    }

    [Benchmark, BenchmarkCategory("Forward")]
    public void EngineForward()
    {
        kernels.Linear.Forward(y, x, w, default, Shape.N, Shape.K, Shape.M);
        kernels.Synchronize();
    }

    [Benchmark, BenchmarkCategory("Backward")]
    public void EngineBackward()
    {
        kernels.Linear.Backward(dX, dY, w, Shape.N, Shape.K, Shape.M);
        kernels.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        buffers.Dispose();
        kernels.Dispose();
        tx.Dispose();
        tw.Dispose();
        tdY.Dispose();
    }
}
