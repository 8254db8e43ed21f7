using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>The math of a one-input elementwise op: <c>out[i] = Apply(in[i])</c>.</summary>
public interface IElementOp
{
    /// <summary>The output element for one input element.</summary>
    float Apply(float x);
}

/// <summary>The math of a two-input elementwise op: <c>out[i] = Apply(a[i], b[i])</c> (a sum, or an upstream gradient
/// times a local derivative read from a saved tensor).</summary>
public interface IElementPairOp
{
    /// <summary>The output element for one element of each input.</summary>
    float Apply(float a, float b);
}

/// <summary>The math of a gated op <c>out = act(gate)·up</c> over a fused (N, 2H) gate/up input (GLU variants).</summary>
public interface IGateOp
{
    /// <summary>One output element from its gate and up values.</summary>
    float Forward(float gate, float up);

    /// <summary>Both input gradients of one element from the upstream gradient and the forward's gate and up values.</summary>
    GateGradient Backward(float dOut, float gate, float up);
}

/// <summary>The gradients to one gate value and one up value (<see cref="IGateOp.Backward"/>).</summary>
public readonly struct GateGradient(float gate, float up)
{
    /// <summary>dLoss/dGate.</summary>
    public readonly float Gate = gate;

    /// <summary>dLoss/dUp.</summary>
    public readonly float Up = up;
}

/// <summary>
/// The elementwise kernel family: one generic body per arity (one input, two inputs, a fused gate/up pair), each
/// specialised by ILGPU for the small operation struct it is loaded with (<see cref="IElementOp"/>,
/// <see cref="IElementPairOp"/>, <see cref="IGateOp"/>), as LinearBlocked is for its weight formats: no virtual call,
/// the op's one line of math inlined into the loop. The ops themselves (their math, header and public launchers) live
/// in their own files: <see cref="Gelu"/>, <see cref="Tanh"/>, <see cref="Residual"/>, <see cref="Scale"/>,
/// <see cref="SwiGlu"/>.
/// </summary>
/// <remarks>Barrier-free: one kernel serves both shapes, each thread taking a <see cref="ThreadRun"/> of elements (long on
/// the CPU, one on a GPU for coalescing). Elements are read through pointers taken once per thread: on the CPU the view
/// indexer's bounds assertion would run per element (see <see cref="Linear"/>). An output may alias an input: each
/// element is read before the same thread writes it.</remarks>
internal static class Elementwise
{
    #region Kernels

    /// <summary>out[i] = op(in[i]) over this thread's run.</summary>
    internal static unsafe void MapKernel<TOp>(
        ArrayView<float> output, // (N)
        ArrayView<float> input,  // (N)
        TOp op, long count, int perThread)
        where TOp : struct, IElementOp
    {
        var run = ThreadRun.Of(count, perThread);
        fixed (float* outputBase = &output[0])
        fixed (float* inputBase = &input[0])
        {
            for (long i = run.Start; i < run.End; i++)
                outputBase[i] = op.Apply(inputBase[i]);
        }
    }

    /// <summary>out[i] = op(a[i], b[i]) over this thread's run.</summary>
    internal static unsafe void MapPairKernel<TOp>(
        ArrayView<float> output, // (N)
        ArrayView<float> a,      // (N)
        ArrayView<float> b,      // (N)
        TOp op, long count, int perThread)
        where TOp : struct, IElementPairOp
    {
        var run = ThreadRun.Of(count, perThread);
        fixed (float* outputBase = &output[0])
        fixed (float* aBase = &a[0])
        fixed (float* bBase = &b[0])
        {
            for (long i = run.Start; i < run.End; i++)
                outputBase[i] = op.Apply(aBase[i], bBase[i]);
        }
    }

    /// <summary>out[r, c] = op(gateUp[r, c], gateUp[r, H + c]) over this thread's run of the N·H outputs.</summary>
    internal static unsafe void GateForwardKernel<TOp>(
        ArrayView<float> output, // (N, H)
        ArrayView<float> gateUp, // (N, 2H)
        TOp op, int h, long count, int perThread)
        where TOp : struct, IGateOp
    {
        var run = ThreadRun.Of(count, perThread);
        fixed (float* outputBase = &output[0])
        fixed (float* gateUpBase = &gateUp[0])
        {
            long row = run.Start / h, column = run.Start - row * h;
            float* gate = gateUpBase + row * 2 * h;
            for (long i = run.Start; i < run.End; i++)
            {
                outputBase[i] = op.Forward(gate[column], gate[column + h]);
                if (++column == h)
                {
                    column = 0;
                    gate += 2 * h;
                }
            }
        }
    }

