using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// RMSNorm over the last axis (LLaMA): <c>out = x · rstd · w</c> with <c>rstd = 1/√(mean(x²) + ε)</c>, saving
/// rstd per row for the backward. Backward goes to the input only (the weight is frozen):
/// <c>dX = rstd·(w⊙dOut) − x·rstd³·mean(w⊙dOut⊙x)</c>. Shapes: x, out, dOut, dX (N, C) with N = B·T;
/// w (C); rstd (N). dX is overwritten, or accumulated into when asked: a pre-norm block's input x is also the residual
/// stream, whose gradient the norm's adds to, so the backward adds in place of a separate residual launch.
/// <see cref="ResidualRmsNorm"/>, below, is the forward fused with the residual add before it.
/// </summary>
/// <remarks>CPU-shaped kernels run a <see cref="ThreadRun"/> of rows per thread, through pointers (see <see cref="Linear"/>); GPU-shaped kernels one group per row, reducing in shared memory.</remarks>
public sealed class RmsNorm
{
    #region Kernels

    /// <summary>CPU-shaped forward: a <see cref="ThreadRun"/> of rows per thread.</summary>
    internal static unsafe void ForwardRowKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps, int rowsPerThread)
    {
        var run = ThreadRun.Of(n, rowsPerThread);
        fixed (float* outputBase = &output[0])
        fixed (float* inputBase = &input[0])
        fixed (float* weightBase = &weight[0])
        fixed (float* rstdBase = &rstd[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                rstdBase[row] = NormalizeRow(outputBase + (long)row * c, inputBase + (long)row * c, weightBase, c, eps);
        }
    }

    /// <summary>One row of the CPU-shaped forward, <c>y = x·rstd·w</c>; returns rstd. The sum of squares runs in two
    /// interleaved fused accumulators (even and odd channels), an order <see cref="ResidualRmsNorm"/> shares.</summary>
    internal static unsafe float NormalizeRow(float* y, float* x, float* weight, int c, float eps)
    {
        float s0 = 0, s1 = 0;
        int i = 0;
        for (; i + 1 < c; i += 2)
        {
            s0 = MathF.FusedMultiplyAdd(x[i], x[i], s0);
            s1 = MathF.FusedMultiplyAdd(x[i + 1], x[i + 1], s1);
        }
        if (i < c)
            s0 = MathF.FusedMultiplyAdd(x[i], x[i], s0);
        float r = XMath.Rsqrt((s0 + s1) / c + eps);
        for (i = 0; i < c; i++)
            y[i] = x[i] * r * weight[i];
        return r;
    }

    /// <summary>CPU-shaped backward: a <see cref="ThreadRun"/> of rows per thread.</summary>
    internal static unsafe void BackwardRowKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, int accumulate, int rowsPerThread)
    {
        var run = ThreadRun.Of(n, rowsPerThread);
        fixed (float* dXBase = &dX[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* inputBase = &input[0])
        fixed (float* weightBase = &weight[0])
        fixed (float* rstdBase = &rstd[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
            {
                long offset = (long)row * c;
                float* x = inputBase + offset, g = dOutBase + offset, dx = dXBase + offset;
                float dot = 0; // Σ w·dOut·x
                for (int i = 0; i < c; i++)
                    dot = MathF.FusedMultiplyAdd(weightBase[i] * g[i], x[i], dot);
                float r = rstdBase[row];
                float scale = r * r * r * dot / c;
                if (accumulate != 0)
                    for (int i = 0; i < c; i++)
                        dx[i] += r * weightBase[i] * g[i] - x[i] * scale;
                else
                    for (int i = 0; i < c; i++)
                        dx[i] = r * weightBase[i] * g[i] - x[i] * scale;
            }
        }
    }

    /// <summary>GPU-shaped forward: one group per row; shared memory holds Group.DimX floats. rowsPerThread is the CPU kernel's, unused here (both shapes load into one delegate type).</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps, int rowsPerThread)
    {
        int row = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long offset = (long)row * c;
        float partial = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float v = input[offset + i];
            partial += v * v;
        }
        GroupNormalizeRow(output, input, weight, rstd, scratch, partial, row, c, eps);
    }

    /// <summary>The GPU-shaped forward's tail for one row, from each thread's partial sum of squares: rstd from the
    /// group's sum (returned, and saved by thread 0), then <c>out = x·rstd·w</c> over the thread's channels (which it
    /// alone read or wrote before).</summary>
    internal static float GroupNormalizeRow(ArrayView<float> output, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> rstd,
        ArrayView<float> scratch, float partial, int row, int c, float eps)
    {
        long offset = (long)row * c;
        float r = XMath.Rsqrt(GroupReduce.Sum(scratch, partial) / c + eps);
        if (Group.IdxX == 0)
            rstd[row] = r;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            output[offset + i] = input[offset + i] * r * weight[i];
        return r;
    }

    /// <summary>GPU-shaped backward: one group per row; shared memory holds Group.DimX floats. rowsPerThread is the CPU kernel's, unused here (both shapes load into one delegate type).</summary>
    internal static void BackwardGroupKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, int accumulate, int rowsPerThread)
    {
        int row = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long offset = (long)row * c;
        float partial = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            partial += weight[i] * dOut[offset + i] * input[offset + i];
        float dot = GroupReduce.Sum(scratch, partial);
        float r = rstd[row];
        float scale = r * r * r * dot / c;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float d = r * weight[i] * dOut[offset + i] - input[offset + i] * scale;
            dX[offset + i] = accumulate != 0 ? dX[offset + i] + d : d;
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> backward;

    internal RmsNorm(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>(
            cpu ? ForwardRowKernel : ForwardGroupKernel);
        backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(
            cpu ? BackwardRowKernel : BackwardGroupKernel);
    }

    /// <summary>out = x·rstd·w per row, saving rstd.</summary>
    /// <param name="output">Normalised output (N, C), overwritten.</param>
    /// <param name="input">Input (N, C).</param>
    /// <param name="weight">Scale (C).</param>
    /// <param name="rstd">Saved 1/√(mean(x²)+ε) (N), overwritten.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="c">Channels.</param>
    /// <param name="eps">ε added to the mean square.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> rstd, int n, int c, float eps)
    {
        const string op = "RmsNorm.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "out", output, (long)n * c, "N*C");
        Check.Length(op, "inp", input, (long)n * c, "N*C");
        Check.Length(op, "weight", weight, c, "C");
        Check.Length(op, "rstd", rstd, n, "N");
        forward(context.RowConfig(n, out int rowsPerThread), output, input, weight, rstd, n, c, eps, rowsPerThread);
    }

    /// <summary>dX from dOut (or dX += it), using the rstd saved by <see cref="Forward"/>.</summary>
    /// <param name="dX">Input gradient (N, C), overwritten or accumulated into.</param>
    /// <param name="dOut">Output gradient (N, C).</param>
    /// <param name="input">The forward's input (N, C).</param>
    /// <param name="weight">Scale (C).</param>
    /// <param name="rstd">Saved rstd (N).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="c">Channels.</param>
    /// <param name="accumulate">Add into <paramref name="dX"/> (the residual stream's gradient) instead of overwriting it.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> rstd, int n, int c,
        bool accumulate = false)
    {
        const string op = "RmsNorm.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "dX", dX, (long)n * c, "N*C");
        Check.Length(op, "dOut", dOut, (long)n * c, "N*C");
        Check.Length(op, "inp", input, (long)n * c, "N*C");
        Check.Length(op, "weight", weight, c, "C");
        Check.Length(op, "rstd", rstd, n, "N");
        backward(context.RowConfig(n, out int rowsPerThread), dX, dOut, input, weight, rstd, n, c, accumulate ? 1 : 0, rowsPerThread);
    }

    #endregion
}

