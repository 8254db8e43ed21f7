using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// RMSNorm over the last axis (LLaMA): <c>out = x · rstd · w</c> with <c>rstd = 1/√(mean(x²) + ε)</c>, saving
/// rstd per row for the backward. Backward goes to the input only (the weight is frozen):
/// <c>dX = rstd·(w⊙dOut) − x·rstd³·mean(w⊙dOut⊙x)</c>. Shapes: x, out, dOut, dX (N, C) with N = B·T;
/// w (C); rstd (N). dX is overwritten.
/// </summary>
/// <remarks>CPU-shaped kernels run one thread per row; GPU-shaped kernels one group per row, reducing in shared memory.</remarks>
public sealed class RmsNorm
{
    #region Kernels

    /// <summary>CPU-shaped forward: one thread per row.</summary>
    internal static void ForwardRowKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps)
    {
        int row = Grid.GlobalIndex.X;
        if (row >= n)
            return;
        long offset = (long)row * c;
        float sumSquares = 0;
        for (int i = 0; i < c; i++)
        {
            float v = input[offset + i];
            sumSquares += v * v;
        }
        float r = XMath.Rsqrt(sumSquares / c + eps);
        rstd[row] = r;
        for (int i = 0; i < c; i++)
            output[offset + i] = input[offset + i] * r * weight[i];
    }

    /// <summary>CPU-shaped backward: one thread per row.</summary>
    internal static void BackwardRowKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c)
    {
        int row = Grid.GlobalIndex.X;
        if (row >= n)
            return;
        long offset = (long)row * c;
        float dot = 0; // Σ w·dOut·x
        for (int i = 0; i < c; i++)
            dot += weight[i] * dOut[offset + i] * input[offset + i];
        float r = rstd[row];
        float scale = r * r * r * dot / c;
        for (int i = 0; i < c; i++)
            dX[offset + i] = r * weight[i] * dOut[offset + i] - input[offset + i] * scale;
    }

    /// <summary>GPU-shaped forward: one group per row; shared memory holds Group.DimX floats.</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps)
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
        float r = XMath.Rsqrt(GroupReduce.Sum(scratch, partial) / c + eps);
        if (Group.IdxX == 0)
            rstd[row] = r;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            output[offset + i] = input[offset + i] * r * weight[i];
    }

    /// <summary>GPU-shaped backward: one group per row; shared memory holds Group.DimX floats.</summary>
    internal static void BackwardGroupKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> rstd,   // (N)
        int n, int c)
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
            dX[offset + i] = r * weight[i] * dOut[offset + i] - input[offset + i] * scale;
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int> backward;

    internal RmsNorm(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float>(
            cpu ? ForwardRowKernel : ForwardGroupKernel);
        backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int>(
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
        forward(Config(n), output, input, weight, rstd, n, c, eps);
    }

    /// <summary>dX from dOut, using the rstd saved by <see cref="Forward"/>.</summary>
    /// <param name="dX">Input gradient (N, C), overwritten.</param>
    /// <param name="dOut">Output gradient (N, C).</param>
    /// <param name="input">The forward's input (N, C).</param>
    /// <param name="weight">Scale (C).</param>
    /// <param name="rstd">Saved rstd (N).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="c">Channels.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> rstd, int n, int c)
    {
        const string op = "RmsNorm.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "dX", dX, (long)n * c, "N*C");
        Check.Length(op, "dOut", dOut, (long)n * c, "N*C");
        Check.Length(op, "inp", input, (long)n * c, "N*C");
        Check.Length(op, "weight", weight, c, "C");
        Check.Length(op, "rstd", rstd, n, "N");
        backward(Config(n), dX, dOut, input, weight, rstd, n, c);
    }

    KernelConfig Config(int rows) => context.Shape == KernelShape.Cpu
        ? new KernelConfig(rows, 1)
        : new KernelConfig(rows, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(context.GroupSize));

    #endregion
}
