using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Fused residual add + RMSNorm, GPU-shaped (llm.c's fused_residual_forward): <c>residual = x + delta</c>, then
/// <c>out = residual · rstd · w</c> with <c>rstd = 1/√(mean(residual²) + ε)</c>, in one pass over the row instead
/// of <see cref="Residual"/> then <see cref="RmsNorm"/> (one read of the residual saved, one launch fewer per block).
/// Shapes: x, delta, residual, out (N, C); w (C); rstd (N). residual, out and rstd are overwritten; residual may be
/// the same buffer as x (each element is read, then written, by the same thread). The backward is
/// <see cref="RmsNorm.Backward"/> followed by the residual's identity gradient, so no fused backward exists.
/// </summary>
/// <remarks>A file of its own rather than a region of RmsNorm.cs while that file's CPU kernels are being rewritten
/// on another branch; it belongs there once both are merged. Not yet in the engine's launch lists.</remarks>
public sealed class ResidualRmsNorm
{
    #region Kernels

    /// <summary>One group per row; shared memory holds Group.DimX floats for the reduction.</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> residual, // (N, C) x + delta
        ArrayView<float> output,   // (N, C)
        ArrayView<float> rstd,     // (N)
        ArrayView<float> x,        // (N, C)
        ArrayView<float> delta,    // (N, C)
        ArrayView<float> weight,   // (C)
        int c, float eps)
    {
        int row = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long offset = (long)row * c;
        float partial = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float sum = x[offset + i] + delta[offset + i];
            residual[offset + i] = sum;
            partial += sum * sum;
        }
        float r = XMath.Rsqrt(GroupReduce.Sum(scratch, partial) / c + eps);
        if (Group.IdxX == 0)
            rstd[row] = r;
        // Each thread re-reads only the elements it wrote itself: no barrier needed before the reads.
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            output[offset + i] = residual[offset + i] * r * weight[i];
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, float> forward;

    internal ResidualRmsNorm(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int, float>(ForwardGroupKernel);
    }

    /// <summary>residual = x + delta; out = RMSNorm(residual)·w, saving rstd.</summary>
    /// <param name="residual">Sum (N, C), overwritten; may be <paramref name="x"/> itself.</param>
    /// <param name="output">Normalised output (N, C), overwritten.</param>
    /// <param name="rstd">Saved 1/√(mean(residual²) + ε) per row (N), overwritten.</param>
    /// <param name="x">Residual stream (N, C).</param>
    /// <param name="delta">Block output added to it (N, C).</param>
    /// <param name="weight">Norm scale (C).</param>
    /// <param name="n">Rows N = B·T.</param>
    /// <param name="c">Channels C.</param>
    /// <param name="eps">ε inside the square root.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> residual, ArrayView<float> output, ArrayView<float> rstd, ArrayView<float> x, ArrayView<float> delta,
        ArrayView<float> weight, int n, int c, float eps)
    {
        const string op = "ResidualRmsNorm.Forward";
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "residual", residual, (long)n * c, "N*C");
        Check.Length(op, "out", output, (long)n * c, "N*C");
        Check.Length(op, "rstd", rstd, n, "N");
        Check.Length(op, "x", x, (long)n * c, "N*C");
        Check.Length(op, "delta", delta, (long)n * c, "N*C");
        Check.Length(op, "w", weight, c, "C");
        forward(new KernelConfig(n, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(context.GroupSize)),
            residual, output, rstd, x, delta, weight, c, eps);
    }

    #endregion
}