    /// <summary>dGateUp[r, c], dGateUp[r, H + c] = op′(dOut[r, c], gate, up) over this thread's run of the N·H outputs.</summary>
    internal static unsafe void GateBackwardKernel<TOp>(
        ArrayView<float> dGateUp, // (N, 2H)
        ArrayView<float> dOut,    // (N, H)
        ArrayView<float> gateUp,  // (N, 2H)
        TOp op, int h, long count, int perThread)
        where TOp : struct, IGateOp
    {
        var run = ThreadRun.Of(count, perThread);
        fixed (float* dGateUpBase = &dGateUp[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* gateUpBase = &gateUp[0])
        {
            long row = run.Start / h, column = run.Start - row * h;
            float* gate = gateUpBase + row * 2 * h, dGate = dGateUpBase + row * 2 * h;
            for (long i = run.Start; i < run.End; i++)
            {
                var gradient = op.Backward(dOutBase[i], gate[column], gate[column + h]);
                dGate[column] = gradient.Gate;
                dGate[column + h] = gradient.Up;
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
}

/// <summary>
/// The public face of a one-input activation of the elementwise family (<see cref="Gelu"/>, <see cref="Tanh"/>):
/// <c>out = f(x)</c> by <typeparamref name="TValue"/>, and <c>dX = dOut·f′</c> by <typeparamref name="TGradient"/> from the
/// tensor the derivative is read from (the forward's input for GELU, its output for tanh; each op's header says which).
/// Shapes (N) flat; out and dX are overwritten and may be the same view as their input.
/// </summary>
/// <typeparam name="TValue">f.</typeparam>
/// <typeparam name="TGradient">(dOut, saved) ↦ dOut·f′.</typeparam>
public abstract class Activation<TValue, TGradient>
    where TValue : struct, IElementOp
    where TGradient : struct, IElementPairOp
{
    readonly ElementLauncher<TValue> forward;
    readonly ElementPairLauncher<TGradient> backward;
    readonly string name, savedName;

    private protected Activation(KernelContext context, string name, string savedName)
    {
        forward = new(context);
        backward = new(context);
        this.name = name;
        this.savedName = savedName;
    }

    /// <summary>out = f(x).</summary>
    /// <param name="output">(N), overwritten; may be <paramref name="input"/> itself.</param>
    /// <param name="input">x (N).</param>
    /// <param name="count">Elements N (e.g. B·T·4C).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, long count) =>
        forward.Launch(name + ".Forward", default, (output, "out"), (input, "inp"), count);

    /// <summary>dX = dOut·f′, the derivative read from <paramref name="saved"/>.</summary>
    /// <param name="dX">(N), overwritten; may be <paramref name="dOut"/> itself.</param>
    /// <param name="dOut">(N).</param>
    /// <param name="saved">The forward's input or output (N), as the op's header says.</param>
    /// <param name="count">Elements N.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<float> saved, long count) =>
        backward.Launch(name + ".Backward", default, (dX, "dX"), (dOut, "dOut"), (saved, savedName), count);
}

/// <summary>A one-input elementwise kernel loaded for one operation, with its launcher's checks.</summary>
internal sealed class ElementLauncher<TOp> where TOp : struct, IElementOp
{
    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, TOp, long, int> kernel;

    public ElementLauncher(KernelContext context)
    {
        this.context = context;
        kernel = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, TOp, long, int>(Elementwise.MapKernel);
    }

    /// <summary>Checks both tensors hold N elements (each named as the op's documentation names it), then launches.</summary>
    public void Launch(string op, TOp operation, (ArrayView<float> View, string Name) output, (ArrayView<float> View, string Name) input, long count)
    {
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, output.Name, output.View, count, "N");
        Check.Length(op, input.Name, input.View, count, "N");
        kernel(context.RunConfig(count, out int perThread), output.View, input.View, operation, count, perThread);
    }
}

/// <summary>A two-input elementwise kernel loaded for one operation, with its launcher's checks.</summary>
internal sealed class ElementPairLauncher<TOp> where TOp : struct, IElementPairOp
{
    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, TOp, long, int> kernel;

    public ElementPairLauncher(KernelContext context)
    {
        this.context = context;
        kernel = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, TOp, long, int>(Elementwise.MapPairKernel);
    }

    /// <summary>Checks the three tensors hold N elements (each named as the op's documentation names it), then launches.</summary>
    public void Launch(string op, TOp operation, (ArrayView<float> View, string Name) output, (ArrayView<float> View, string Name) a,
        (ArrayView<float> View, string Name) b, long count)
    {
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, output.Name, output.View, count, "N");
        Check.Length(op, a.Name, a.View, count, "N");
        Check.Length(op, b.Name, b.View, count, "N");
        kernel(context.RunConfig(count, out int perThread), output.View, a.View, b.View, operation, count, perThread);
    }
}

/// <summary>The gated kernels (forward and backward) loaded for one operation, with their launchers' checks.</summary>
internal sealed class GateLauncher<TOp> where TOp : struct, IGateOp
{
    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, TOp, int, long, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, TOp, int, long, int> backward;

    public GateLauncher(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, TOp, int, long, int>(Elementwise.GateForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, TOp, int, long, int>(
            Elementwise.GateBackwardKernel);
    }

    /// <summary>out (N, H) from gateUp (N, 2H).</summary>
    public void Forward(string op, TOp operation, ArrayView<float> output, ArrayView<float> gateUp, int n, int h)
    {
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "out", output, count, "N*H");
        Check.Length(op, "gateUp", gateUp, 2 * count, "N*2H");
        forward(context.RunConfig(count, out int perThread), output, gateUp, operation, h, count, perThread);
    }

    /// <summary>dGateUp (N, 2H) from dOut (N, H) and the forward's gateUp (N, 2H).</summary>
    public void Backward(string op, TOp operation, ArrayView<float> dGateUp, ArrayView<float> dOut, ArrayView<float> gateUp, int n, int h)
    {
        context.Enter(op);
        Check.Positive(op, ("N", n), ("H", h));
        long count = (long)n * h;
        Check.Length(op, "dGateUp", dGateUp, 2 * count, "N*2H");
        Check.Length(op, "dOut", dOut, count, "N*H");
        Check.Length(op, "gateUp", gateUp, 2 * count, "N*2H");
        backward(context.RunConfig(count, out int perThread), dGateUp, dOut, gateUp, operation, h, count, perThread);
    }
}
