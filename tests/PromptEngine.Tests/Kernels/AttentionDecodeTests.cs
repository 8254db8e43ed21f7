using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class AttentionDecodeTests(KernelShape shape) : KernelTestBase(shape)
{
    // Scores are hs-term float dots scaled by 1/√hs (|s| < 2 here), exp in float: p carries ~1e-6 relative
    // error and the output is a convex combination of O(1) values, as in AttentionTests: 1e-5.
    const double Atol = 1e-5, Rtol = 1e-5;

    /// <summary>Random caches whose slots at or past each row's length hold NaN: a kernel that reads a single
    /// padding slot produces NaN and fails.</summary>
    static double[] Cache(Random random, int[] lengths, int capacity, int width)
    {
        var cache = RandomValues(random, lengths.Length * capacity * width);
        for (int b = 0; b < lengths.Length; b++)
            for (int j = Math.Max(0, lengths[b]); j < capacity; j++)
                Array.Fill(cache, double.NaN, (b * capacity + j) * width, width);
        return cache;
    }

    [TestCase(3, 7, 4, 2, 5, new[] { 7, 1, 4 })]          // grouped-query heads, a full row and a one-key row
    [TestCase(2, 40, 3, 1, 20, new[] { 37, 19 })]         // multi-query, hs and lengths > the 16-thread group: strided channels, several key chunks
    [TestCase(4, 6, 2, 2, 3, new[] { 0, 6, 2, 9 })]        // length 0 (zeros) and a length past Tmax (clamped to Tmax)
    public void ForwardMatchesReference(int b, int capacity, int h, int kv, int headSize, int[] lengths)
    {
        var random = new Random(b * 1000 + capacity * 10 + headSize);
        var q = RandomValues(random, b * h * headSize);
        var kCache = Cache(random, lengths, capacity, kv * headSize);
        var vCache = Cache(random, lengths, capacity, kv * headSize);
        var expected = new double[q.Length];
        AttentionDecodeReference.Forward(expected, q, kCache, vCache, lengths, b, capacity, h, kv, headSize);

        using var qBuffer = Upload(q);
        using var kBuffer = Upload(kCache);
        using var vBuffer = Upload(vCache);
        using var lengthBuffer = Upload(lengths);
        using var output = Poisoned(q.Length);
        Kernels.AttentionDecode.Forward(output.View, qBuffer.View, new(kBuffer.View, vBuffer.View), lengthBuffer.View, new(b, capacity, h, kv, headSize));
        var actual = Download(output);
        TensorAssert.Close($"AttentionDecode.Forward {Shape} B{b} Tmax{capacity} H{h} KV{kv} hs{headSize}", actual, expected, Atol, Rtol);
        for (int batch = 0; batch < b; batch++)
            if (lengths[batch] == 0)
                Assert.That(actual[(batch * h * headSize)..((batch + 1) * h * headSize)], Has.All.EqualTo(0f), $"row {batch} has no keys");
    }

    [Test]
    public void DecodingEachPositionReproducesFullCausalAttention()
    {
        // The full attention kernel's row i (causal, nothing masked) must equal one query at position i against a
        // cache of length i + 1 holding the same keys: the two ops agree on scores, scale and head grouping.
        const int b = 2, t = 9, h = 4, kv = 2, hs = 6;
        var random = new Random(42);
        var q = RandomValues(random, b * t * h * hs);
        var k = RandomValues(random, b * t * kv * hs);
        var v = RandomValues(random, b * t * kv * hs);
        using var qBuffer = Upload(q);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var mask = Upload(Enumerable.Repeat(1, b * t).ToArray());
        using var full = Poisoned(q.Length);
        using var lse = Poisoned(b * h * t);
        Kernels.Attention.Forward(full.View, lse.View, qBuffer.View, new(kBuffer.View, vBuffer.View), mask.View, new(b, t, h, kv, hs));
        var expected = Download(full);

        double maxError = 0;
        for (int i = 0; i < t; i++)
        {
            var query = new double[b * h * hs];
            for (int batch = 0; batch < b; batch++)
                Array.Copy(q, (batch * t + i) * h * hs, query, batch * h * hs, h * hs);
            using var queryBuffer = Upload(query);
            using var lengths = Upload(new[] { i + 1, i + 1 });
            using var output = Poisoned(query.Length);
            Kernels.AttentionDecode.Forward(output.View, queryBuffer.View, new(kBuffer.View, vBuffer.View), lengths.View, new(b, t, h, kv, hs));
            var actual = Download(output);
            for (int batch = 0; batch < b; batch++)
                for (int e = 0; e < h * hs; e++)
                {
                    double error = Math.Abs(actual[batch * h * hs + e] - expected[(batch * t + i) * h * hs + e]);
                    maxError = Math.Max(maxError, double.IsNaN(error) ? double.PositiveInfinity : error);
                }
        }
        TestContext.Out.WriteLine($"{Shape}: decode vs full attention, max |error| {maxError:E2}");
        Assert.That(maxError, Is.LessThanOrEqualTo(Atol));
    }

    [TestCase(1)] // a decode step
    [TestCase(5)] // a prefill of several positions
    public void AppendWritesOnlyTheSlots(int t)
    {
        const int b = 4, capacity = 8, kv = 2, hs = 3, width = kv * hs;
        int[] slots = [0, -1, 3, capacity - 2]; // row 1 idle; row 3 overflows for T > 2 (dropped)
        var random = new Random(t);
        var kCache = RandomValues(random, b * capacity * width);
        var vCache = RandomValues(random, b * capacity * width);
        var k = RandomValues(random, b * t * width);
        var v = RandomValues(random, b * t * width);
        using var kCacheBuffer = Upload(kCache);
        using var vCacheBuffer = Upload(vCache);
        using var kBuffer = Upload(k);
        using var vBuffer = Upload(v);
        using var slotBuffer = Upload(slots);
        Kernels.AttentionDecode.Append(new(kCacheBuffer.View, vCacheBuffer.View), new(kBuffer.View, vBuffer.View), slotBuffer.View, b, t, capacity, kv, hs);
        AttentionDecodeReference.Append(kCache, vCache, k, v, slots, b, t, capacity, kv, hs);
        // Exact: the append copies floats.
        TensorAssert.Close($"AttentionDecode.Append kCache {Shape} T{t}", Download(kCacheBuffer), kCache, 0, 0);
        TensorAssert.Close($"AttentionDecode.Append vCache {Shape} T{t}", Download(vCacheBuffer), vCache, 0, 0);
    }

    [Test]
    public void ShapeErrorsNameTheTensor()
    {
        using var buffer = Poisoned(2 * 3 * 4);
        using var lengths = Upload(new int[2]);
        var heads = Assert.Throws<KernelShapeException>(() =>
            Kernels.AttentionDecode.Forward(buffer.View, buffer.View, new(buffer.View, buffer.View), lengths.View, new(1, 2, 3, 2, 1)));
        Assert.That(heads!.Message, Does.Contain("H = 3").And.Contain("KV = 2"));
        using var cache = Poisoned(2 * 5 * 1 * 4);
        using var q = Poisoned(2 * 2 * 4);
        var cacheLength = Assert.Throws<KernelShapeException>(() =>
            Kernels.AttentionDecode.Forward(q.View, q.View, new(cache.View, buffer.View), lengths.View, new(2, 5, 2, 1, 4)));
        Assert.That(cacheLength!.Message, Does.Contain("vCache").And.Contain("B*Tmax*KV*hs = 40"));
        var tooLong = Assert.Throws<KernelShapeException>(() =>
            Kernels.AttentionDecode.Append(new(cache.View, cache.View), new(cache.View, cache.View), lengths.View, 2, 6, 5, 1, 4));
        Assert.That(tooLong!.Message, Does.Contain("T = 6").And.Contain("Tmax = 5"));
    }
}
