using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

/// <summary>F16/BF16 conversions against known bit patterns and against an independent reference built
/// from the formats' definitions (sign · 2^(e−bias) · (1 + m/2^mbits), subnormals sign · 2^(1−bias−mbits) · m).</summary>
public class SafetensorsHalfConversionTests
{
    [TestCase((ushort)0x3C00, 1.0f)]
    [TestCase((ushort)0xC000, -2.0f)]
    [TestCase((ushort)0x3800, 0.5f)]
    [TestCase((ushort)0x3555, 0.333251953125f)]
    [TestCase((ushort)0x7BFF, 65504f)]
    [TestCase((ushort)0x0400, 6.103515625e-05f)]          // smallest normal, 2^-14
    [TestCase((ushort)0x0001, 5.9604644775390625e-08f)]   // smallest subnormal, 2^-24
    [TestCase((ushort)0x03FF, 6.0975551605224609e-05f)]   // largest subnormal, 1023 · 2^-24
    [TestCase((ushort)0x0000, 0f)]
    [TestCase((ushort)0x7C00, float.PositiveInfinity)]
    [TestCase((ushort)0xFC00, float.NegativeInfinity)]
    public void F16KnownPatterns(ushort bits, float expected)
    {
        Assert.That(HalfConversions.F16ToFloat(bits), Is.EqualTo(expected));
        Assert.That(HalfConversions.FloatToF16(expected), Is.EqualTo(bits));
    }

    [TestCase((ushort)0x3F80, 1.0f)]
    [TestCase((ushort)0xC000, -2.0f)]
    [TestCase((ushort)0x3EAB, 0.333984375f)]
    [TestCase((ushort)0x7F7F, 3.3895313892515355e+38f)]  // largest finite
    [TestCase((ushort)0x0080, 1.1754943508222875e-38f)]  // smallest normal, 2^-126
    [TestCase((ushort)0x0001, 9.1835496157991212e-41f)]  // smallest subnormal, 2^-133
    [TestCase((ushort)0x7F80, float.PositiveInfinity)]
    [TestCase((ushort)0xFF80, float.NegativeInfinity)]
    public void BF16KnownPatterns(ushort bits, float expected)
    {
        Assert.That(HalfConversions.BF16ToFloat(bits), Is.EqualTo(expected));
        Assert.That(HalfConversions.FloatToBF16(expected), Is.EqualTo(bits));
    }

    [Test]
    public void NegativeZeroAndNaNSurvive()
    {
        Assert.That(BitConverter.SingleToUInt32Bits(HalfConversions.F16ToFloat(0x8000)), Is.EqualTo(0x8000_0000u));
        Assert.That(BitConverter.SingleToUInt32Bits(HalfConversions.BF16ToFloat(0x8000)), Is.EqualTo(0x8000_0000u));
        Assert.That(HalfConversions.FloatToF16(-0f), Is.EqualTo((ushort)0x8000));
        Assert.That(HalfConversions.FloatToBF16(-0f), Is.EqualTo((ushort)0x8000));
        Assert.That(float.IsNaN(HalfConversions.F16ToFloat(0x7E00)), Is.True);
        Assert.That(float.IsNaN(HalfConversions.F16ToFloat(0x7C01)), Is.True);
        Assert.That(float.IsNaN(HalfConversions.BF16ToFloat(0x7FC0)), Is.True);
        Assert.That(float.IsNaN(HalfConversions.BF16ToFloat(0xFF81)), Is.True);
        // A NaN whose payload lies only in the low 16 bits would round to infinity without the NaN rule.
        var lowPayloadNaN = BitConverter.UInt32BitsToSingle(0x7F80_0001);
        Assert.That(float.IsNaN(HalfConversions.BF16ToFloat(HalfConversions.FloatToBF16(lowPayloadNaN))), Is.True);
        Assert.That(float.IsNaN(HalfConversions.F16ToFloat(HalfConversions.FloatToF16(float.NaN))), Is.True);
    }

    [Test]
    public void EveryF16PatternWidensLikeTheDefinition()
    {
        for (int bits = 0; bits <= 0xFFFF; bits++)
            AssertSame(HalfConversions.F16ToFloat((ushort)bits), F16Reference((ushort)bits), bits);
    }

    [Test]
    public void EveryBF16PatternWidensLikeTheDefinition()
    {
        for (int bits = 0; bits <= 0xFFFF; bits++)
            AssertSame(HalfConversions.BF16ToFloat((ushort)bits), BF16Reference((ushort)bits), bits);
    }

