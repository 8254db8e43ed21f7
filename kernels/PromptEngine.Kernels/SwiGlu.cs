using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// SwiGLU gate of the LLaMA MLP: <c>out = silu(gate)·up</c> with silu(g) = g·σ(g). Backward:
/// <c>dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g)))</c>, <c>dUp = dOut·silu(g)</c>. The gate and up projections come as one
/// tensor (N, 2H), each row the H gate values then the H up values: the output of one Linear over the gate and up
/// weights stacked (the engine's fused MLP input projection), and dGateUp comes back in the same layout for one
/// data-gradient Linear. out and dOut are (N, H) with N = B·T and H the hidden width; gradients are overwritten.
/// </summary>
/// <remarks>Elementwise and barrier-free: one kernel serves both shapes, each thread taking a contiguous
/// chunk of the N·H outputs (long on the CPU, one element on a GPU for coalescing). Elements are read through pointers
/// taken once per thread: on the CPU the view indexer's bounds assertion would run per element (see <see cref="Linear"/>).</remarks>
public sealed class SwiGlu
{
    #region Kernels

    /// <summary>Forward over a chunk of the N·H outputs.</summary>
    internal static unsafe void ForwardKernel(
        ArrayView<float> output, // (N, H)
        ArrayView<float> gateUp, // (N, 2H)
        int h, long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        if (start >= end)
            return;
        fixed (float* outputBase = &output[0])
        fixed (float* gateUpBase = &gateUp[0])
        {
            long row = start / h, column = start - row * h;
            float* gate = gateUpBase + row * 2 * h;
            for (long i = start; i < end; i++)
            {
                float g = gate[column];
                outputBase[i] = g / (1f + XMath.Exp(-g)) * gate[column + h];
                if (++column == h)
                {
                    column = 0;
                    gate += 2 * h;
                }
            }
        }
    }

    /// <summary>Backward over a chunk of the N·H outputs.</summary>
    internal static unsafe void BackwardKernel(
        ArrayView<float> dGateUp, // (N, 2H)
        ArrayView<float> dOut,    // (N, H)
        ArrayView<float> gateUp,  // (N, 2H)
        int h, long count, int chunk)
    {
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, count);
        if (start >= end)
            return;
        fixed (float* dGateUpBase = &dGateUp[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* gateUpBase = &gateUp[0])
        {
            long row = start / h, column = start - row * h;
            float* gate = gateUpBase + row * 2 * h, dGate = dGateUpBase + row * 2 * h;
            for (long i = start; i < end; i++)
            {
                float g = gate[column];
                float sigmoid = 1f / (1f + XMath.Exp(-g));
                float d = dOutBase[i];
                dGate[column] = d * gate[column + h] * sigmoid * (1f + g * (1f - sigmoid));
                dGate[column + h] = d * g * sigmoid;
                if (++column == h)
                {
                    column = 0;
                    gate += 2 * h;
                    dGate += 2 * h;
                }
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, long, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, long, int> backward;

    internal SwiGlu(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, long, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, long, int>(BackwardKernel);
    }

    /// <summary>out = silu(gate)·up.</summary>
    /// <param name="output">(N, H), overwritten.</param>
    /// <param name="gateUp">Gate and up projections (N, 2H): each row H gate values, then H up values.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> gateUp, int n, int h)
    {
        const string op = "SwiGlu.Forward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "out", output, count, "N*H");
        Check.Length(op, "gateUp", gateUp, 2 * count, "N*2H");
        forward(context.ElementConfig(count, out int chunk), output, gateUp, h, count, chunk);
    }

    /// <summary>dGate and dUp from dOut, in the forward's (N, 2H) layout.</summary>
    /// <param name="dGateUp">(N, 2H), overwritten: each row H gate gradients, then H up gradients.</param>
    /// <param name="dOut">(N, H).</param>
    /// <param name="gateUp">The forward's gate and up (N, 2H).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dGateUp, ArrayView<float> dOut, ArrayView<float> gateUp, int n, int h)
    {
        const string op = "SwiGlu.Backward";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "dGateUp", dGateUp, 2 * count, "N*2H");
        Check.Length(op, "dOut", dOut, count, "N*H");
        Check.Length(op, "gateUp", gateUp, 2 * count, "N*2H");
        backward(context.ElementConfig(count, out int chunk), dGateUp, dOut, gateUp, h, count, chunk);
    }

    #endregion
}
