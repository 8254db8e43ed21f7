using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Learned absolute positions (GPT-2): <c>x[r, c] += table[positions[r], c]</c>, in place on the (B·T, C)
/// embedding output, prompt positions included (Hugging Face adds <c>wpe</c> to <c>inputs_embeds</c> too).
/// The table is frozen, so the backward is the identity on x: the engine passes dX through unchanged
/// and launches nothing.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread. A position
/// outside the table yields NaN rather than an out-of-bounds read.</remarks>
public sealed class PositionEmbedding
{
    #region Kernels

    /// <summary>x += table[position] over a chunk of elements.</summary>
    internal static void AddKernel(
        ArrayView<float> x,       // (N, C), in place
        ArrayView<int> positions, // (N)
        ArrayView<float> table,   // (P, C)
        int n, int c, int tableRows, int chunk)
    {
        long total = (long)n * c;
        var run = ThreadRun.Of(total, chunk);
        for (long i = run.Start; i < run.End; i++)
        {
            int row = (int)(i / c);
            int channel = (int)(i - (long)row * c);
            int position = positions[row];
            x[i] = position >= 0 && position < tableRows ? x[i] + table[(long)position * c + channel] : float.NaN;
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, int> add;

    internal PositionEmbedding(KernelContext context)
    {
        this.context = context;
        add = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int, int, int>(AddKernel);
    }

    /// <summary>x += table[positions] row by row.</summary>
    /// <param name="x">(N, C) embedding output, updated in place.</param>
    /// <param name="positions">(N) position id of each row.</param>
    /// <param name="table">(P, C) learned position table.</param>
    /// <param name="n">Rows N = B·T.</param>
    /// <param name="c">Channels C.</param>
    /// <param name="tableRows">Rows P of the table (n_positions).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> x, ArrayView<int> positions, ArrayView<float> table, int n, int c, int tableRows)
    {
        const string op = "PositionEmbedding.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c), ("P", tableRows));
        Check.Length(op, "x", x, (long)n * c, "N*C");
        Check.Length(op, "positions", positions, n, "N");
        Check.Length(op, "table", table, (long)tableRows * c, "P*C");
        long total = (long)n * c;
        add(context.RunConfig(total, out int chunk), x, positions, table, n, c, tableRows, chunk);
    }

    #endregion
}
