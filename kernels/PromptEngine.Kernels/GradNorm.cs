using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Sum of squares of a buffer (the prompt's gradient), for gradient-norm clipping, reduced on the device in two
/// stages: <see cref="Partitions"/> fixed contiguous partitions each write a partial sum, then one thread adds
/// the partials in order and writes <c>sumSquares = Σ g²</c> and, optionally, the clipping factor
/// <c>clipScale = min(1, maxNorm / (√sumSquares + 1e-6))</c>, which <see cref="AdamW.Step"/> reads on the device.
/// Shapes: input (N); partials (Partitions) scratch; sumSquares (1); clipScale (1) or empty. All overwritten.
/// </summary>
/// <remarks>No atomics and a partition fixed by N alone, so the result is bitwise reproducible run to run on a
/// given accelerator and shape. CPU-shaped: one thread per partition. GPU-shaped: one group per partition,
/// reducing in shared memory.</remarks>
public sealed class GradNorm
{
    /// <summary>Number of partitions of the first stage (the length of the partials scratch).</summary>
    public const int Partitions = 64;

    /// <summary>Added to the norm before dividing, as PyTorch's clip_grad_norm_ does.</summary>
    const float NormEpsilon = 1e-6f;

    #region Kernels

    /// <summary>CPU-shaped first stage: one thread per partition.</summary>
    internal static void PartialRowKernel(
        ArrayView<float> partials, // (Partitions)
        ArrayView<float> input,    // (N)
        long count, long chunk)
    {
        int partition = Grid.GlobalIndex.X;
        if (partition >= partials.Length)
            return;
        long start = partition * chunk;
        long end = Math.Min(start + chunk, count);
        float sum = 0;
        for (long i = start; i < end; i++)
            sum += input[i] * input[i];
        partials[partition] = sum;
    }

    /// <summary>GPU-shaped first stage: one group per partition; shared memory holds Group.DimX floats.</summary>
    internal static void PartialGroupKernel(
        ArrayView<float> partials, // (Partitions)
        ArrayView<float> input,    // (N)
        long count, long chunk)
    {
        int partition = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long start = partition * chunk;
        long end = Math.Min(start + chunk, count);
        float sum = 0;
        for (long i = start + Group.IdxX; i < end; i += Group.DimX)
            sum += input[i] * input[i];
        float total = GroupReduce.Sum(scratch, sum);
        if (Group.IdxX == 0)
            partials[partition] = total;
    }

    /// <summary>Second stage: one thread adds the partials in order and derives the clipping factor.</summary>
    internal static void FinishKernel(
        ArrayView<float> sumSquares, // (1)
        ArrayView<float> clipScale,  // (1) or empty
        ArrayView<float> partials,   // (Partitions)
        float maxNorm)
    {
        if (Grid.GlobalIndex.X != 0)
            return;
        float sum = 0;
        for (int p = 0; p < partials.Length; p++)
            sum += partials[p];
        sumSquares[0] = sum;
        if (clipScale.Length > 0)
            clipScale[0] = Math.Min(1f, maxNorm / (XMath.Sqrt(sum) + NormEpsilon));
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, long, long> partial;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, float> finish;

    internal GradNorm(KernelContext context)
    {
        this.context = context;
        partial = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long, long>(
            context.Shape == KernelShape.Cpu ? PartialRowKernel : PartialGroupKernel);
        finish = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, float>(FinishKernel);
    }

    /// <summary>Σ input² into one float and, when <paramref name="clipScale"/> is given, the clipping factor.</summary>
    /// <param name="sumSquares">(1) Σ input², overwritten (the norm is its square root).</param>
    /// <param name="clipScale">(1) min(1, maxNorm / (norm + 1e-6)), overwritten; or an empty view to skip it.</param>
    /// <param name="partials">Scratch (<see cref="Partitions"/>), overwritten.</param>
    /// <param name="input">The buffer to measure (N), e.g. dPrompt.</param>
    /// <param name="count">Elements N.</param>
    /// <param name="maxNorm">Largest allowed norm; must be positive when <paramref name="clipScale"/> is given.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">maxNorm is not positive while a clipping factor is requested.</exception>
    public void Forward(ArrayView<float> sumSquares, ArrayView<float> clipScale, ArrayView<float> partials, ArrayView<float> input,
        long count, float maxNorm)
    {
        const string op = "GradNorm.Forward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "sumSquares", sumSquares, 1, "1");
        if (clipScale.Length != 0)
        {
            Check.Length(op, "clipScale", clipScale, 1, "1");
            if (!(maxNorm > 0))
                throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"{op}: the clipping norm must be positive.");
        }
        Check.Length(op, "partials", partials, Partitions, "Partitions");
        Check.Length(op, "input", input, count, "N");
        long chunk = (count + Partitions - 1) / Partitions;
        var config = context.Shape == KernelShape.Cpu
            ? new KernelConfig(Partitions, 1)
            : new KernelConfig(Partitions, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(context.GroupSize));
        partial(config, partials, input, count, chunk);
        finish(new KernelConfig(1, 1), sumSquares, clipScale, partials, maxNorm);
    }

    #endregion
}
