using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary><see cref="AttentionPrefix"/> (run after <see cref="Attention"/>, as the engine runs them) against a
/// double-precision softmax over the prefix and token keys listed explicitly, and that reference against central
/// finite differences.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class AttentionPrefixTests(KernelShape shape) : KernelTestBase(shape)
{
    // As AttentionTests: probabilities carry ~1e-6 relative error from float exp/log over |s| < 2; the output is a
    // convex combination of O(1) values (1e-5); the backward sums up to B·T·(H/KV) ≈ 60 such terms for a prefix slot (1e-4).
    const double ForwardAtol = 1e-5, BackwardAtol = 1e-4, Rtol = 1e-5;

    // Row 0: left padding (queries 0 and 1 see no token key: only the prefix); row 1: masked keys in the middle and at the end.
    static int[] Mask(int b, int t)
    {
        var mask = new int[b * t];
        for (int batch = 0; batch < b; batch++)
            for (int j = 0; j < t; j++)
                mask[batch * t + j] = batch % 2 == 0 ? (j < 2 ? 0 : 1) : (j == t / 2 || j == t - 1 ? 0 : 1);
        return mask;
    }

    [TestCase(2, 7, 4, 2, 5, 3)]   // grouped-query heads
    [TestCase(2, 5, 3, 1, 20, 1)]  // multi-query, one prefix slot, hs > the CPU device's group
    [TestCase(1, 19, 2, 2, 3, 18)] // plain multi-head, Pv > the CPU device's 16-thread group: several prefix chunks
    public void ForwardAndBackwardMatchReference(int b, int t, int h, int kv, int headSize, int prefix)
    {
        var random = new Random(b * 100000 + t * 1000 + h * 100 + kv * 10 + headSize + prefix);
        var q = RandomValues(random, b * t * h * headSize);
        var k = RandomValues(random, b * t * kv * headSize);
        var v = RandomValues(random, b * t * kv * headSize);
        var prefixK = RandomValues(random, prefix * kv * headSize);
        var prefixV = RandomValues(random, prefix * kv * headSize);
        var dOut = RandomValues(random, b * t * h * headSize);
        // The prefix gradient accumulates (across batches, like dPrompt): start it from values already there.
        var earlierDPrefixK = RandomValues(random, prefix * kv * headSize);
        var earlierDPrefixV = RandomValues(random, prefix * kv * headSize);
        var mask = Mask(b, t);
        var expectedOut = new double[q.Length];
        var expectedLse = new double[b * h * t];
        var (expectedDq, expectedDk, expectedDv) = (new double[q.Length], new double[k.Length], new double[v.Length]);
        var (expectedDPrefixK, expectedDPrefixV) = (new double[prefixK.Length], new double[prefixV.Length]);
        AttentionPrefixReference.Forward(expectedOut, expectedLse, q, k, v, mask, prefixK, prefixV, b, t, h, kv, headSize, prefix);
        AttentionPrefixReference.Backward(expectedDq, expectedDk, expectedDv, expectedDPrefixK, expectedDPrefixV, dOut, q, k, v, mask, prefixK, prefixV,
            b, t, h, kv, headSize, prefix);
        for (int i = 0; i < prefixK.Length; i++)
        {
            expectedDPrefixK[i] += (float)earlierDPrefixK[i];
            expectedDPrefixV[i] += (float)earlierDPrefixV[i];
        }

        using var qBuffer = Upload(q);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var prefixKBuffer = Upload(prefixK);
        using var prefixVBuffer = Upload(prefixV);
        using var dOutBuffer = Upload(dOut);
        using var maskBuffer = Upload(mask);
        using var outBuffer = Poisoned(q.Length);
        using var lseBuffer = Poisoned(b * h * t);
        using var deltaBuffer = Poisoned(b * h * t);
        using var dQBuffer = Poisoned(q.Length);
        using var dKBuffer = Poisoned(k.Length);
        using var dVBuffer = Poisoned(v.Length);
        using var dPrefixKBuffer = Upload(earlierDPrefixK);
        using var dPrefixVBuffer = Upload(earlierDPrefixV);
        // The engine's order: token attention, then the prefix merged in; backward likewise.
        Kernels.Attention.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, new(kBuffer.View, vBuffer.View), maskBuffer.View, new(b, t, h, kv, headSize));
        var dims = new AttentionDimensions(b, t, h, kv, headSize, prefix);
        var prefixKeysValues = new KeysValues(prefixKBuffer.View, prefixVBuffer.View);
        Kernels.AttentionPrefix.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, prefixKeysValues, dims);
        Kernels.Attention.Backward(dQBuffer.View, new(dKBuffer.View, dVBuffer.View), deltaBuffer.View, dOutBuffer.View, qBuffer.View,
            new(kBuffer.View, vBuffer.View), maskBuffer.View, outBuffer.View, lseBuffer.View, new(b, t, h, kv, headSize));
        Kernels.AttentionPrefix.Backward(dQBuffer.View, new KeysValues(dPrefixKBuffer.View, dPrefixVBuffer.View), dOutBuffer.View, qBuffer.View,
            prefixKeysValues, lseBuffer.View, deltaBuffer.View, dims);

        string name = $"{Shape} B{b} T{t} H{h} KV{kv} hs{headSize} Pv{prefix}";
        TensorAssert.Close($"AttentionPrefix.Forward out {name}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Forward lse {name}", Download(lseBuffer), expectedLse, ForwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Backward dQ {name}", Download(dQBuffer), expectedDq, BackwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Backward token dK {name}", Download(dKBuffer), expectedDk, BackwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Backward token dV {name}", Download(dVBuffer), expectedDv, BackwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Backward dPrefixK {name}", Download(dPrefixKBuffer), expectedDPrefixK, BackwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Backward dPrefixV {name}", Download(dPrefixVBuffer), expectedDPrefixV, BackwardAtol, Rtol);
    }

    [Test]
    public void FillCacheWritesThePrefixIntoTheFirstSlotsOfEveryRow()
    {
        const int b = 3, capacity = 6, kv = 2, headSize = 4, prefix = 2;
        var random = new Random(11);
        var prefixK = RandomValues(random, prefix * kv * headSize);
        var prefixV = RandomValues(random, prefix * kv * headSize);
        using var kCache = Poisoned(b * capacity * kv * headSize);
        using var vCache = Poisoned(b * capacity * kv * headSize);
        using var prefixKBuffer = Upload(prefixK);
        using var prefixVBuffer = Upload(prefixV);
        Kernels.AttentionPrefix.FillCache(new(kCache.View, vCache.View), new(prefixKBuffer.View, prefixVBuffer.View), b, capacity, kv, headSize, prefix);
        var (keys, values) = (Download(kCache), Download(vCache));
        int width = prefix * kv * headSize;
        for (int row = 0; row < b; row++)
        {
            long start = (long)row * capacity * kv * headSize;
            for (int e = 0; e < width; e++)
            {
                Assert.That(keys[start + e], Is.EqualTo((float)prefixK[e]), $"row {row} key element {e}");
                Assert.That(values[start + e], Is.EqualTo((float)prefixV[e]), $"row {row} value element {e}");
            }
            Assert.That(float.IsNaN(keys[start + width]), "slot Pv onwards is left for the tokens");
        }
    }

    [Test]
    public void WrongPrefixLengthIsRejectedNamingTheTensor()
    {
        using var buffer = Poisoned(2 * 3 * 2 * 4);
        using var shortPrefix = Poisoned(5);
        var error = Assert.Throws<KernelShapeException>(() =>
            Kernels.AttentionPrefix.Forward(buffer.View, buffer.View.SubView(0, 2 * 2 * 3), buffer.View, new KeysValues(shortPrefix.View, shortPrefix.View),
                new AttentionDimensions(2, 3, 2, 1, 4, 2)));
        Assert.That(error!.Message, Does.Contain("prefixK"));
    }

    /// <summary>A bank of D prefixes with a choice per row (several deep prompts in one batch): each row's output and lse
    /// equal the reference run on that row alone with its own prefix, and the cache fill copies each row's prefix.</summary>
    [Test]
    public void EachRowAttendsToItsOwnPrefixOfTheBank()
    {
        const int b = 3, t = 6, h = 4, kv = 2, headSize = 5, prefix = 2, banks = 3;
        int[] prefixOfRow = [2, 0, 1];
        var random = new Random(77);
        var q = RandomValues(random, b * t * h * headSize);
        var k = RandomValues(random, b * t * kv * headSize);
        var v = RandomValues(random, b * t * kv * headSize);
        var bankK = RandomValues(random, banks * prefix * kv * headSize);
        var bankV = RandomValues(random, banks * prefix * kv * headSize);
        var mask = Mask(b, t);
        int rowQ = t * h * headSize, rowK = t * kv * headSize, one = prefix * kv * headSize;
        var expectedOut = new double[q.Length];
        var expectedLse = new double[b * h * t];
        for (int row = 0; row < b; row++)
        {
            var outRow = new double[rowQ];
            var lseRow = new double[h * t];
            AttentionPrefixReference.Forward(outRow, lseRow, q[(row * rowQ)..((row + 1) * rowQ)], k[(row * rowK)..((row + 1) * rowK)],
                v[(row * rowK)..((row + 1) * rowK)], mask[(row * t)..((row + 1) * t)],
                bankK[(prefixOfRow[row] * one)..((prefixOfRow[row] + 1) * one)], bankV[(prefixOfRow[row] * one)..((prefixOfRow[row] + 1) * one)],
                1, t, h, kv, headSize, prefix);
            outRow.CopyTo(expectedOut, row * rowQ);
            lseRow.CopyTo(expectedLse, row * h * t);
        }

        using var qBuffer = Upload(q);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var bankKBuffer = Upload(bankK);
        using var bankVBuffer = Upload(bankV);
        using var maskBuffer = Upload(mask);
        using var choice = Upload(prefixOfRow);
        using var outBuffer = Poisoned(q.Length);
        using var lseBuffer = Poisoned(b * h * t);
        Kernels.Attention.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, new(kBuffer.View, vBuffer.View), maskBuffer.View, new(b, t, h, kv, headSize));
        Kernels.AttentionPrefix.Forward(outBuffer.View, lseBuffer.View, qBuffer.View, new KeysValues(bankKBuffer.View, bankVBuffer.View),
            new AttentionDimensions(b, t, h, kv, headSize, prefix), choice.View);
        TensorAssert.Close($"AttentionPrefix.Forward bank out {Shape}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        TensorAssert.Close($"AttentionPrefix.Forward bank lse {Shape}", Download(lseBuffer), expectedLse, ForwardAtol, Rtol);

        const int capacity = 4;
        using var kCache = Poisoned(b * capacity * kv * headSize);
        using var vCache = Poisoned(b * capacity * kv * headSize);
        Kernels.AttentionPrefix.FillCache(new(kCache.View, vCache.View), new(bankKBuffer.View, bankVBuffer.View), b, capacity, kv, headSize, prefix, choice.View);
        var (keys, values) = (Download(kCache), Download(vCache));
        for (int row = 0; row < b; row++)
            for (int i = 0; i < one; i++)
            {
                Assert.That(keys[row * capacity * kv * headSize + i], Is.EqualTo((float)bankK[prefixOfRow[row] * one + i]), $"key cache row {row} [{i}]");
                Assert.That(values[row * capacity * kv * headSize + i], Is.EqualTo((float)bankV[prefixOfRow[row] * one + i]), $"value cache row {row} [{i}]");
            }
    }
}
