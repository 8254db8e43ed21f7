using BenchmarkDotNet.Attributes;
using ILGPU;
using PromptEngine.Kernels;
using TorchSharp;
using static TorchSharp.torch;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>The fused LM head + softmax + cross-entropy: forward (logits, loss, dLogits in place) and backward
/// (dHidden = dLogits·W at the scored rows), at the rows and vocabularies the two workloads score.</summary>
/// <remarks>Baselines: the same math in TorchSharp, cross_entropy(linear(hidden[rows], W[allowed]), targets): the
/// forward without a graph, and the autograd backward alone to the hidden states (graph built once and kept).</remarks>
[BenchmarkCategory("Ops"), GroupBenchmarksBy(BenchmarkDotNet.Configs.BenchmarkLogicalGroupRule.ByCategory)]
public class CrossEntropyOps
{
    KernelContext kernels = null!;
    DeviceBuffers buffers = null!;
    ArrayView<float> hidden, weight, losses, meanLoss, dLogits, dHidden;
    ArrayView<int> rows, targets, allowed;
    Tensor tHidden = null!, tHead = null!, tRows = null!, tTargets = null!, tLoss = null!;

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

        TorchThreads.Ensure();
        torch.manual_seed(4);
        tHidden = (torch.rand(s.N, s.C) * 2 - 1).requires_grad_();
        using (var weightAll = (torch.rand(s.V, s.C) * 2 - 1) / MathF.Sqrt(s.C))
        using (var allowedRows = torch.tensor(s.R > 0 ? words.Select(i => (long)i).ToArray() : []))
            tHead = s.R > 0 ? weightAll.index_select(0, allowedRows) : weightAll.clone();
        tRows = torch.tensor(rowIds.Select(i => (long)i).ToArray());
        // Targets as columns of the (restricted) logits.
        tTargets = torch.tensor(targetIds.Select(t => (long)(s.R > 0 ? Array.IndexOf(words, t) : t)).ToArray());
        tLoss = TorchLoss();
    }

    Tensor TorchLoss() => nn.functional.cross_entropy(nn.functional.linear(tHidden.index_select(0, tRows), tHead), tTargets);

    [Benchmark(Baseline = true), BenchmarkCategory("Forward")]
    public void TorchForward()
    {
        using var scope = torch.NewDisposeScope();
        using var noGrad = torch.no_grad();
        TorchLoss();
    }

    [Benchmark(Baseline = true), BenchmarkCategory("Backward")]
    public void TorchBackward() => tLoss.backward(retain_graph: true);

    [Benchmark, BenchmarkCategory("Forward")]
    public void EngineForward()
    {
        var s = Shape;
        kernels.CrossEntropy.Forward(losses, meanLoss, dLogits, hidden, rows, targets, weight, allowed, s.N, s.C, s.S, s.V, s.R);
        kernels.Synchronize();
    }

    [Benchmark, BenchmarkCategory("Backward")]
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
        foreach (var t in new[] { tLoss, tHidden, tHead, tRows, tTargets }) t.Dispose();
    }
}
