using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Row gather: forward <c>out[i, :] = in[rows[i], :]</c> with in (N, C), rows (S) distinct indices into N, out (S, C);
/// backward <c>dIn[rows[i], :] += dOut[i, :]</c>, ACCUMULATING into dIn (the other rows of dIn are left as they are).
/// </summary>
/// <remarks>
/// The engine uses it to run only the work a loss needs: the last block after its attention, the final norm and the
/// loss touch only the scored rows, so their inputs are gathered into a compact (S, C) tensor, and the gradient that
/// comes back is added into the full residual stream's gradient at the same rows. Because the rows are distinct, no
/// two threads of the backward write one element.
/// Elementwise over the S·C outputs and barrier-free: one kernel for both shapes, contiguous chunks per thread
/// (a GPU thread takes one element).
/// </remarks>
public sealed class RowGather
{
    #region Kernels

    /// <summary>out[i, c] = in[rows[i], c] over a chunk of the S·C output elements.</summary>
    internal static unsafe void ForwardKernel(
        ArrayView<float> output, // (S, C)
        ArrayView<float> input,  // (N, C)
        ArrayView<int> rows,     // (S)
        int width, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        if (run.IsEmpty)
            return;
        // Pointers taken once per thread: the view indexer would assert bounds per element on the CPU (see Linear).
        fixed (float* outputBase = &output[0])
        fixed (float* inputBase = &input[0])
        fixed (int* rowsBase = &rows[0])
        {
            for (long i = run.Start; i < run.End; i++)
            {
                long row = i / width, column = i - row * width;
                outputBase[i] = inputBase[(long)rowsBase[row] * width + column];
            }
        }
    }

    /// <summary>dIn[rows[i], c] += dOut[i, c] over a chunk of the S·C elements of dOut.</summary>
    internal static unsafe void BackwardKernel(
        ArrayView<float> dInput,  // (N, C)
        ArrayView<float> dOutput, // (S, C)
        ArrayView<int> rows,      // (S)
        int width, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        if (run.IsEmpty)
            return;
        fixed (float* dInputBase = &dInput[0])
        fixed (float* dOutputBase = &dOutput[0])
        fixed (int* rowsBase = &rows[0])
        {
            for (long i = run.Start; i < run.End; i++)
            {
                long row = i / width, column = i - row * width;
                dInputBase[(long)rowsBase[row] * width + column] += dOutputBase[i];
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int> forward, backward;

    internal RowGather(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int>(BackwardKernel);
    }

    /// <summary>out[i, :] = in[rows[i], :].</summary>
    /// <param name="output">(S, C), overwritten.</param>
    /// <param name="input">(N, C).</param>
    /// <param name="rows">(S) row indices into <paramref name="input"/>, each in [0, N); the launcher does not read them
    /// (that would copy them to the host), so the caller vouches for their range.</param>
    /// <param name="n">Rows N of the input.</param>
    /// <param name="s">Rows S gathered.</param>
    /// <param name="width">Elements C per row.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, ArrayView<int> rows, int n, int s, int width)
    {
        const string op = "RowGather.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("S", s), ("C", width));
        Check.Length(op, "out", output, (long)s * width, "S*C");
        Check.Length(op, "in", input, (long)n * width, "N*C");
        Check.Length(op, "rows", rows, s, "S");
        long count = (long)s * width;
        forward(context.RunConfig(count, out int chunk), output, input, rows, width, count, chunk);
    }

    /// <summary>dIn[rows[i], :] += dOut[i, :] (the gradient of <see cref="Forward"/>, added into <paramref name="dInput"/>).</summary>
    /// <param name="dInput">(N, C), accumulated into at the listed rows, untouched elsewhere.</param>
    /// <param name="dOutput">(S, C).</param>
    /// <param name="rows">(S) distinct row indices into <paramref name="dInput"/>, each in [0, N).</param>
    /// <param name="n">Rows N of dIn.</param>
    /// <param name="s">Rows S.</param>
    /// <param name="width">Elements C per row.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<int> rows, int n, int s, int width)
    {
        const string op = "RowGather.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("S", s), ("C", width));
        Check.Length(op, "dIn", dInput, (long)n * width, "N*C");
        Check.Length(op, "dOut", dOutput, (long)s * width, "S*C");
        Check.Length(op, "rows", rows, s, "S");
        long count = (long)s * width;
        backward(context.RunConfig(count, out int chunk), dInput, dOutput, rows, width, count, chunk);
    }

    #endregion
}
