using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Residual add <c>out = a + b</c>, shapes (N) flat. Its backward is the identity to both inputs, so the
/// engine routes dOut to both branches instead of launching anything (the branch's own backward then adds
/// into the residual stream's gradient with <see cref="Forward"/>).
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread.
/// <c>out</c> may alias <c>a</c> or <c>b</c>: each element is read before it is written by the same thread.</remarks>
public sealed class Residual
{
    #region Kernels

    /// <summary>out = a + b over a chunk of elements.</summary>
    internal static unsafe void ForwardKernel(
        ArrayView<float> output, // (N)
        ArrayView<float> a,      // (N)
        ArrayView<float> b,      // (N)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        if (start >= end)
            return;
        // Pointers taken once per thread: the view indexer would assert bounds per element on the CPU (see Linear).
        fixed (float* outputBase = &output[0])
        fixed (float* aBase = &a[0])
        fixed (float* bBase = &b[0])
        {
            for (long i = start; i < end; i++)
                outputBase[i] = aBase[i] + bBase[i];
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int> forward;

    internal Residual(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>(ForwardKernel);
    }

    /// <summary>out = a + b.</summary>
    /// <param name="output">(N), overwritten; may be the same view as a or b.</param>
    /// <param name="a">(N).</param>
    /// <param name="b">(N).</param>
    /// <param name="count">Elements N (e.g. B·T·C).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> a, ArrayView<float> b, long count)
    {
        const string op = "Residual.Forward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "out", output, count, "N");
        Check.Length(op, "a", a, count, "N");
        Check.Length(op, "b", b, count, "N");
        forward(context.ElementConfig(count, out int chunk), output, a, b, count, chunk);
    }

    #endregion
}
