using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// In-place scaling <c>x ← factor · x</c>, shape (N) flat. Used on the prompt gradient to average over
/// accumulated micro-batches before the optimizer reads it. Linear in x, so its backward would be the
/// same scaling; nothing upstream needs one.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread.</remarks>
public sealed class Scale
{
    #region Kernels

    /// <summary>x ← factor · x over a chunk of elements.</summary>
    internal static void ForwardKernel(
        ArrayView<float> x, // (N), in place
        float factor,
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        for (long i = start; i < end; i++)
            x[i] = factor * x[i];
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, float, long, int> forward;

    internal Scale(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, float, long, int>(ForwardKernel);
    }

    /// <summary>x ← factor · x.</summary>
    /// <param name="x">(N), scaled in place.</param>
    /// <param name="factor">The factor.</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">The length does not match.</exception>
    public void Forward(ArrayView<float> x, float factor, long count)
    {
        const string op = "Scale.Forward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "x", x, count, "N");
        forward(context.ElementConfig(count, out int chunk), x, factor, count, chunk);
    }

    #endregion
}
