using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>RMSNorm forward (saving rstd) and backward to the input at the two models' activation shapes.</summary>
[BenchmarkCategory("Ops")]
public class RmsNormOps
{
    const float Eps = 1e-5f;
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> input, weight, output, rstd, dOut, dX;

    [ParamsSource(nameof(Shapes))]
    public NormShape Shape { get; set; } = null!;

    public static IEnumerable<NormShape> Shapes() => NormShape.All();

    [GlobalSetup]
    public void Setup()
    {
        kernels = KernelContext.Create(KernelBackend.Cpu);
        buffers = new DeviceBuffers(kernels, seed: 3);
        long nc = (long)Shape.N * Shape.C;
        input = buffers.Random(nc);
        weight = buffers.Random(Shape.C, 0.3f, 1f);
        output = buffers.Zeros(nc);
        rstd = buffers.Zeros(Shape.N);
        dOut = buffers.Random(nc);
        dX = buffers.Zeros(nc);
        EngineForward(); // the backward reads rstd
    }

    [Benchmark]
    public void EngineForward()
    {
        kernels.RmsNorm.Forward(output, input, weight, rstd, Shape.N, Shape.C, Eps);
        kernels.Synchronize();
    }

    [Benchmark]
    public void EngineBackward()
    {
        kernels.RmsNorm.Backward(dX, dOut, input, weight, rstd, Shape.N, Shape.C);
        kernels.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        buffers.Dispose();
        kernels.Dispose();
    }
}
