using System.Diagnostics;
using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>Times the CPU-shaped attention and cross-entropy at stories15M's sizes (validated against the
/// references first); slow and machine-dependent, so it reports rather than asserts a speed.</summary>
[Category("Slow")]
public sealed class AttentionAndLossThroughputTests() : KernelTestBase(KernelShape.Cpu)
{
    [Test]
    public void CpuShapedAttentionStories15M()
    {
        const int b = 4, t = 128, h = 6, kv = 6, hs = 48, repeats = 3;
        var random = new Random(21);
        var q = RandomValues(random, b * t * h * hs);
        var k = RandomValues(random, b * t * kv * hs);
        var v = RandomValues(random, b * t * kv * hs);
        var dOut = RandomValues(random, q.Length);
        var mask = new int[b * t];
        for (int i = 0; i < mask.Length; i++) mask[i] = i % t < 5 * (i / t) ? 0 : 1; // left padding 0, 5, 10, 15
        using var qBuffer = Upload(q);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var dOutBuffer = Upload(dOut);
        using var maskBuffer = Upload(mask);
        using var output = Poisoned(q.Length);
        using var lse = Poisoned(b * h * t);
        using var delta = Poisoned(b * h * t);
        using var dQ = Poisoned(q.Length);
        using var dK = Poisoned(k.Length);
        using var dV = Poisoned(v.Length);
        void Forward() => Kernels.Attention.Forward(output.View, lse.View, qBuffer.View, new(kBuffer.View, vBuffer.View), maskBuffer.View, new(b, t, h, kv, hs));
        void Backward() => Kernels.Attention.Backward(dQ.View, new(dK.View, dV.View), delta.View, dOutBuffer.View, qBuffer.View, new(kBuffer.View, vBuffer.View),
            maskBuffer.View, output.View, lse.View, new(b, t, h, kv, hs));
        Forward();
        Backward();
        var expectedOut = new double[q.Length];
        var expectedDk = new double[k.Length];
        AttentionReference.Forward(expectedOut, new double[b * h * t], q, k, v, mask, b, t, h, kv, hs);
        AttentionReference.Backward(new double[q.Length], expectedDk, new double[v.Length], dOut, q, k, v, mask, b, t, h, kv, hs);
        TensorAssert.Close("Attention stories15M out", Download(output), expectedOut, 1e-5, 1e-5);
        TensorAssert.Close("Attention stories15M dK", Download(dK), expectedDk, 1e-4, 1e-4);

        var clock = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) Forward();
        Kernels.Synchronize();
        double forwardMs = clock.Elapsed.TotalMilliseconds / repeats;
        clock.Restart();
        for (int i = 0; i < repeats; i++) Backward();
        Kernels.Synchronize();
        double backwardMs = clock.Elapsed.TotalMilliseconds / repeats;
        TestContext.Out.WriteLine($"CPU-shaped attention B{b} T{t} H{h} hs{hs} on {Environment.ProcessorCount} cores: forward {forwardMs:F1} ms, backward {backwardMs:F1} ms");
    }

    [Test]
    public void CpuShapedCrossEntropyStories15M()
    {
        const int n = 512, c = 288, v = 32000, s = 16, repeats = 3;
        var random = new Random(22);
        var hidden = RandomValues(random, n * c, 0.1);
        var weight = RandomValues(random, v * c, 0.1);
        var rows = Enumerable.Range(0, s).Select(i => i * 31 % n).ToArray();
        var targets = Enumerable.Range(0, s).Select(i => i == 3 ? -1 : i * 1999 % v).ToArray();
        CrossEntropy.CheckSelection(rows, targets, [], n, v);
        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var rowsBuffer = Upload(rows);
        using var targetsBuffer = Upload(targets);
        using var losses = Poisoned(s);
        using var mean = Poisoned(1);
        using var dLogits = Poisoned((long)s * v);
        using var dHidden = Poisoned(n * c);
        void Forward() => Kernels.CrossEntropy.Forward(losses.View, mean.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, targetsBuffer.View,
            weightBuffer.View, default, n, c, s, v, 0);
        void Backward() => Kernels.CrossEntropy.Backward(dHidden.View, dLogits.View, weightBuffer.View, rowsBuffer.View, default, n, c, s, v, 0);
        Forward();
        Backward();
        var expectedLosses = new double[s];
        var expectedMean = new double[1];
        CrossEntropyReference.Forward(expectedLosses, expectedMean, hidden, rows, targets, weight, [], n, c, s, v, 0);
        TensorAssert.Close("CrossEntropy stories15M losses", Download(losses), expectedLosses, 1e-5, 1e-5);

        var clock = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) Forward();
        Kernels.Synchronize();
        double forwardMs = clock.Elapsed.TotalMilliseconds / repeats;
        clock.Restart();
        for (int i = 0; i < repeats; i++) Backward();
        Kernels.Synchronize();
        double backwardMs = clock.Elapsed.TotalMilliseconds / repeats;
        double gflop = 2.0 * s * v * c / 1e9;
        TestContext.Out.WriteLine($"CPU-shaped cross-entropy S{s} V{v} C{c} on {Environment.ProcessorCount} cores: forward {forwardMs:F1} ms ({gflop / forwardMs * 1e3:F2} GFLOP/s), " +
            $"backward {backwardMs:F1} ms ({gflop / backwardMs * 1e3:F2} GFLOP/s)");
    }
}
