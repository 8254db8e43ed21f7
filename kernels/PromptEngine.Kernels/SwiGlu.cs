using ILGPU.Algorithms;
using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// SwiGLU gate of the LLaMA MLP: <c>out = silu(gate)·up</c> with silu(g) = g·σ(g). Backward:
/// <c>dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g)))</c>, <c>dUp = dOut·silu(g)</c>. The gate and up projections come as one
/// tensor (N, 2H), each row the H gate values then the H up values: the output of one Linear over the gate and up
/// weights stacked (the engine's fused MLP input projection), and dGateUp comes back in the same layout for one
/// data-gradient Linear. out and dOut are (N, H) with N = B·T and H the hidden width; gradients are overwritten.
/// </summary>
/// <remarks>One member of the elementwise family (<see cref="Elementwise"/>'s gated kernels): <see cref="SiluGate"/>
/// is its math; another GLU variant would be another <see cref="IGateOp"/>.</remarks>
public sealed class SwiGlu
{
    /// <summary>silu(g)·u and its two gradients.</summary>
    public readonly struct SiluGate : IGateOp
    {
        /// <inheritdoc/>
        public float Forward(float g, float up) => g / (1f + XMath.Exp(-g)) * up;

        /// <inheritdoc/>
        public GateGradient Backward(float dOut, float g, float up)
        {
            float sigmoid = 1f / (1f + XMath.Exp(-g));
            return new GateGradient(dOut * up * sigmoid * (1f + g * (1f - sigmoid)), dOut * g * sigmoid);
        }
    }

    readonly GateLauncher<SiluGate> launcher;

    internal SwiGlu(KernelContext context) => launcher = new(context);

    /// <summary>out = silu(gate)·up.</summary>
    /// <param name="output">(N, H), overwritten.</param>
    /// <param name="gateUp">Gate and up projections (N, 2H): each row H gate values, then H up values.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> gateUp, int n, int h) =>
        launcher.Forward("SwiGlu.Forward", default, output, gateUp, n, h);

    /// <summary>dGate and dUp from dOut, in the forward's (N, 2H) layout.</summary>
    /// <param name="dGateUp">(N, 2H), overwritten: each row H gate gradients, then H up gradients.</param>
    /// <param name="dOut">(N, H).</param>
    /// <param name="gateUp">The forward's gate and up (N, 2H).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="h">Hidden width.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dGateUp, ArrayView<float> dOut, ArrayView<float> gateUp, int n, int h) =>
        launcher.Backward("SwiGlu.Backward", default, dGateUp, dOut, gateUp, n, h);
}
