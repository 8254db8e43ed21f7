using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;
using IlgpuHalf = ILGPU.Half;

namespace PromptEngine.Tests.Kernels;

/// <summary>The register-blocked GPU Linear kernels on the CPU device (4×4 groups, 16×16 output blocks), with float32,
/// half and bfloat16 weights, against the double reference. Sizes straddle block and slice edges (16 and 16).</summary>
public sealed class LinearBlockedTests() : KernelTestBase(KernelShape.Gpu)
{
    // As LinearTests: float accumulation of K products of magnitude < 1. The 16-bit cases compare against the
    // reference run on the rounded weights, so only float32 accumulation error remains.
    static double Atol(int reduction) => 1e-6 * reduction;
    const double Rtol = 1e-5;

    public enum Weights { F32, F16, Bf16 }

    /// <summary>bfloat16 by round-to-nearest-even of the float32 bits (finite inputs).</summary>
    internal static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    internal static float FromBf16(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>The weights as the kernel will see them after widening.</summary>
    static double[] Rounded(double[] w, Weights format) => format switch
    {
        Weights.F16 => Array.ConvertAll(w, v => (double)(float)(IlgpuHalf)(float)v),
        Weights.Bf16 => Array.ConvertAll(w, v => (double)FromBf16(ToBf16((float)v))),
        _ => w,
    };

    [Test]
    public void Bf16RoundingIsTheUpperHalfOfFloat32()
    {
        Assert.That(ToBf16(1f), Is.EqualTo(0x3F80));
        Assert.That(FromBf16(ToBf16(-2.5f)), Is.EqualTo(-2.5f));
        Assert.That(FromBf16(ToBf16(1f + 1f / 256)), Is.EqualTo(1f), "ties round to even");
        Assert.That(FromBf16(ToBf16(1f + 3f / 256)), Is.EqualTo(1f + 4f / 256), "ties round to even");
    }

    [TestCase(7, 13, 9, true, Weights.F32)]
    [TestCase(1, 5, 3, false, Weights.F32)]
    [TestCase(37, 45, 29, true, Weights.F32)]   // several output blocks, three K slices, ragged edges
    [TestCase(33, 16, 17, false, Weights.F32)]  // K exactly one slice
    [TestCase(37, 45, 29, true, Weights.F16)]
    [TestCase(18, 21, 11, false, Weights.F16)]
    [TestCase(37, 45, 29, true, Weights.Bf16)]
    [TestCase(18, 21, 11, false, Weights.Bf16)]
    public void ForwardMatchesReference(int n, int k, int m, bool withBias, Weights format)
    {
        var random = new Random(n * 1000 + k * 10 + m + (int)format);
        var x = RandomValues(random, n * k);
        var w = Rounded(RandomValues(random, m * k), format);
        var b = withBias ? RandomValues(random, m) : null;
        var expected = new double[n * m];
        LinearReference.Forward(expected, x, w, b, n, k, m);

        using var xBuffer = Upload(x);
        using var bBuffer = b is null ? null : Upload(b);
        using var yBuffer = Poisoned(n * m);
        var bias = bBuffer?.View ?? default;
        switch (format)
        {
            case Weights.F16:
                using (var wBuffer = Kernels.Accelerator.Allocate1D(Array.ConvertAll(w, v => (IlgpuHalf)(float)v)))
                {
                    Kernels.LinearBlocked.ForwardF16(yBuffer.View, xBuffer.View, wBuffer.View, bias, n, k, m);
                    Kernels.Synchronize();
                }
                break;
            case Weights.Bf16:
                using (var wBuffer = Kernels.Accelerator.Allocate1D(Array.ConvertAll(w, v => ToBf16((float)v))))
                {
                    Kernels.LinearBlocked.ForwardBf16(yBuffer.View, xBuffer.View, wBuffer.View, bias, n, k, m);
                    Kernels.Synchronize();
                }
                break;
            default:
                using (var wBuffer = Upload(w))
                {
                    Kernels.LinearBlocked.Forward(yBuffer.View, xBuffer.View, wBuffer.View, bias, n, k, m);
                    Kernels.Synchronize();
                }
                break;
        }
        TensorAssert.Close($"LinearBlocked.Forward {format} {n}x{k}x{m}", Download(yBuffer), expected, Atol(k), Rtol);
    }

    [TestCase(7, 13, 9, false, Weights.F32)]
    [TestCase(37, 45, 29, false, Weights.F32)]
    [TestCase(37, 45, 29, true, Weights.F32)]
    [TestCase(37, 45, 29, true, Weights.F16)]
    [TestCase(20, 17, 35, false, Weights.F16)]
    [TestCase(37, 45, 29, true, Weights.Bf16)]
    [TestCase(20, 17, 35, false, Weights.Bf16)]
    public void BackwardMatchesReference(int n, int k, int m, bool accumulate, Weights format)
    {
        var random = new Random(n * 1000 + k * 10 + m + 7 * (int)format + 1);
        var dY = RandomValues(random, n * m);
        var w = Rounded(RandomValues(random, m * k), format);
        var existing = RandomValues(random, n * k);
        var expected = new double[n * k];
        LinearReference.Backward(expected, dY, w, n, k, m);
        if (accumulate)
            for (var i = 0; i < expected.Length; i++) expected[i] += existing[i];

        using var dYBuffer = Upload(dY);
        using var dXBuffer = accumulate ? Upload(existing) : Poisoned(n * k);
        switch (format)
        {
            case Weights.F16:
                using (var wBuffer = Kernels.Accelerator.Allocate1D(Array.ConvertAll(w, v => (IlgpuHalf)(float)v)))
                {
                    Kernels.LinearBlocked.BackwardF16(dXBuffer.View, dYBuffer.View, wBuffer.View, n, k, m, accumulate);
                    Kernels.Synchronize();
                }
                break;
            case Weights.Bf16:
                using (var wBuffer = Kernels.Accelerator.Allocate1D(Array.ConvertAll(w, v => ToBf16((float)v))))
                {
                    Kernels.LinearBlocked.BackwardBf16(dXBuffer.View, dYBuffer.View, wBuffer.View, n, k, m, accumulate);
                    Kernels.Synchronize();
                }
                break;
            default:
                using (var wBuffer = Upload(w))
                {
                    Kernels.LinearBlocked.Backward(dXBuffer.View, dYBuffer.View, wBuffer.View, n, k, m, accumulate);
                    Kernels.Synchronize();
                }
                break;
        }
        TensorAssert.Close($"LinearBlocked.Backward{(accumulate ? "+=" : "")} {format} {n}x{k}x{m}", Download(dXBuffer), expected, Atol(m), Rtol);
    }

    [Test]
    public void WrongWeightLengthNamesTheTensor()
    {
        using var x = Poisoned(6);
        using var y = Poisoned(4);
        using var w = Kernels.Accelerator.Allocate1D<ushort>(5);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.LinearBlocked.ForwardBf16(y.View, x.View, w.View, default, 2, 3, 2));
        Assert.That(error!.Message, Does.Contain("ForwardBf16").And.Contain("W has 5").And.Contain("M*K = 6"));
    }
}
