using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

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

    /// <summary>Widens F16 bits to floats; the spans must have equal length. Vectorized where the
    /// hardware allows (loading F16 checkpoints is otherwise bound by this loop).</summary>
    public static void F16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        int i = 0;
        if (Vector128.IsHardwareAccelerated)
        {
            ref ushort from = ref MemoryMarshal.GetReference(source);
            ref float to = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 8; i += 8)
            {
                var (low, high) = Vector128.Widen(Vector128.LoadUnsafe(ref from, (nuint)i));
                F16ToFloatBits(low).AsSingle().StoreUnsafe(ref to, (nuint)i);
                F16ToFloatBits(high).AsSingle().StoreUnsafe(ref to, (nuint)(i + 4));
            }
        }
        for (; i < source.Length; i++) destination[i] = F16ToFloat(source[i]);
    }

    /// <summary>Widens BF16 bits to floats; the spans must have equal length. Vectorized where the
    /// hardware allows.</summary>
    public static void BF16ToFloat(ReadOnlySpan<ushort> source, Span<float> destination)
    {
        RequireSameLength(source.Length, destination.Length);
        int i = 0;
        if (Vector128.IsHardwareAccelerated)
        {
            ref ushort from = ref MemoryMarshal.GetReference(source);
            ref float to = ref MemoryMarshal.GetReference(destination);
            for (; i <= source.Length - 8; i += 8)
            {
                var (low, high) = Vector128.Widen(Vector128.LoadUnsafe(ref from, (nuint)i));
                Vector128.ShiftLeft(low, 16).AsSingle().StoreUnsafe(ref to, (nuint)i);
                Vector128.ShiftLeft(high, 16).AsSingle().StoreUnsafe(ref to, (nuint)(i + 4));
            }
        }
        for (; i < source.Length; i++) destination[i] = BF16ToFloat(source[i]);
    }

    /// <summary>F16 → float32 bits, four lanes at once. Moving exponent and mantissa up by 13 bits and
    /// rebiasing the exponent (15 → 127) is exact for normal numbers; infinities and NaNs get the
    /// exponent pushed to 255; subnormals are rebuilt as (1.m − 1) · 2^−14 by a float subtraction,
    /// which is exact because the result is representable.</summary>
    private static Vector128<uint> F16ToFloatBits(Vector128<uint> half)
    {
        var shifted = Vector128.ShiftLeft(half & Vector128.Create(0x7FFFu), 13);
        var exponent = shifted & Vector128.Create(0x0F80_0000u);  // the F16 exponent field, moved
        var bits = shifted + Vector128.Create((127u - 15u) << 23);
        var isInfOrNaN = Vector128.Equals(exponent, Vector128.Create(0x0F80_0000u));
        var isZeroOrSubnormal = Vector128.Equals(exponent, Vector128<uint>.Zero);
        bits += isInfOrNaN & Vector128.Create((128u - 16u) << 23);
        var subnormal = ((bits + Vector128.Create(1u << 23)).AsSingle() - Vector128.Create(113u << 23).AsSingle()).AsUInt32();
        bits = Vector128.ConditionalSelect(isZeroOrSubnormal, subnormal, bits);
        return bits | Vector128.ShiftLeft(half & Vector128.Create(0x8000u), 16);
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
