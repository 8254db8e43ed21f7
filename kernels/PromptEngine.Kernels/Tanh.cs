using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Hyperbolic tangent, the nonlinearity of prefix tuning's reparameterisation MLP (Hugging Face PEFT's PrefixEncoder
/// with prefix_projection): <c>y = tanh(x)</c>. Backward from the saved output: <c>dX = dY·(1 − y²)</c>, so the
/// forward's input need not be kept. Shapes (N) flat; y and dX are overwritten.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread (one element per
/// thread on a GPU).</remarks>
public sealed class Tanh
{
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
            output[i] = XMath.Tanh(input[i]);
    }

    /// <summary>Backward over a chunk of elements, from the forward's output.</summary>
    internal static void BackwardKernel(
        ArrayView<float> dX,     // (N)
        ArrayView<float> dOut,   // (N)
        ArrayView<float> output, // (N) the forward's tanh(x)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        for (long i = start; i < end; i++)
        {
            float y = output[i];
            dX[i] = dOut[i] * (1f - y * y);
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, long, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int> backward;

    internal Tanh(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, long, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>(BackwardKernel);
    }

    /// <summary>y = tanh(x).</summary>
    /// <param name="output">y (N), overwritten; may be <paramref name="input"/> itself.</param>
    /// <param name="input">x (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, long count)
    {
        const string op = "Tanh.Forward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "y", output, count, "N");
        Check.Length(op, "x", input, count, "N");
        forward(context.ElementConfig(count, out int chunk), output, input, count, chunk);
    }

    /// <summary>dX = dY·(1 − y²).</summary>
    /// <param name="dX">(N), overwritten; may be <paramref name="dOut"/> itself.</param>
    /// <param name="dOut">dY (N).</param>
    /// <param name="output">The forward's output y = tanh(x) (N).</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A length does not match.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> output, long count)
    {
        const string op = "Tanh.Backward";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "dX", dX, count, "N");
        Check.Length(op, "dY", dOut, count, "N");
        Check.Length(op, "y", output, count, "N");
        backward(context.ElementConfig(count, out int chunk), dX, dOut, output, count, chunk);
    }

    #endregion
}
