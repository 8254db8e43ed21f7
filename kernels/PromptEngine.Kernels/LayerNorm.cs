using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// LayerNorm over the last axis (GPT-2): <c>out = (x − μ)·rstd·w + b</c>, saving μ and rstd per row.
/// Backward to the input only (w and b are frozen): with x̂ = (x − μ)·rstd and g = w⊙dOut,
/// <c>dX = rstd·(g − mean(g) − x̂·mean(g⊙x̂))</c>. Shapes: x, out, dOut, dX (N, C) with N = B·T; w, b (C);
/// mean, rstd (N). dX is overwritten.
/// </summary>
/// <remarks>CPU-shaped kernels run one thread per row (two passes, so the variance does not cancel);
/// GPU-shaped kernels one group per row, reducing in shared memory.</remarks>
public sealed class LayerNorm
{
    #region Kernels

    /// <summary>CPU-shaped forward: a <see cref="ThreadRun"/> of rows per thread.</summary>
    internal static void ForwardRowKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> bias,   // (C) or empty
        ArrayView<float> mean,   // (N)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps, int rowsPerThread)
    {
        var run = ThreadRun.Of(n, rowsPerThread);
        for (int row = (int)run.Start; row < run.End; row++)
            ForwardRow(output, input, weight, bias, mean, rstd, c, eps, row);
    }

    /// <summary>One row of <see cref="ForwardRowKernel"/>.</summary>
    static void ForwardRow(ArrayView<float> output, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> mean, ArrayView<float> rstd, int c, float eps, int row)
    {
        long offset = (long)row * c;
        float sum = 0;
        for (int i = 0; i < c; i++)
            sum += input[offset + i];
        float mu = sum / c;
        float sumSquares = 0;
        for (int i = 0; i < c; i++)
        {
            float d = input[offset + i] - mu;
            sumSquares += d * d;
        }
        float r = XMath.Rsqrt(sumSquares / c + eps);
        mean[row] = mu;
        rstd[row] = r;
        bool hasBias = bias.Length > 0;
        for (int i = 0; i < c; i++)
            output[offset + i] = (input[offset + i] - mu) * r * weight[i] + (hasBias ? bias[i] : 0f);
    }

