using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;
using IlgpuHalf = ILGPU.Half;

namespace PromptEngine.Tests.Kernels;

/// <summary><see cref="Linear"/>'s <see cref="WeightView"/> launchers with half and bfloat16 weights, in both shapes
/// (CPU: the generic micro-tile; GPU: <see cref="LinearBlocked"/>'s 16-bit kernels), against the float32 path, and the
/// on-device weight generator <see cref="RandomFill"/> against its host formula.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class SixteenBitWeightTests(KernelShape shape) : KernelTestBase(shape)
{
    /// <summary>Widened to float32, the 16-bit weights are the float32 kernel's input, and both kernels multiply and add
    /// in the same order: the outputs must be bit-identical (tolerance 0).</summary>
    [TestCase(WeightFormat.Bf16, 37, 45, 29)]
    [TestCase(WeightFormat.F16, 37, 45, 29)]
    [TestCase(WeightFormat.Bf16, 5, 18, 7)]
    [TestCase(WeightFormat.F16, 1, 3, 9)]
    public void SixteenBitWeightsGiveTheFloat32PathOnTheWidenedWeights(WeightFormat format, int n, int k, int m)
    {
        var random = new Random(n * 31 + k + (int)format);
        var x = RandomValues(random, n * k);
        var w = RandomValues(random, m * k, 0.3);
        var bias = RandomValues(random, m, 0.1);
        var dY = RandomValues(random, n * m);
        var dXStart = RandomValues(random, n * k);
        var (wide, narrow) = Narrow(w, format);

        var (y16, dX16) = Run(WeightView16(format, narrow), x, bias, dY, dXStart, n, k, m);
        using var wideBuffer = Upload(wide);
        var (y32, dX32) = Run(WeightView.Of(wideBuffer.View), x, bias, dY, dXStart, n, k, m);
        Assert.That(y16, Is.EqualTo(y32), "forward, 16-bit weights vs float32 on the widened weights");
        Assert.That(dX16, Is.EqualTo(dX32), "backward (accumulating), 16-bit weights vs float32 on the widened weights");

        // Against the double reference on the widened weights: float32 accumulation of K products (as LinearTests).
        var expected = new double[n * m];
        LinearReference.Forward(expected, x, wide, bias, n, k, m);
        TensorAssert.Close($"{format} forward vs double reference", y16, expected, atol: 1e-6 * k, rtol: 1e-5);
    }

    /// <summary>Against float32 weights before rounding: each weight moves by at most 2⁻⁹ (bfloat16) or 2⁻¹¹ (half) of
    /// itself, and on random inputs the errors of a K-long dot product add like a random walk, so ‖Δ‖/‖y‖ stays near
    /// 2⁻⁹/√3 ≈ 1.1e-3 (bf16) or 2.8e-4 (f16). Tolerances 4e-3 and 1e-3 leave a margin over that and still catch a
    /// weight read from the wrong place (relative error ~1).</summary>
    [TestCase(WeightFormat.Bf16, 4e-3)]
    [TestCase(WeightFormat.F16, 1e-3)]
    public void SixteenBitWeightsStayCloseToTheUnroundedFloat32Weights(WeightFormat format, double tolerance)
    {
        const int n = 24, k = 96, m = 40;
        var random = new Random(7 + (int)format);
        var x = RandomValues(random, n * k);
        var w = RandomValues(random, m * k, 0.2);
        var dY = RandomValues(random, n * m);
        var (_, narrow) = Narrow(w, format);
        var (y16, dX16) = Run(WeightView16(format, narrow), x, null, dY, null, n, k, m);
        using var wBuffer = Upload(w);
        var (y32, dX32) = Run(WeightView.Of(wBuffer.View), x, null, dY, null, n, k, m);
        Assert.That(RelativeError(y16, y32), Is.LessThan(tolerance), "forward");
        Assert.That(RelativeError(dX16, dX32), Is.LessThan(tolerance), "backward");
        Assert.That(RelativeError(y16, y32), Is.GreaterThan(0), "the weights were rounded, so the outputs must differ");
    }

    [Test]
    public void WrongWeightLengthIsNamed()
    {
        using var x = Poisoned(6);
        using var y = Poisoned(6);
        using var w = Kernels.Accelerator.Allocate1D<ushort>(5);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.Linear.Forward(y.View, x.View, WeightView.OfBf16(w.View), default, 2, 3, 3));
        Assert.That(error!.Message, Does.Contain("W has 5 elements").And.Contain("M*K = 9"));
    }

    /// <summary>The generator is a pure function of (seed, index): the device's values equal the host formula exactly
    /// (then rounded to the storage format), lie in the interval, and spread over it.</summary>
    [TestCase(WeightFormat.F32)]
    [TestCase(WeightFormat.F16)]
    [TestCase(WeightFormat.Bf16)]
    public void RandomFillWritesTheHostFormula(WeightFormat format)
    {
        const int count = 1001;
        const ulong seed = 42;
        const float centre = 0.5f, radius = 0.25f;
        var expected = Enumerable.Range(0, count).Select(i => RandomFill.Value(seed, i, centre, radius)).ToArray();
        float[] actual;
        switch (format)
        {
            case WeightFormat.F16:
                using (var buffer = Kernels.Accelerator.Allocate1D<IlgpuHalf>(count))
                {
                    Kernels.RandomFill.Uniform(WeightView.Of(buffer.View), seed, centre, radius);
                    Kernels.Synchronize();
                    actual = Array.ConvertAll(buffer.GetAsArray1D(), v => (float)v);
                }
                expected = Array.ConvertAll(expected, v => (float)(IlgpuHalf)v);
                break;
            case WeightFormat.Bf16:
                using (var buffer = Kernels.Accelerator.Allocate1D<ushort>(count))
                {
                    Kernels.RandomFill.Uniform(WeightView.OfBf16(buffer.View), seed, centre, radius);
                    Kernels.Synchronize();
                    actual = Array.ConvertAll(buffer.GetAsArray1D(), WeightView.FromBf16);
                }
                expected = Array.ConvertAll(expected, v => WeightView.FromBf16(WeightView.ToBf16(v)));
                break;
            default:
                using (var buffer = Poisoned(count))
                {
                    Kernels.RandomFill.Uniform(WeightView.Of(buffer.View), seed, centre, radius);
                    actual = Download(buffer);
                }
                break;
        }
        Assert.That(actual, Is.EqualTo(expected));
        Assert.That(actual.Min(), Is.GreaterThanOrEqualTo(centre - radius).And.LessThan(centre - 0.9f * radius));
        Assert.That(actual.Max(), Is.LessThanOrEqualTo(centre + radius).And.GreaterThan(centre + 0.9f * radius));
        Assert.That(actual.Average(), Is.EqualTo(centre).Within(0.05 * radius), "uniform: the mean of 1001 draws is within ~2σ of the centre");
        Assert.That(RandomFill.Value(seed + 1, 0, centre, radius), Is.Not.EqualTo(expected[0]), "another seed, another value");
    }

    static (double[] Wide, object Narrow) Narrow(double[] w, WeightFormat format) => format == WeightFormat.F16
        ? (Array.ConvertAll(w, v => (double)(float)(IlgpuHalf)(float)v), Array.ConvertAll(w, v => (IlgpuHalf)(float)v))
        : (Array.ConvertAll(w, v => (double)WeightView.FromBf16(WeightView.ToBf16((float)v))), Array.ConvertAll(w, v => WeightView.ToBf16((float)v)));

    readonly List<IDisposable> buffers = [];

    WeightView WeightView16(WeightFormat format, object narrow)
    {
        if (format == WeightFormat.F16)
        {
            var buffer = Kernels.Accelerator.Allocate1D((IlgpuHalf[])narrow);
            buffers.Add(buffer);
            return WeightView.Of(buffer.View);
        }
        var words = Kernels.Accelerator.Allocate1D((ushort[])narrow);
        buffers.Add(words);
        return WeightView.OfBf16(words.View);
    }

    [TearDown]
    public void FreeBuffers()
    {
        foreach (var b in buffers) b.Dispose();
        buffers.Clear();
    }

    /// <summary>Forward Y = X·Wᵀ + b, then dX = start + dY·W (accumulating) or dX = dY·W when no start is given.</summary>
    (float[] Y, float[] DX) Run(WeightView w, double[] x, double[]? bias, double[] dY, double[]? dXStart, int n, int k, int m)
    {
        using var xBuffer = Upload(x);
        using var bBuffer = bias is null ? null : Upload(bias);
        using var dYBuffer = Upload(dY);
        using var yBuffer = Poisoned((long)n * m);
        using var dXBuffer = dXStart is null ? Poisoned((long)n * k) : Upload(dXStart);
        Kernels.Linear.Forward(yBuffer.View, xBuffer.View, w, bBuffer?.View ?? default, n, k, m);
        Kernels.Linear.Backward(dXBuffer.View, dYBuffer.View, w, n, k, m, accumulate: dXStart is not null);
        return (Download(yBuffer), Download(dXBuffer));
    }

    static double RelativeError(float[] actual, float[] expected)
    {
        double diff = 0, norm = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            diff += Math.Pow((double)actual[i] - expected[i], 2);
            norm += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(diff / norm);
    }
}
