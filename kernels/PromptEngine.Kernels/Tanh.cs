using ILGPU.Algorithms;
using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// Hyperbolic tangent, the nonlinearity of prefix tuning's reparameterisation MLP (Hugging Face PEFT's PrefixEncoder
/// with prefix_projection): <c>y = tanh(x)</c>. Backward from the saved output: <c>dX = dY·(1 − y²)</c>, so the
/// forward's input need not be kept. Shapes (N) flat; y and dX are overwritten.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>): the two structs below are its math.</remarks>
public sealed class Tanh
{
    #region Operations

    /// <summary>tanh(x).</summary>
    public readonly struct Value : IElementOp
    {
        /// <inheritdoc/>
        public float Apply(float x) => XMath.Tanh(x);
    }

    /// <summary>dY·(1 − y²), from the forward's output.</summary>
    public readonly struct Gradient : IElementPairOp
    {
        /// <inheritdoc/>
        public float Apply(float dY, float y) => dY * (1f - y * y);
    }

    #endregion

    #region Launchers

    readonly ElementLauncher<Value> forward;
    readonly ElementPairLauncher<Gradient> backward;

    internal Tanh(KernelContext context)
    {
        forward = new(context);
        backward = new(context);
    }

    /// <summary>y = tanh(x).</summary>
    /// <param name="output">y (N), overwritten; may be <paramref name="input"/> itself.</param>
    /// <param name="input">x (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, long count) =>
        forward.Launch("Tanh.Forward", default, (output, "y"), (input, "x"), count);

    /// <summary>dX = dY·(1 − y²).</summary>
    /// <param name="dX">(N), overwritten; may be <paramref name="dOut"/> itself.</param>
    /// <param name="dOut">dY (N).</param>
    /// <param name="output">The forward's output y = tanh(x) (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A length does not match.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> output, long count) =>
        backward.Launch("Tanh.Backward", default, (dX, "dX"), (dOut, "dY"), (output, "y"), count);

    #endregion
}
