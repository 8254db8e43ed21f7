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
/// Elementwise over the S·C compact elements and barrier-free: one generic kernel for both directions (the
/// <see cref="IRowMove"/> structs) and both shapes, a <see cref="ThreadRun"/> per thread (a GPU thread takes one element).
/// </remarks>
public sealed class RowGather
{
    /// <summary>How one element moves between the compact (S, C) tensor and the full (N, C) one.</summary>
    public interface IRowMove
    {
        /// <summary>Moves element <paramref name="compactIndex"/> of the compact tensor and element
        /// <paramref name="fullIndex"/> of the full one, in the op's direction.</summary>
        unsafe void Apply(float* compact, long compactIndex, float* full, long fullIndex);
    }

    /// <summary>Forward: compact ← full.</summary>
    public readonly struct Gather : IRowMove
    {
        /// <inheritdoc/>
        public unsafe void Apply(float* compact, long compactIndex, float* full, long fullIndex) => compact[compactIndex] = full[fullIndex];
    }

    /// <summary>Backward: full += compact (rows are distinct, so no two threads add into one element).</summary>
    public readonly struct ScatterAdd : IRowMove
    {
        /// <inheritdoc/>
        public unsafe void Apply(float* compact, long compactIndex, float* full, long fullIndex) => full[fullIndex] += compact[compactIndex];
    }

    #region Kernels

    /// <summary>Moves a run of the S·C compact elements, element (i, c) to or from element (rows[i], c) of the full tensor.</summary>
    internal static unsafe void MoveKernel<TMove>(
        ArrayView<float> compact, // (S, C)
        ArrayView<float> full,    // (N, C)
        ArrayView<int> rows,      // (S)
        int width, long count, int perThread)
        where TMove : struct, IRowMove
    {
        var move = default(TMove);
        var run = ThreadRun.Of(count, perThread);
        // Pointers taken once per thread: the view indexer would assert bounds per element on the CPU (see Linear).
        fixed (float* compactBase = &compact[0])
        fixed (float* fullBase = &full[0])
        fixed (int* rowsBase = &rows[0])
        {
            for (long i = run.Start; i < run.End; i++)
            {
                long row = i / width, column = i - row * width;
                move.Apply(compactBase, i, fullBase, (long)rowsBase[row] * width + column);
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
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int>(MoveKernel<Gather>);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int>(MoveKernel<ScatterAdd>);
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
    public void Forward(ArrayView<float> output, ArrayView<float> input, ArrayView<int> rows, int n, int s, int width) =>
        Launch("RowGather.Forward", forward, (output, "out"), (input, "in"), rows, n, s, width);

    /// <summary>dIn[rows[i], :] += dOut[i, :] (the gradient of <see cref="Forward"/>, added into <paramref name="dInput"/>).</summary>
    /// <param name="dInput">(N, C), accumulated into at the listed rows, untouched elsewhere.</param>
    /// <param name="dOutput">(S, C).</param>
    /// <param name="rows">(S) distinct row indices into <paramref name="dInput"/>, each in [0, N).</param>
    /// <param name="n">Rows N of dIn.</param>
    /// <param name="s">Rows S.</param>
    /// <param name="width">Elements C per row.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Backward(ArrayView<float> dInput, ArrayView<float> dOutput, ArrayView<int> rows, int n, int s, int width) =>
        Launch("RowGather.Backward", backward, (dOutput, "dOut"), (dInput, "dIn"), rows, n, s, width);

    void Launch(string op, Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, long, int> kernel,
        (ArrayView<float> View, string Name) compact, (ArrayView<float> View, string Name) full, ArrayView<int> rows, int n, int s, int width)
    {
        context.Enter(op);
        Check.Positive(op, ("N", n), ("S", s), ("C", width));
        Check.Length(op, compact.Name, compact.View, (long)s * width, "S*C");
        Check.Length(op, full.Name, full.View, (long)n * width, "N*C");
        Check.Length(op, "rows", rows, s, "S");
        long count = (long)s * width;
        kernel(context.RunConfig(count, out int perThread), compact.View, full.View, rows, width, count, perThread);
    }

    #endregion
}
