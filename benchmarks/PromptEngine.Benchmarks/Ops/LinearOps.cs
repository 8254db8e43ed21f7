using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Linear forward (Y = X·Wᵀ) and backward-data (dX = dY·W) at every projection shape of the two models,
/// launched through <see cref="KernelContext.Linear"/> on the CPU accelerator.</summary>
[BenchmarkCategory("Ops")]
public class LinearOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> x, w, y, dY, dX;

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
    }

    [Benchmark]
    public void EngineForward()
    {
        kernels.Linear.Forward(y, x, w, default, Shape.N, Shape.K, Shape.M);
        kernels.Synchronize();
    }

    [Benchmark]
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
    }
}
