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
/// The input may be several buffers read as one vector (the gradients of several parameters clipped together): N is
/// their total, the partitions are those of the whole vector, and each buffer adds its part of a partition to that
/// partition's partial (cleared first), so one buffer gives exactly the single-buffer sum and, on the CPU, several
/// give bitwise the sum of their concatenation.
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

    /// <summary>CPU-shaped first stage: one thread per partition, adding this buffer's part of it to its partial.</summary>
    internal static void PartialRowKernel(
        ArrayView<float> partials, // (Partitions), cleared before the first buffer
        ArrayView<float> input,    // (n) one buffer of the vector, starting at element `offset` of it
        long offset, long chunk)
    {
        int partition = Grid.GlobalIndex.X;
        if (partition >= partials.Length)
            return;
        long start = Math.Max(partition * chunk - offset, 0);
        long end = Math.Min((partition + 1) * chunk - offset, input.Length);
        if (start >= end)
            return;
        float sum = partials[partition];
        for (long i = start; i < end; i++)
            sum += input[i] * input[i];
        partials[partition] = sum;
    }

    /// <summary>GPU-shaped first stage: one group per partition; shared memory holds Group.DimX floats.</summary>
    internal static void PartialGroupKernel(
        ArrayView<float> partials, // (Partitions), cleared before the first buffer
        ArrayView<float> input,    // (n) one buffer of the vector, starting at element `offset` of it
        long offset, long chunk)
    {
        int partition = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long start = Math.Max(partition * chunk - offset, 0);
        long end = Math.Min((partition + 1) * chunk - offset, input.Length);
        float sum = 0;
        for (long i = start + Group.IdxX; i < end; i += Group.DimX)
            sum += input[i] * input[i];
        float total = GroupReduce.Sum(scratch, sum);
        if (Group.IdxX == 0 && start < end)
            partials[partition] += total;
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
        Check.Length("GradNorm.Forward", "input", input, count, "N");
        Forward(sumSquares, clipScale, partials, [input], maxNorm);
    }

    /// <summary>Σ input² over several buffers read as one vector (their concatenation, in order) and, when
    /// <paramref name="clipScale"/> is given, the clipping factor of that vector.</summary>
    /// <param name="sumSquares">(1) Σ input², overwritten (the norm is its square root).</param>
    /// <param name="clipScale">(1) min(1, maxNorm / (norm + 1e-6)), overwritten; or an empty view to skip it.</param>
    /// <param name="partials">Scratch (<see cref="Partitions"/>), overwritten.</param>
    /// <param name="inputs">The buffers (n₁), (n₂), … of the vector (N = Σ nᵢ), e.g. the gradients of a prompt and a prefix.</param>
    /// <param name="maxNorm">Largest allowed norm; must be positive when <paramref name="clipScale"/> is given.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or the buffers are all empty.</exception>
    /// <exception cref="ArgumentOutOfRangeException">maxNorm is not positive while a clipping factor is requested.</exception>
    public void Forward(ArrayView<float> sumSquares, ArrayView<float> clipScale, ArrayView<float> partials, ReadOnlySpan<ArrayView<float>> inputs,
        float maxNorm)
    {
        const string op = "GradNorm.Forward";
        context.Enter(op);
        long count = 0;
        foreach (var input in inputs) count += input.Length;
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "sumSquares", sumSquares, 1, "1");
        if (clipScale.Length != 0)
        {
            Check.Length(op, "clipScale", clipScale, 1, "1");
            if (!(maxNorm > 0))
                throw new ArgumentOutOfRangeException(nameof(maxNorm), maxNorm, $"{op}: the clipping norm must be positive.");
        }
        Check.Length(op, "partials", partials, Partitions, "Partitions");
        long chunk = (count + Partitions - 1) / Partitions;
        var config = context.Shape == KernelShape.Cpu
            ? new KernelConfig(Partitions, 1)
            : new KernelConfig(Partitions, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(context.GroupSize));
        partials.MemSetToZero();
        long offset = 0;
        foreach (var input in inputs)
        {
            if (input.Length > 0) partial(config, partials, input, offset, chunk);
            offset += input.Length;
        }
        finish(new KernelConfig(1, 1), sumSquares, clipScale, partials, maxNorm);
    }

    #endregion
}
