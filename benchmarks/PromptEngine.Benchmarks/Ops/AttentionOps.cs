using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Causal attention forward and backward (to q, k and v) at the two models' shapes, no padding.</summary>
/// <remarks>Baselines: TorchSharp's <c>scaled_dot_product_attention</c> (is_causal) forward, and its autograd backward
/// alone (the graph is built once in the setup and kept, so each call runs only the backward; the gradients it
/// accumulates into q, k and v's .grad add three elementwise adds).</remarks>
[BenchmarkCategory("Ops"), GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
public class AttentionOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> q, k, v, output, lse, dOut, dQ, dK, dV, delta;
    ArrayView<int> mask;
    Tensor tq = null!, tk = null!, tv = null!, tOut = null!, tdOut = null!;

    [ParamsSource(nameof(Shapes))]
    public AttentionShape Shape { get; set; } = null!;

    public static IEnumerable<AttentionShape> Shapes() => AttentionShape.All();

    [GlobalSetup]
    public void Setup()
    {
        kernels = KernelContext.Create(KernelBackend.Cpu);
        buffers = new DeviceBuffers(kernels, seed: 2);
        var s = Shape;
        long queries = (long)s.B * s.T * s.H * s.HeadSize, keys = (long)s.B * s.T * s.KV * s.HeadSize;
        q = buffers.Random(queries);
        k = buffers.Random(keys);
        v = buffers.Random(keys);
        output = buffers.Zeros(queries);
        lse = buffers.Zeros((long)s.B * s.H * s.T);
        dOut = buffers.Random(queries);
        dQ = buffers.Zeros(queries);
        dK = buffers.Zeros(keys);
        dV = buffers.Zeros(keys);
        delta = buffers.Zeros((long)s.B * s.H * s.T);
        mask = buffers.Ints(Enumerable.Repeat(1, s.B * s.T).ToArray());
        EngineForward(); // the backward reads the forward's output and log-sum-exp

        if (s.KV != s.H) throw new NotSupportedException("the torch baseline here takes H = KV (both workloads do)");
        TorchThreads.Ensure();
        torch.manual_seed(2);
        tq = (torch.rand(s.B, s.H, s.T, s.HeadSize) * 2 - 1).requires_grad_();
        tk = (torch.rand(s.B, s.KV, s.T, s.HeadSize) * 2 - 1).requires_grad_();
        tv = (torch.rand(s.B, s.KV, s.T, s.HeadSize) * 2 - 1).requires_grad_();
        tOut = nn.functional.scaled_dot_product_attention(tq, tk, tv, is_casual: true);
        tdOut = torch.rand(s.B, s.H, s.T, s.HeadSize) * 2 - 1;
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Forward")]
    public void TorchForward()
    {
        using var noGrad = torch.no_grad();
        using var result = nn.functional.scaled_dot_product_attention(tq, tk, tv, is_casual: true);
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Backward")]
    public void TorchBackward() => tOut.backward([tdOut], retain_graph: true);

    [Benchmark, BenchmarkCategory("Forward")]
    public void EngineForward()
    {
        var s = Shape;
        kernels.Attention.Forward(output, lse, q, new(k, v), mask, new(s.B, s.T, s.H, s.KV, s.HeadSize));
        kernels.Synchronize();
    }

    [Benchmark, BenchmarkCategory("Backward")]
    public void EngineBackward()
    {
        var s = Shape;
        kernels.Attention.Backward(dQ, new(dK, dV), delta, dOut, q, new(k, v), mask, output, lse, new(s.B, s.T, s.H, s.KV, s.HeadSize));
        kernels.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        buffers.Dispose();
        kernels.Dispose();
        foreach (var t in new[] { tOut, tdOut, tq, tk, tv }) t.Dispose();
    }
}
