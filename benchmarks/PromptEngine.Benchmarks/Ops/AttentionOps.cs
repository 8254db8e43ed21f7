using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Causal attention forward and backward (to q, k and v) at the two models' shapes, no padding.</summary>
[BenchmarkCategory("Ops")]
public class AttentionOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> q, k, v, output, lse, dOut, dQ, dK, dV, delta;
    ArrayView<int> mask;

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
    }

    [Benchmark]
    public void EngineForward()
    {
        var s = Shape;
        kernels.Attention.Forward(output, lse, q, k, v, mask, s.B, s.T, s.H, s.KV, s.HeadSize);
        kernels.Synchronize();
    }

    [Benchmark]
    public void EngineBackward()
    {
        var s = Shape;
        kernels.Attention.Backward(dQ, dK, dV, delta, dOut, q, k, v, mask, output, lse, s.B, s.T, s.H, s.KV, s.HeadSize);
        kernels.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        buffers.Dispose();
        kernels.Dispose();
    }
}
