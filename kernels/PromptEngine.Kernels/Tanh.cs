using ILGPU.Algorithms;

namespace PromptEngine.Kernels;

/// <summary>
/// Hyperbolic tangent, the nonlinearity of prefix tuning's reparameterisation MLP (Hugging Face PEFT's PrefixEncoder
/// with prefix_projection): <c>y = tanh(x)</c>. Backward from the forward's output y: <c>dX = dY·(1 − y²)</c>, so the
/// forward's input need not be kept. Shapes (N) flat; y and dX are overwritten.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>): the two structs below are its math, the
/// launchers are <see cref="Activation{TValue, TGradient}"/>'s.</remarks>
public sealed class Tanh : Activation<Tanh.Value, Tanh.Gradient>
{
    internal Tanh(KernelContext context) : base(context, "Tanh", savedName: "y") { }

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
}
