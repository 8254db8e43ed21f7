using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// Residual add <c>out = a + b</c>, shapes (N) flat. Its backward is the identity to both inputs, so the
/// engine routes dOut to both branches instead of launching anything (the branch's own backward then adds
/// into the residual stream's gradient with <see cref="Forward"/>).
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>). <c>out</c> may alias <c>a</c> or <c>b</c>:
/// each element is read before it is written by the same thread.</remarks>
public sealed class Residual
{
    /// <summary>a + b.</summary>
    public readonly struct Sum : IElementPairOp
    {
        /// <inheritdoc/>
        public float Apply(float a, float b) => a + b;
    }

    readonly ElementPairLauncher<Sum> forward;

    internal Residual(KernelContext context) => forward = new(context);

    /// <summary>out = a + b.</summary>
    /// <param name="output">(N), overwritten; may be the same view as a or b.</param>
    /// <param name="a">(N).</param>
    /// <param name="b">(N).</param>
    /// <param name="count">Elements N (e.g. B·T·C).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> a, ArrayView<float> b, long count) =>
        forward.Launch("Residual.Forward", default, (output, "out"), (a, "a"), (b, "b"), count);
}
