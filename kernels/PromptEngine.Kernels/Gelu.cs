using ILGPU.Algorithms;
using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// GELU, tanh approximation (GPT-2's "gelu_new"): <c>out = ½x(1 + tanh(u))</c>, u = √(2/π)(x + 0.044715x³).
/// Backward: <c>dX = dOut·(½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²))</c>. Shapes (N) flat;
/// dX is overwritten.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>): the two structs below are its math.</remarks>
public sealed class Gelu
{
    const float SqrtTwoOverPi = 0.7978845608028654f;
    const float Cubic = 0.044715f;

    #region Operations

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

    #endregion

    #region Launchers

    readonly ElementLauncher<Value> forward;
    readonly ElementPairLauncher<Gradient> backward;

    internal Gelu(KernelContext context)
    {
        forward = new(context);
        backward = new(context);
    }

    /// <summary>out = gelu(x).</summary>
    /// <param name="output">(N), overwritten.</param>
    /// <param name="input">(N).</param>
    /// <param name="count">Elements N (e.g. B·T·4C).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, long count) =>
        forward.Launch("Gelu.Forward", default, (output, "out"), (input, "inp"), count);

    /// <summary>dX = dOut·gelu′(x).</summary>
    /// <param name="dX">(N), overwritten.</param>
    /// <param name="dOut">(N).</param>
    /// <param name="input">The forward's input (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, long count) =>
        backward.Launch("Gelu.Backward", default, (dX, "dX"), (dOut, "dOut"), (input, "inp"), count);

    #endregion
}
