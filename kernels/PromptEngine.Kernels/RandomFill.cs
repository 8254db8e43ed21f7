using ILGPU;
using ILGPU.Runtime;
using Half = ILGPU.Half;

namespace PromptEngine.Kernels;

/// <summary>
/// Seeded uniform values written on the device: <c>x[i] = centre + radius · u(seed, i)</c> with u in [−1, 1), a pure
/// function of (seed, i) (<see cref="Value"/>), so a model's weights can be generated where they live (no upload of a
/// 13 GB checkpoint for a benchmark at Llama-2-7B shapes) and the same values recomputed on the host. Stored as float32,
/// half or bfloat16 (rounded to nearest even). No backward: these are frozen weights. Shapes: x (N) flat.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel per storage type for both shapes, contiguous chunks per thread.
/// u comes from SplitMix64's finaliser of seed·2⁶⁴/φ + i: 24 high bits, so every value is exact in float32.</remarks>
public sealed class RandomFill
{
    #region Kernels

    /// <summary>u(seed, i) in [−1, 1): SplitMix64's finaliser, 24 bits.</summary>
    public static float Unit(ulong seed, long index)
    {
        ulong z = seed * 0x9E3779B97F4A7C15UL + (ulong)index;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        z ^= z >> 31;
        return (int)(z >> 40) * (1f / (1 << 23)) - 1f;
    }

    /// <summary>The value element <paramref name="index"/> gets, in float32 (before any 16-bit rounding).</summary>
    public static float Value(ulong seed, long index, float centre, float radius) => centre + radius * Unit(seed, index);

    internal static void F32Kernel(ArrayView<float> x, ulong seed, float centre, float radius, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        for (long i = run.Start; i < run.End; i++)
            x[i] = Value(seed, i, centre, radius);
    }

    internal static void F16Kernel(ArrayView<Half> x, ulong seed, float centre, float radius, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        for (long i = run.Start; i < run.End; i++)
            x[i] = (Half)Value(seed, i, centre, radius);
    }

    internal static void Bf16Kernel(ArrayView<ushort> x, ulong seed, float centre, float radius, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        for (long i = run.Start; i < run.End; i++)
        {
            uint bits = Interop.FloatAsInt(Value(seed, i, centre, radius)); // finite by construction: no NaN case
            x[i] = (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ulong, float, float, long, int> f32;
    readonly Action<KernelConfig, ArrayView<Half>, ulong, float, float, long, int> f16;
    readonly Action<KernelConfig, ArrayView<ushort>, ulong, float, float, long, int> bf16;

    internal RandomFill(KernelContext context)
    {
        this.context = context;
        var a = context.Accelerator;
        f32 = a.LoadStreamKernel<ArrayView<float>, ulong, float, float, long, int>(F32Kernel);
        f16 = a.LoadStreamKernel<ArrayView<Half>, ulong, float, float, long, int>(F16Kernel);
        bf16 = a.LoadStreamKernel<ArrayView<ushort>, ulong, float, float, long, int>(Bf16Kernel);
    }

    /// <summary>Fills a weight of any <see cref="WeightFormat"/> with <see cref="Value"/>(seed, i, centre, radius).</summary>
    /// <param name="x">The weight, overwritten.</param>
    /// <param name="seed">Seed; different tensors take different seeds.</param>
    /// <param name="centre">Middle of the interval.</param>
    /// <param name="radius">Half its width (0 fills with <paramref name="centre"/>).</param>
    public void Uniform(WeightView x, ulong seed, float centre, float radius)
    {
        const string op = "RandomFill.Uniform";
        context.Enter(op);
        long count = x.Length;
        if (count == 0) return;
        var config = context.RunConfig(count, out int chunk);
        switch (x.Format)
        {
            case WeightFormat.F16: f16(config, x.F16, seed, centre, radius, count, chunk); break;
            case WeightFormat.Bf16: bf16(config, x.Bf16, seed, centre, radius, count, chunk); break;
            default: f32(config, x.F32, seed, centre, radius, count, chunk); break;
        }
    }

    #endregion
}
