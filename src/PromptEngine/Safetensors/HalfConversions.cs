using System.Runtime.CompilerServices;

namespace PromptEngine.Safetensors;

/// <summary>Conversions between float and the two 16-bit float formats safetensors stores: IEEE 754
/// binary16 (F16: 1 sign, 5 exponent, 10 mantissa bits) and bfloat16 (BF16: the top 16 bits of a float32).
/// Widening is exact; narrowing rounds to nearest, ties to even, and keeps NaN a NaN.</summary>
public static class HalfConversions
{
    /// <summary>F16 bits → float (exact, including subnormals, ±inf and NaN).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float F16ToFloat(ushort bits) => (float)BitConverter.UInt16BitsToHalf(bits);

    /// <summary>BF16 bits → float (exact: the bits become the top half of a float32).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float BF16ToFloat(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>float → F16 bits, round to nearest even; overflow becomes ±inf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToF16(float value) => BitConverter.HalfToUInt16Bits((Half)value);

    /// <summary>float → BF16 bits, round to nearest even; overflow becomes ±inf; NaN stays a (quiet) NaN
    /// with its sign, since plain rounding could carry a NaN's payload into infinity.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ushort FloatToBF16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x0040);
        uint roundingBias = 0x7FFFu + ((bits >> 16) & 1u);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>Widens F16 bits to floats; the spans must have equal length.</summary>
    public static void F16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        for (int i = 0; i < source.Length; i++) destination[i] = F16ToFloat(source[i]);
    }

    /// <summary>Widens BF16 bits to floats; the spans must have equal length.</summary>
    public static void BF16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        for (int i = 0; i < source.Length; i++) destination[i] = BF16ToFloat(source[i]);
    }

    /// <summary>Narrows floats to F16 bits; the spans must have equal length.</summary>
    public static void FloatToF16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        for (int i = 0; i < source.Length; i++) destination[i] = FloatToF16(source[i]);
    }

    /// <summary>Narrows floats to BF16 bits; the spans must have equal length.</summary>
    public static void FloatToBF16(ReadOnlySpan<float> source, Span<ushort> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        for (int i = 0; i < source.Length; i++) destination[i] = FloatToBF16(source[i]);
    }

    private static void RequireSameLength(int source, int destination)
    {
        if (source != destination)
            throw new ArgumentException($"source has {source} elements but destination has {destination}", nameof(destination));
    }
}