    [Test]
    public void SpanConversionsMatchScalar()
    {
        var bits = Enumerable.Range(0, 0x10000).Select(i => (ushort)i).ToArray();
        var f16 = new float[bits.Length];
        var bf16 = new float[bits.Length];
        HalfConversions.F16ToFloat(bits, f16);
        HalfConversions.BF16ToFloat(bits, bf16);
        var backF16 = new ushort[bits.Length];
        var backBF16 = new ushort[bits.Length];
        HalfConversions.FloatToF16(f16, backF16);
        HalfConversions.FloatToBF16(bf16, backBF16);
        for (int i = 0; i < bits.Length; i++)
        {
            AssertSame(f16[i], F16Reference(bits[i]), i);
            AssertSame(bf16[i], BF16Reference(bits[i]), i);
            // Widening then narrowing is the identity on every non-NaN pattern.
            if (!float.IsNaN(f16[i])) Assert.That(backF16[i], Is.EqualTo(bits[i]), $"F16 0x{i:X4}");
            if (!float.IsNaN(bf16[i])) Assert.That(backBF16[i], Is.EqualTo(bits[i]), $"BF16 0x{i:X4}");
        }
        Assert.Throws<ArgumentException>(() => HalfConversions.F16ToFloat(new ushort[3], new float[2]));
    }

    [Test]
    public void NarrowingRoundsToNearestEvenLikeAReferenceSearch()
    {
        var random = new Random(1234);
        var inputs = new List<float> { 65504f, 65519.99f, 65520f, 65536f, 1e-8f, 2.98e-8f, 2.9802322e-8f, 3e-38f, 3.4e38f, float.MaxValue };
        // Exact ties: midpoints between neighbouring patterns must go to the even one.
        inputs.Add((float)((F16Reference(0x3C00) + F16Reference(0x3C01)) / 2));
        inputs.Add((float)((F16Reference(0x3C01) + F16Reference(0x3C02)) / 2));
        inputs.Add(BitConverter.UInt32BitsToSingle(0x3F80_8000));  // BF16 tie, even below
        inputs.Add(BitConverter.UInt32BitsToSingle(0x3F81_8000));  // BF16 tie, even above
        for (int i = 0; i < 20000; i++)
        {
            // Random bit patterns cover every exponent; the second kind concentrates on the F16 range.
            inputs.Add(BitConverter.UInt32BitsToSingle((uint)random.NextInt64(0, 1L << 32)));
            inputs.Add((float)((random.NextDouble() * 2 - 1) * Math.Pow(2, random.Next(-26, 17))));
        }
        foreach (var value in inputs)
        {
            if (float.IsNaN(value)) continue;
            Assert.That(HalfConversions.FloatToF16(value), Is.EqualTo(NearestEven(value, F16Reference, 0x7C00, 0x8000)), $"F16 of {value:R}");
            Assert.That(HalfConversions.FloatToBF16(value), Is.EqualTo(NearestEven(value, BF16Reference, 0x7F80, 0x8000)), $"BF16 of {value:R}");
        }
    }

    internal static double F16Reference(ushort bits) => Reference(bits, exponentBits: 5, mantissaBits: 10);

    internal static double BF16Reference(ushort bits) => Reference(bits, exponentBits: 8, mantissaBits: 7);

    private static double Reference(ushort bits, int exponentBits, int mantissaBits)
    {
        int bias = (1 << (exponentBits - 1)) - 1;
        int sign = bits >> 15;
        int exponent = (bits >> mantissaBits) & ((1 << exponentBits) - 1);
        int mantissa = bits & ((1 << mantissaBits) - 1);
        double magnitude =
            exponent == 0 ? mantissa * Math.Pow(2, 1 - bias - mantissaBits)
            : exponent == (1 << exponentBits) - 1 ? (mantissa == 0 ? double.PositiveInfinity : double.NaN)
            : (1 + mantissa / Math.Pow(2, mantissaBits)) * Math.Pow(2, exponent - bias);
        return sign == 1 ? -magnitude : magnitude;
    }

    /// <summary>The nearest pattern by exhaustive binary search over positive patterns, ties to even;
    /// the infinity pattern counts as the next power of two so that overflow rounds as IEEE 754 says.</summary>
    private static ushort NearestEven(float value, Func<ushort, double> decode, ushort infinity, ushort signBit)
    {
        double magnitude = Math.Abs((double)value);
        double largest = decode((ushort)(infinity - 1)), ulp = largest - decode((ushort)(infinity - 2));
        double ValueOf(int pattern) => pattern == infinity ? largest + ulp : decode((ushort)pattern);
        int low = 0, high = infinity;
        while (low < high)
        {
            int mid = (low + high + 1) / 2;
            if (ValueOf(mid) <= magnitude) low = mid; else high = mid - 1;
        }
        int result = low;
        if (low < infinity)
        {
            double below = magnitude - ValueOf(low), above = ValueOf(low + 1) - magnitude;
            if (above < below || (above == below && (low & 1) == 1)) result = low + 1;
        }
        return (ushort)(value < 0 || (value == 0 && float.IsNegative(value)) ? result | signBit : result);
    }

    private static void AssertSame(float actual, double expected, int bits)
    {
        if (double.IsNaN(expected))
            Assert.That(float.IsNaN(actual), Is.True, $"0x{bits:X4} should be NaN");
        else
            Assert.That(BitConverter.SingleToUInt32Bits(actual), Is.EqualTo(BitConverter.SingleToUInt32Bits((float)expected)), $"0x{bits:X4}: got {actual:R}, expected {expected:R}");
    }
}
