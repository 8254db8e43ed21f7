using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// In-place scaling <c>x ← factor · x</c>, shape (N) flat. Used on the prompt gradient to average over
/// accumulated micro-batches before the optimizer reads it. Linear in x, so its backward would be the
/// same scaling; nothing upstream needs one.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>), the one whose operation carries a value.</remarks>
public sealed class Scale
{
    /// <summary>factor · x.</summary>
    public readonly struct By(float factor) : IElementOp
    {
        readonly float factor = factor;

        /// <inheritdoc/>
        public float Apply(float x) => factor * x;
    }

    readonly ElementLauncher<By> forward;

    internal Scale(KernelContext context) => forward = new(context);

    /// <summary>x ← factor · x.</summary>
    /// <param name="x">(N), scaled in place.</param>
    /// <param name="factor">The factor.</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">The length does not match.</exception>
    public void Forward(ArrayView<float> x, float factor, long count) =>
        forward.Launch("Scale.Forward", new By(factor), (x, "x"), (x, "x"), count);
}
