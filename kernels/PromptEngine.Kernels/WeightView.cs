using ILGPU;
using ILGPU.Runtime;
using Half = ILGPU.Half;

namespace PromptEngine.Kernels;

/// <summary>How frozen weight matrices are stored on the device. Kernels widen each weight to float32 as they read it
/// and accumulate in float32, so a 16-bit format halves the weights' memory and changes only the weights' rounding.</summary>
public enum WeightFormat
{
    /// <summary>IEEE float32: the reference path.</summary>
    F32,

    /// <summary>IEEE half (ILGPU's <see cref="Half"/>): 10 mantissa bits, range ±65504.</summary>
    F16,

    /// <summary>bfloat16 as raw 16-bit words (the upper half of a float32): 7 mantissa bits, float32's range; what
    /// Llama-family checkpoints ship in.</summary>
    Bf16,
}

/// <summary>A frozen weight matrix (or a row range of one) in one of the <see cref="WeightFormat"/>s: the view of
/// its format is set, the other two are empty. Converts implicitly from a float32 view.</summary>
public readonly struct WeightView
{
    WeightView(WeightFormat format, ArrayView<float> f32, ArrayView<Half> f16, ArrayView<ushort> bf16)
    {
        Format = format;
        F32 = f32;
        F16 = f16;
        Bf16 = bf16;
    }

    /// <summary>The storage format.</summary>
    public WeightFormat Format { get; }

    /// <summary>The float32 view (empty unless <see cref="Format"/> is <see cref="WeightFormat.F32"/>).</summary>
    public ArrayView<float> F32 { get; }

    /// <summary>The half view (empty unless <see cref="Format"/> is <see cref="WeightFormat.F16"/>).</summary>
    public ArrayView<Half> F16 { get; }

    /// <summary>The bfloat16 words (empty unless <see cref="Format"/> is <see cref="WeightFormat.Bf16"/>).</summary>
    public ArrayView<ushort> Bf16 { get; }

    /// <summary>Elements (weights, not bytes).</summary>
    public long Length => Format switch { WeightFormat.F16 => F16.Length, WeightFormat.Bf16 => Bf16.Length, _ => F32.Length };

    /// <summary>A float32 weight.</summary>
    public static WeightView Of(ArrayView<float> view) => new(WeightFormat.F32, view, default, default);

    /// <summary>A half weight.</summary>
    public static WeightView Of(ArrayView<Half> view) => new(WeightFormat.F16, default, view, default);

    /// <summary>A bfloat16 weight, as raw words.</summary>
    public static WeightView OfBf16(ArrayView<ushort> view) => new(WeightFormat.Bf16, default, default, view);

    /// <summary>A float32 view is a float32 weight.</summary>
    public static implicit operator WeightView(ArrayView<float> view) => Of(view);

    /// <summary>Elements [offset, offset + length) in the same format (GPT-2's fused q/k/v rows).</summary>
    public WeightView SubView(long offset, long length) => Format switch
    {
        WeightFormat.F16 => Of(F16.SubView(offset, length)),
        WeightFormat.Bf16 => OfBf16(Bf16.SubView(offset, length)),
        _ => Of(F32.SubView(offset, length)),
    };

    /// <summary>Bytes per stored weight of <paramref name="format"/>.</summary>
    public static int BytesPerWeight(WeightFormat format) => format == WeightFormat.F32 ? 4 : 2;

    /// <summary>float32 to bfloat16, rounding to nearest even (NaN stays NaN): how a bf16 checkpoint is made from
    /// float32 weights.</summary>
    public static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value)) return (ushort)((bits >> 16) | 0x40);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    /// <summary>bfloat16 word to float32 (exact).</summary>
    public static float FromBf16(ushort word) => BitConverter.UInt32BitsToSingle((uint)word << 16);
}
