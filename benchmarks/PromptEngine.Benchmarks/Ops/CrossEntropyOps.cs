using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>The fused LM head + softmax + cross-entropy: forward (logits, loss, dLogits in place) and backward
/// (dHidden = dLogits·W at the scored rows), at the rows and vocabularies the two workloads score.</summary>
[BenchmarkCategory("Ops")]
public class CrossEntropyOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> hidden, weight, losses, meanLoss, dLogits, dHidden;
    ArrayView<int> rows, targets, allowed;

    [ParamsSource(nameof(Shapes))]
    public CrossEntropyShape Shape { get; set; } = null!;

    public static IEnumerable<CrossEntropyShape> Shapes() => CrossEntropyShape.All();

    [GlobalSetup]
    public void Setup()
    {
        kernels = KernelContext.Create(KernelBackend.Cpu);
        buffers = new DeviceBuffers(kernels, seed: 4);
        var s = Shape;
        var rng = new Random(5);
        // Scored rows spread evenly over the N hidden rows (distinct); targets drawn from the allowed words.
        var rowIds = Enumerable.Range(0, s.S).Select(i => (int)((long)i * s.N / s.S)).ToArray();
        var words = s.R > 0 ? Enumerable.Range(0, s.R).Select(i => 100 + 7 * i).ToArray() : [];
        var targetIds = Enumerable.Range(0, s.S).Select(_ => s.R > 0 ? words[rng.Next(s.R)] : rng.Next(s.V)).ToArray();
        hidden = buffers.Random((long)s.N * s.C);
        weight = buffers.Random((long)s.V * s.C, 1f / MathF.Sqrt(s.C));
        losses = buffers.Zeros(s.S);
        meanLoss = buffers.Zeros(1);
        dLogits = buffers.Zeros((long)s.S * (s.R > 0 ? s.R : s.V));
        dHidden = buffers.Zeros((long)s.N * s.C);
        rows = buffers.Ints(rowIds);
        targets = buffers.Ints(targetIds);
        allowed = s.R > 0 ? buffers.Ints(words) : default;
        EngineForward(); // the backward reads dLogits
    }

    [Benchmark]
    public void EngineForward()
    {
        var s = Shape;
        kernels.CrossEntropy.Forward(losses, meanLoss, dLogits, hidden, rows, targets, weight, allowed, s.N, s.C, s.S, s.V, s.R);
        kernels.Synchronize();
    }

    [Benchmark]
    public void EngineBackward()
    {
        var s = Shape;
        kernels.CrossEntropy.Backward(dHidden, dLogits, weight, rows, allowed, s.N, s.C, s.S, s.V, s.R);
        kernels.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        buffers.Dispose();
        kernels.Dispose();
    }
}
