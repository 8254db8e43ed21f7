using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class AttentionTests(KernelShape shape) : KernelTestBase(shape)
{
    // Scores are hs-term float dots scaled by 1/√hs (|s| < 2 here), exp/log in float: lse and p carry
    // ~1e-6 relative error; the output is a convex combination of O(1) values: 1e-5. The backward sums
    // T·(H/KV) products of such terms (≤ 40 here): 5e-5.
    const double ForwardAtol = 1e-5, BackwardAtol = 5e-5, Rtol = 1e-5;

    // Batch row 0: left padding (queries 0 and 1 see only padding keys: zero output, zero gradient);
    // batch row 1: a masked key in the middle and at the end.
    static int[] Mask(int b, int t)
    {
        var mask = new int[b * t];
        for (int batch = 0; batch < b; batch++)
            for (int j = 0; j < t; j++)
                mask[batch * t + j] = batch % 2 == 0 ? (j < 2 ? 0 : 1) : (j == t / 2 || j == t - 1 ? 0 : 1);
        return mask;
    }

    [TestCase(2, 7, 4, 2, 5)]   // grouped-query heads, hs < group size
    [TestCase(2, 5, 3, 1, 20)]  // multi-query, hs > the CPU device's 16-thread group: strided channels
    [TestCase(1, 19, 2, 2, 3)]  // plain multi-head, T > 16: several key chunks per row
    public void ForwardAndBackwardMatchReference(int b, int t, int h, int kv, int headSize)
    {
        var random = new Random(b * 10000 + t * 100 + h * 10 + kv + headSize);
        var q = RandomValues(random, b * t * h * headSize);
        var k = RandomValues(random, b * t * kv * headSize);
        var v = RandomValues(random, b * t * kv * headSize);
        var dOut = RandomValues(random, b * t * h * headSize);
        var mask = Mask(b, t);
        var expectedOut = new double[q.Length];
        var expectedLse = new double[b * h * t];
        var expectedDq = new double[q.Length];
        var expectedDk = new double[k.Length];
        var expectedDv = new double[v.Length];
        AttentionReference.Forward(expectedOut, expectedLse, q, k, v, mask, b, t, h, kv, headSize);
        AttentionReference.Backward(expectedDq, expectedDk, expectedDv, dOut, q, k, v, mask, b, t, h, kv, headSize);

        using var qBuffer = Upload(q);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var dOutBuffer = Upload(dOut);
        using var maskBuffer = Upload(mask);
        using var outBuffer = Poisoned(q.Length);
        using var lseBuffer = Poisoned(b * h * t);
        using var deltaBuffer = Poisoned(b * h * t);
        using var dQBuffer = Poisoned(q.Length);
        using var dKBuffer = Poisoned(k.Length);
        using var dVBuffer = Poisoned(v.Length);
        Kernels.Attention.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, new(kBuffer.View, vBuffer.View), maskBuffer.View, new(b, t, h, kv, headSize));
        Kernels.Attention.Backward(dQBuffer.View, new(dKBuffer.View, dVBuffer.View), deltaBuffer.View, dOutBuffer.View, qBuffer.View,
            new(kBuffer.View, vBuffer.View), maskBuffer.View, outBuffer.View, lseBuffer.View, new(b, t, h, kv, headSize));

        string name = $"{Shape} B{b} T{t} H{h} KV{kv} hs{headSize}";
        TensorAssert.Close($"Attention.Forward out {name}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        var lse = Download(lseBuffer);
        for (int i = 0; i < lse.Length; i++)
            if (double.IsPositiveInfinity(expectedLse[i]))
            {
                Assert.That(lse[i], Is.EqualTo(float.PositiveInfinity), $"lse[{i}] of a fully masked row");
                (lse[i], expectedLse[i]) = (0, 0);
            }
        TensorAssert.Close($"Attention.Forward lse {name}", lse, expectedLse, ForwardAtol, Rtol);
        TensorAssert.Close($"Attention.Backward dQ {name}", Download(dQBuffer), expectedDq, BackwardAtol, Rtol);
        TensorAssert.Close($"Attention.Backward dK {name}", Download(dKBuffer), expectedDk, BackwardAtol, Rtol);
        TensorAssert.Close($"Attention.Backward dV {name}", Download(dVBuffer), expectedDv, BackwardAtol, Rtol);
    }

    [Test]
    public void FullyMaskedQueriesOutputZerosAndGetZeroGradient()
    {
        const int b = 1, t = 4, h = 2, kv = 1, hs = 3;
        int[] mask = [0, 0, 1, 1];
        var random = new Random(5);
        using var q = Upload(RandomValues(random, b * t * h * hs));
        using var k = Upload(RandomValues(random, b * t * kv * hs));
        using var v = Upload(RandomValues(random, b * t * kv * hs));
        using var dOut = Upload(RandomValues(random, b * t * h * hs));
        using var maskBuffer = Upload(mask);
        using var output = Poisoned(b * t * h * hs);
        using var lse = Poisoned(b * h * t);
        using var delta = Poisoned(b * h * t);
        using var dQ = Poisoned(b * t * h * hs);
        using var dK = Poisoned(b * t * kv * hs);
        using var dV = Poisoned(b * t * kv * hs);
        Kernels.Attention.Forward(output.View, lse.View, q.View, new(k.View, v.View), maskBuffer.View, new(b, t, h, kv, hs));
        Kernels.Attention.Backward(dQ.View, new(dK.View, dV.View), delta.View, dOut.View, q.View, new(k.View, v.View), maskBuffer.View, output.View, lse.View,
            new(b, t, h, kv, hs));
        int maskedQueryValues = 2 * h * hs; // queries 0 and 1, all heads
        Assert.That(Download(output)[..maskedQueryValues], Has.All.EqualTo(0f));
        Assert.That(Download(dQ)[..maskedQueryValues], Has.All.EqualTo(0f));
        Assert.That(Download(dK)[..(2 * kv * hs)], Has.All.EqualTo(0f), "padding keys get no gradient");
        Assert.That(Download(dV)[..(2 * kv * hs)], Has.All.EqualTo(0f), "padding keys get no gradient");
        // Query 2 sees a single valid key (softmax ≡ 1, so dQ ≈ 0 up to rounding); query 3 sees two.
        Assert.That(Download(dQ)[maskedQueryValues..], Has.All.Not.NaN);
        Assert.That(Download(dQ)[(3 * h * hs)..], Has.All.Not.EqualTo(0f));
        Assert.That(Download(dK)[(2 * kv * hs)..], Has.All.Not.NaN);
    }

    [Test]
    public void HeadsNotAMultipleOfKvHeadsAreRejected()
    {
        using var buffer = Poisoned(3 * 2);
        using var mask = Upload(new int[2]);
        var error = Assert.Throws<KernelShapeException>(() =>
            Kernels.Attention.Forward(buffer.View, buffer.View, buffer.View, new(buffer.View, buffer.View), mask.View, new(1, 2, 3, 2, 1)));
        Assert.That(error!.Message, Does.Contain("H = 3").And.Contain("KV = 2"));
    }
}
