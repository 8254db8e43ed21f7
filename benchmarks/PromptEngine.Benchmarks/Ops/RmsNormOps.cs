using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>RMSNorm forward (saving rstd) and backward to the input at the two models' activation shapes.</summary>
/// <remarks>Baselines: TorchSharp has no fused RMSNorm, so the forward is the composition a user writes
/// (x·rsqrt(mean(x²) + eps)·w) and the backward is its autograd backward alone (graph built once and kept).</remarks>
[BenchmarkCategory("Ops"), GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
public class RmsNormOps
{
    const float Eps = 1e-5f;
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> input, weight, output, rstd, dOut, dX;
    Tensor tx = null!, tw = null!, tOut = null!, tdOut = null!;

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

        TorchThreads.Ensure();
        torch.manual_seed(3);
        tx = (torch.rand(Shape.N, Shape.C) * 2 - 1).requires_grad_();
        tw = torch.rand(Shape.C) * 0.6 + 0.7;
        tOut = TorchRmsNorm(tx, tw);
        tdOut = torch.rand(Shape.N, Shape.C) * 2 - 1;
    }

    static Tensor TorchRmsNorm(Tensor x, Tensor w) => x * torch.rsqrt(x.pow(2).mean([-1], keepdim: true) + Eps) * w;

    [Benchmark(Baseline = true), BenchmarkCategory("Forward")]
    public void TorchForward()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        TorchRmsNorm(tx, tw);
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Backward")]
    public void TorchBackward() => tOut.backward([tdOut], retain_graph: true);

    [Benchmark, BenchmarkCategory("Forward")]
    public void EngineForward()
    {
        kernels.RmsNorm.Forward(output, input, weight, rstd, Shape.N, Shape.C, Eps);
        kernels.Synchronize();
    }

    [Benchmark, BenchmarkCategory("Backward")]
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
        foreach (var t in new[] { tOut, tdOut, tx, tw }) t.Dispose();
    }
}
