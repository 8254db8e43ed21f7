using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// SwiGLU gate of the LLaMA MLP: <c>out = silu(gate)·up</c> with silu(g) = g·σ(g). Backward:
/// <c>dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g)))</c>, <c>dUp = dOut·silu(g)</c>. All tensors (N, H) with
/// N = B·T and H the hidden width; gradients are overwritten.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel serves both shapes, each thread taking a contiguous
/// chunk (long on the CPU, one element on a GPU for coalescing). Elements are read through pointers taken once
/// per thread: on the CPU the view indexer's bounds assertion would run per element (see <see cref="Linear"/>).</remarks>
public sealed class SwiGlu
{
    #region Kernels

    /// <summary>Forward over a chunk of elements.</summary>
    internal static unsafe void ForwardKernel(
        ArrayView<float> output, // (N, H)
        ArrayView<float> gate,   // (N, H)
        ArrayView<float> up,     // (N, H)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        if (start >= end)
            return;
        fixed (float* outputBase = &output[0])
        fixed (float* gateBase = &gate[0])
        fixed (float* upBase = &up[0])
        {
            for (long i = start; i < end; i++)
            {
                float g = gateBase[i];
                outputBase[i] = g / (1f + XMath.Exp(-g)) * upBase[i];
            }
        }
    }

    /// <summary>Backward over a chunk of elements.</summary>
    internal static unsafe void BackwardKernel(
        ArrayView<float> dGate, // (N, H)
        ArrayView<float> dUp,   // (N, H)
        ArrayView<float> dOut,  // (N, H)
        ArrayView<float> gate,  // (N, H)
        ArrayView<float> up,    // (N, H)
        long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        if (start >= end)
            return;
        fixed (float* dGateBase = &dGate[0])
        fixed (float* dUpBase = &dUp[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* gateBase = &gate[0])
        fixed (float* upBase = &up[0])
        {
            for (long i = start; i < end; i++)
            {
                float g = gateBase[i];
                float sigmoid = 1f / (1f + XMath.Exp(-g));
                float d = dOutBase[i];
                dGateBase[i] = d * upBase[i] * sigmoid * (1f + g * (1f - sigmoid));
                dUpBase[i] = d * g * sigmoid;
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int> backward;

    internal SwiGlu(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, long, int>(BackwardKernel);
    }

    /// <summary>out = silu(gate)·up.</summary>
    /// <param name="output">(N, H), overwritten.</param>
    /// <param name="gate">Gate projection (N, H).</param>
    /// <param name="up">Up projection (N, H).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> gate, ArrayView<float> up, int n, int h)
    {
        const string op = "SwiGlu.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "out", output, count, "N*H");
        Check.Length(op, "gate", gate, count, "N*H");
        Check.Length(op, "up", up, count, "N*H");
        forward(context.ElementConfig(count, out int chunk), output, gate, up, count, chunk);
    }

    /// <summary>dGate and dUp from dOut.</summary>
    /// <param name="dGate">(N, H), overwritten.</param>
    /// <param name="dUp">(N, H), overwritten.</param>
    /// <param name="dOut">(N, H).</param>
    /// <param name="gate">The forward's gate (N, H).</param>
    /// <param name="up">The forward's up (N, H).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dGate, ArrayView<float> dUp, ArrayView<float> dOut, ArrayView<float> gate, ArrayView<float> up, int n, int h)
    {
        const string op = "SwiGlu.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "dGate", dGate, count, "N*H");
        Check.Length(op, "dUp", dUp, count, "N*H");
        Check.Length(op, "dOut", dOut, count, "N*H");
        Check.Length(op, "gate", gate, count, "N*H");
        Check.Length(op, "up", up, count, "N*H");
        backward(context.ElementConfig(count, out int chunk), dGate, dUp, dOut, gate, up, count, chunk);
    }

    #endregion
}
