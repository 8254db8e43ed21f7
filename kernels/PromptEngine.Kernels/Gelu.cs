using ILGPU.Algorithms;

namespace PromptEngine.Kernels;

/// <summary>
/// GELU, tanh approximation (GPT-2's "gelu_new"): <c>out = ½x(1 + tanh(u))</c>, u = √(2/π)(x + 0.044715x³).
/// Backward from the forward's input x: <c>dX = dOut·(½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²))</c>.
/// Shapes (N) flat; out and dX are overwritten.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>): the two structs below are its math, the
/// launchers are <see cref="Activation{TValue, TGradient}"/>'s.</remarks>
public sealed class Gelu : Activation<Gelu.Value, Gelu.Gradient>
{
    const float SqrtTwoOverPi = 0.7978845608028654f;
    const float Cubic = 0.044715f;

    internal Gelu(KernelContext context) : base(context, "Gelu", savedName: "inp") { }

    /// <summary>gelu(x).</summary>
    public readonly struct Value : IElementOp
    {
        /// <inheritdoc/>
        public float Apply(float x) => 0.5f * x * (1f + XMath.Tanh(SqrtTwoOverPi * (x + Cubic * x * x * x)));
    }

    /// <summary>dOut·gelu′(x), from the forward's input.</summary>
    public readonly struct Gradient : IElementPairOp
    {
        /// <inheritdoc/>
        public float Apply(float dOut, float x)
        {
            float t = XMath.Tanh(SqrtTwoOverPi * (x + Cubic * x * x * x));
            float local = 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * SqrtTwoOverPi * (1f + 3f * Cubic * x * x);
            return dOut * local;
        }
    }
}
