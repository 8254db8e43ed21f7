using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>The FlashAttention-style GPU kernels on the CPU device, at forced block edges so that every row spans
/// several key blocks and every block has ragged edges, against the double reference (forward, lse and all three
/// gradients), with left padding, masked keys in the middle and grouped-query heads.</summary>
public sealed class FlashAttentionTests() : KernelTestBase(KernelShape.Gpu)
{
    // As AttentionTests: outputs are convex combinations of O(1) values (1e-5); the backward sums T·(H/KV)
    // products of such terms (5e-5).
    const double ForwardAtol = 1e-5, BackwardAtol = 5e-5, Rtol = 1e-5;

    static int[] Mask(int b, int t)
    {
        var mask = new int[b * t];
        for (int batch = 0; batch < b; batch++)
            for (int j = 0; j < t; j++)
                mask[batch * t + j] = batch % 2 == 0 ? (j < 2 ? 0 : 1) : (j == t / 2 || j == t - 1 ? 0 : 1);
        return mask;
    }

    [TearDown]
    public void AutomaticBlock() => Kernels.FlashAttention.BlockOverride = 0;

    [TestCase(2, 7, 4, 2, 5, 2)]    // grouped-query heads, 4 key blocks per late row
    [TestCase(2, 9, 3, 1, 20, 4)]   // multi-query, hs > the 16-thread group
    [TestCase(1, 19, 2, 2, 3, 8)]   // several blocks, ragged last block
    [TestCase(1, 19, 2, 2, 3, 16)]  // the automatic edge on the CPU device
    [TestCase(2, 5, 2, 1, 4, 1)]    // one row per block
    public void ForwardAndBackwardMatchReference(int b, int t, int h, int kv, int headSize, int block)
    {
        Kernels.FlashAttention.BlockOverride = block;
        var random = new Random(b * 10000 + t * 100 + h * 10 + kv + headSize + block);
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
        var flash = Kernels.FlashAttention;
        var dims = new AttentionDimensions(b, t, h, kv, headSize);
        flash.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, new(kBuffer.View, vBuffer.View), maskBuffer.View, dims);
        flash.Backward(dQBuffer.View, new(dKBuffer.View, dVBuffer.View), deltaBuffer.View, dOutBuffer.View, qBuffer.View,
            new(kBuffer.View, vBuffer.View), maskBuffer.View, outBuffer.View, lseBuffer.View, dims);

        string name = $"block {block} B{b} T{t} H{h} KV{kv} hs{headSize}";
        TensorAssert.Close($"FlashAttention.Forward out {name}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        var lse = Download(lseBuffer);
        for (int i = 0; i < lse.Length; i++)
            if (double.IsPositiveInfinity(expectedLse[i]))
            {
                Assert.That(lse[i], Is.EqualTo(float.PositiveInfinity), $"lse[{i}] of a fully masked row");
                (lse[i], expectedLse[i]) = (0, 0);
            }
        TensorAssert.Close($"FlashAttention.Forward lse {name}", lse, expectedLse, ForwardAtol, Rtol);
        TensorAssert.Close($"FlashAttention.Backward dQ {name}", Download(dQBuffer), expectedDq, BackwardAtol, Rtol);
        TensorAssert.Close($"FlashAttention.Backward dK {name}", Download(dKBuffer), expectedDk, BackwardAtol, Rtol);
        TensorAssert.Close($"FlashAttention.Backward dV {name}", Download(dVBuffer), expectedDv, BackwardAtol, Rtol);
    }

    [Test]
    public void HeadSizeTooLargeForSharedMemoryIsRejected()
    {
        // A GPU's default 48 KB per group: one single-row block of hs = 4000 needs 4·4001 + 4 floats, 64 KB.
        Kernels.FlashAttention.SharedMemoryBytesOverride = 48 * 1024;
        try
        {
            const int hs = 4000;
            using var big = Poisoned(hs);
            using var lse = Poisoned(1);
            using var mask = Upload(new int[1]);
            var error = Assert.Throws<KernelShapeException>(() =>
                Kernels.FlashAttention.Forward(big.View, lse.View, big.View, new(big.View, big.View), mask.View, new(1, 1, 1, 1, hs)));
            Assert.That(error!.Message, Does.Contain($"hs = {hs}").And.Contain("49152 bytes"));
        }
        finally { Kernels.FlashAttention.SharedMemoryBytesOverride = 0; }
    }

    [Test]
    public void UnderA48KilobyteLimitHeadSize64StillMatchesTheReference()
    {
        // The block edges a GPU would get at hs = 64 with 48 KB (32 forward; 16 for the key kernel's six tiles),
        // here capped by the CPU device's 16-thread group: still several blocks over T = 37.
        Kernels.FlashAttention.SharedMemoryBytesOverride = 48 * 1024;
        try { ForwardAndBackwardMatchReference(1, 37, 2, 1, 64, 0); }
        finally { Kernels.FlashAttention.SharedMemoryBytesOverride = 0; }
    }
}
