using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// GELU, tanh approximation (GPT-2's "gelu_new"): <c>out = ½x(1 + tanh(u))</c>, u = √(2/π)(x + 0.044715x³).
/// Backward: <c>dX = dOut·(½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²))</c>. Shapes (N) flat;
/// dX is overwritten.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread.</remarks>
public sealed class Gelu
{
    const float SqrtTwoOverPi = 0.7978845608028654f;
    const float Cubic = 0.044715f;

    #region Kernels

    /// <summary>Forward over a chunk of elements.</summary>
    internal static void ForwardKernel(
        ArrayView<float> output, // (N)
        ArrayView<float> input,  // (N)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        for (long i = start; i < end; i++)
        {
            float x = input[i];
            output[i] = 0.5f * x * (1f + XMath.Tanh(SqrtTwoOverPi * (x + Cubic * x * x * x)));
        }
    }

    /// <summary>Backward over a chunk of elements.</summary>
    internal static void BackwardKernel(
        ArrayView<float> dX,    // (N)
        ArrayView<float> dOut,  // (N)
        ArrayView<float> input, // (N)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        for (long i = start; i < end; i++)
        {
            float x = input[i];
            float t = XMath.Tanh(SqrtTwoOverPi * (x + Cubic * x * x * x));
            float local = 0.5f * (1f + t) + 0.5f * x * (1f - t * t) * SqrtTwoOverPi * (1f + 3f * Cubic * x * x);
            dX[i] = dOut[i] * local;
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, long, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int> backward;

    internal Gelu(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>(BackwardKernel);
    }

    /// <summary>out = gelu(x).</summary>
    /// <param name="output">(N), overwritten.</param>
    /// <param name="input">(N).</param>
    /// <param name="count">Elements N (e.g. B·T·4C).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, long count)
    {
        const string op = "Gelu.Forward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "out", output, count, "N");
        Check.Length(op, "inp", input, count, "N");
        forward(context.ElementConfig(count, out int chunk), output, input, count, chunk);
    }

    /// <summary>dX = dOut·gelu′(x).</summary>
    /// <param name="dX">(N), overwritten.</param>
    /// <param name="dOut">(N).</param>
    /// <param name="input">The forward's input (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> input, long count)
    {
        const string op = "Gelu.Backward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "dX", dX, count, "N");
        Check.Length(op, "dOut", dOut, count, "N");
        Check.Length(op, "inp", input, count, "N");
        backward(context.ElementConfig(count, out int chunk), dX, dOut, input, count, chunk);
    }

    #endregion
}