    /// <summary>CPU-shaped backward: a <see cref="ThreadRun"/> of rows per thread.</summary>
    internal static void BackwardRowKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> mean,   // (N)
        ArrayView<float> rstd,   // (N)
        int n, int c, int rowsPerThread)
    {
        var run = ThreadRun.Of(n, rowsPerThread);
        for (int row = (int)run.Start; row < run.End; row++)
            BackwardRow(dX, dOut, input, weight, mean, rstd, c, row);
    }

    /// <summary>One row of <see cref="BackwardRowKernel"/>.</summary>
    static void BackwardRow(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, ArrayView<float> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int c, int row)
    {
        long offset = (long)row * c;
        float mu = mean[row], r = rstd[row];
        float sumG = 0, sumGXhat = 0;
        for (int i = 0; i < c; i++)
        {
            float g = weight[i] * dOut[offset + i];
            sumG += g;
            sumGXhat += g * (input[offset + i] - mu) * r;
        }
        float meanG = sumG / c, meanGXhat = sumGXhat / c;
        for (int i = 0; i < c; i++)
        {
            float xhat = (input[offset + i] - mu) * r;
            dX[offset + i] = r * (weight[i] * dOut[offset + i] - meanG - xhat * meanGXhat);
        }
    }

    /// <summary>GPU-shaped forward: one group per row; shared memory holds Group.DimX floats. rowsPerThread is the CPU kernel's, unused here (both shapes load into one delegate type).</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> output, // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> bias,   // (C) or empty
        ArrayView<float> mean,   // (N)
        ArrayView<float> rstd,   // (N)
        int n, int c, float eps, int rowsPerThread)
    {
        int row = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long offset = (long)row * c;
        float partial = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            partial += input[offset + i];
        float mu = GroupReduce.Sum(scratch, partial) / c;
        partial = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float d = input[offset + i] - mu;
            partial += d * d;
        }
        float r = XMath.Rsqrt(GroupReduce.Sum(scratch, partial) / c + eps);
        if (Group.IdxX == 0)
        {
            mean[row] = mu;
            rstd[row] = r;
        }
        bool hasBias = bias.Length > 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
            output[offset + i] = (input[offset + i] - mu) * r * weight[i] + (hasBias ? bias[i] : 0f);
    }

    /// <summary>GPU-shaped backward: one group per row; shared memory holds Group.DimX floats. rowsPerThread is the CPU kernel's, unused here (both shapes load into one delegate type).</summary>
    internal static void BackwardGroupKernel(
        ArrayView<float> dX,     // (N, C)
        ArrayView<float> dOut,   // (N, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<float> weight, // (C)
        ArrayView<float> mean,   // (N)
        ArrayView<float> rstd,   // (N)
        int n, int c, int rowsPerThread)
    {
        int row = Grid.IdxX;
        var scratch = SharedMemory.GetDynamic<float>();
        long offset = (long)row * c;
        float mu = mean[row], r = rstd[row];
        float partialG = 0, partialGXhat = 0;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float g = weight[i] * dOut[offset + i];
            partialG += g;
            partialGXhat += g * (input[offset + i] - mu) * r;
        }
        float meanG = GroupReduce.Sum(scratch, partialG) / c;
        float meanGXhat = GroupReduce.Sum(scratch, partialGXhat) / c;
        for (int i = Group.IdxX; i < c; i += Group.DimX)
        {
            float xhat = (input[offset + i] - mu) * r;
            dX[offset + i] = r * (weight[i] * dOut[offset + i] - meanG - xhat * meanGXhat);
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> backward;

    internal LayerNorm(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, float, int>(
            cpu ? ForwardRowKernel : ForwardGroupKernel);
        backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(
            cpu ? BackwardRowKernel : BackwardGroupKernel);
    }

    /// <summary>out = (x − μ)·rstd·w + b per row, saving μ and rstd.</summary>
    /// <param name="output">Normalised output (N, C), overwritten.</param>
    /// <param name="input">Input (N, C).</param>
    /// <param name="weight">Scale (C).</param>
    /// <param name="bias">Shift (C), or an empty view for none.</param>
    /// <param name="mean">Saved row means (N), overwritten.</param>
    /// <param name="rstd">Saved 1/√(var+ε) (N), overwritten.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="c">Channels.</param>
    /// <param name="eps">ε added to the variance.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, ArrayView<float> weight, ArrayView<float> bias,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c, float eps)
    {
        const string op = "LayerNorm.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "out", output, (long)n * c, "N*C");
        Check.Length(op, "inp", input, (long)n * c, "N*C");
        Check.Length(op, "weight", weight, c, "C");
        if (bias.Length != 0)
            Check.Length(op, "bias", bias, c, "C");
        Check.Length(op, "mean", mean, n, "N");
        Check.Length(op, "rstd", rstd, n, "N");
        forward(context.RowConfig(n, out int rowsPerThread), output, input, weight, bias, mean, rstd, n, c, eps, rowsPerThread);
    }

    /// <summary>dX from dOut, using the μ and rstd saved by <see cref="Forward"/>.</summary>
    /// <param name="dX">Input gradient (N, C), overwritten.</param>
    /// <param name="dOut">Output gradient (N, C).</param>
    /// <param name="input">The forward's input (N, C).</param>
    /// <param name="weight">Scale (C).</param>
    /// <param name="mean">Saved means (N).</param>
    /// <param name="rstd">Saved rstd (N).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="c">Channels.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, ArrayView<float> weight,
        ArrayView<float> mean, ArrayView<float> rstd, int n, int c)
    {
        const string op = "LayerNorm.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c));
        Check.Length(op, "dX", dX, (long)n * c, "N*C");
        Check.Length(op, "dOut", dOut, (long)n * c, "N*C");
        Check.Length(op, "inp", input, (long)n * c, "N*C");
        Check.Length(op, "weight", weight, c, "C");
        Check.Length(op, "mean", mean, n, "N");
        Check.Length(op, "rstd", rstd, n, "N");
        backward(context.RowConfig(n, out int rowsPerThread), dX, dOut, input, weight, mean, rstd, n, c, rowsPerThread);
    }

    #endregion
}