/// <summary>
/// Fused residual add + RMSNorm (llm.c's fused_residual_forward): <c>residual = x + delta</c>, then
/// <c>out = residual · rstd · w</c> with <c>rstd = 1/√(mean(residual²) + ε)</c>, in one launch instead of
/// <see cref="Residual"/> then <see cref="RmsNorm"/>: the engine's residual add after the attention (then the MLP's norm)
/// and after the MLP (then the next block's or the final norm). Shapes: x, delta, residual, out (N, C); w (C); rstd (N).
/// residual, out and rstd are overwritten; residual may be the same buffer as x (each element is read, then written, by
/// the same thread). The backward is <see cref="RmsNorm.Backward"/> accumulating into the residual stream's gradient,
/// so no fused backward exists.
/// </summary>
/// <remarks>CPU-shaped: runs of rows per thread, the add then <see cref="RmsNorm"/>'s row arithmetic, so the result is
/// bit for bit the two launches'. GPU-shaped: one group per row, reducing in shared memory.</remarks>
public sealed class ResidualRmsNorm
{
    #region Kernels

    /// <summary>CPU-shaped: a <see cref="ThreadRun"/> of rows per thread.</summary>
    internal static unsafe void ForwardRowKernel(
        ArrayView<float> residual, // (N, C) x + delta
        ArrayView<float> output,   // (N, C)
        ArrayView<float> rstd,     // (N)
        ArrayView<float> x,        // (N, C)
        ArrayView<float> delta,    // (N, C)
        ArrayView<float> weight,   // (C)
        int n, int c, float eps, int rowsPerThread)
    {
        var run = ThreadRun.Of(n, rowsPerThread);
        fixed (float* residualBase = &residual[0])
        fixed (float* outputBase = &output[0])
        fixed (float* rstdBase = &rstd[0])
        fixed (float* xBase = &x[0])
        fixed (float* deltaBase = &delta[0])
        fixed (float* weightBase = &weight[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
            {
                long offset = (long)row * c;
                float* sum = residualBase + offset, a = xBase + offset, b = deltaBase + offset, y = outputBase + offset;
                for (int i = 0; i < c; i++)
                    sum[i] = a[i] + b[i];
                rstdBase[row] = RmsNorm.NormalizeRow(y, sum, weightBase, c, eps);
            }
        }
    }

    /// <summary>GPU-shaped: one group per row; shared memory holds Group.DimX floats for the reduction; rowsPerThread unused (one delegate type for both shapes).</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> residual, // (N, C) x + delta
        ArrayView<float> output,   // (N, C)
        ArrayView<float> rstd,     // (N)
        ArrayView<float> x,        // (N, C)
        ArrayView<float> delta,    // (N, C)
        ArrayView<float> weight,   // (C)
        int n, int c, float eps, int rowsPerThread)
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
        // Each thread re-reads only the elements it wrote itself: no barrier needed before the reads.
        RmsNorm.GroupNormalizeRow(output, residual, weight, rstd, scratch, partial, row, c, eps);
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int> forward;

    internal ResidualRmsNorm(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, int, int, float, int>(context.Shape == KernelShape.Cpu ? ForwardRowKernel : ForwardGroupKernel);
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
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "residual", residual, (long)n * c, "N*C");
        Check.Length(op, "out", output, (long)n * c, "N*C");
        Check.Length(op, "rstd", rstd, n, "N");
        Check.Length(op, "x", x, (long)n * c, "N*C");
        Check.Length(op, "delta", delta, (long)n * c, "N*C");
        Check.Length(op, "w", weight, c, "C");
        forward(context.RowConfig(n, out int rowsPerThread), residual, output, rstd, x, delta, weight, n, c, eps, rowsPerThread);
    }

    #endregion
}
