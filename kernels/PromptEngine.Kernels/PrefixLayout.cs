using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// The permutation between a deep prompt's two layouts. Hugging Face PEFT's PREFIX_TUNING keeps one row per virtual
/// token, <c>(Pv, L·2, d)</c> with d = token_dim = KV·hs and the middle axis ordered (layer, key|value): that is what
/// prefix tuning's reparameterisation MLP writes, one row per token. The engine's attention reads each layer's keys, then
/// its values, for all tokens together: <c>(L·2, Pv, d)</c>. Forward: PEFT → engine,
/// <c>engine[part, token, c] = peft[token, part, c]</c>. Backward: the inverse permutation carries the engine's
/// dPrefix back to the MLP's output, <c>dPeft[token, part, c] = dEngine[part, token, c]</c>. Outputs are overwritten.
/// </summary>
/// <remarks>Both directions swap the two outer axes of a (rows, cols, d) tensor, so one kernel serves them. A pure
/// copy, elementwise and barrier-free: one kernel for both shapes, contiguous output chunks per thread (one element per
/// thread on a GPU, coalesced writes; the reads are contiguous within each run of d).</remarks>
public sealed class PrefixLayout
{
    #region Kernels

    /// <summary>output (cols, rows, d) ← input (rows, cols, d) with the outer axes swapped, over a chunk of output elements.</summary>
    internal static void SwapKernel(
        ArrayView<float> output, // (cols, rows, d)
        ArrayView<float> input,  // (rows, cols, d)
        int rows, int cols, int d, long count, int chunk)
    {
        var run = ThreadRun.Of(count, chunk);
        long plane = (long)rows * d;
        for (long i = run.Start; i < run.End; i++)
        {
            long col = i / plane, within = i % plane;
            long row = within / d, channel = within % d;
            output[i] = input[(row * cols + col) * d + channel];
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int, long, int> swap;

    internal PrefixLayout(KernelContext context)
    {
        this.context = context;
        swap = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int, int, long, int>(SwapKernel);
    }

    /// <summary>PEFT layout → engine layout: <c>engine[part, token, c] = peft[token, part, c]</c>.</summary>
    /// <param name="engineLayout">(L·2, Pv, d), overwritten; must not overlap <paramref name="peftLayout"/>.</param>
    /// <param name="peftLayout">(Pv, L·2, d): one row of L·2·d per virtual token.</param>
    /// <param name="virtualTokens">Pv.</param>
    /// <param name="parts">L·2: per layer its keys, then its values.</param>
    /// <param name="d">token_dim = KV·hs.</param>
    /// <exception cref="KernelShapeException">A length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> engineLayout, ArrayView<float> peftLayout, int virtualTokens, int parts, int d)
    {
        const string op = "PrefixLayout.Forward";
        context.Enter(op);
        Check.Positive(op, ("Pv", virtualTokens), ("L*2", parts), ("d", d));
        Launch(op, "engine (L*2, Pv, d)", engineLayout, "peft (Pv, L*2, d)", peftLayout, virtualTokens, parts, d);
    }

    /// <summary>Gradient of <see cref="Forward"/>, the inverse permutation: <c>dPeft[token, part, c] = dEngine[part, token, c]</c>.</summary>
    /// <param name="dPeftLayout">(Pv, L·2, d), overwritten; must not overlap <paramref name="dEngineLayout"/>.</param>
    /// <param name="dEngineLayout">(L·2, Pv, d), e.g. the engine's dPrefix.</param>
    /// <param name="virtualTokens">Pv.</param>
    /// <param name="parts">L·2.</param>
    /// <param name="d">token_dim = KV·hs.</param>
    /// <exception cref="KernelShapeException">A length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dPeftLayout, ArrayView<float> dEngineLayout, int virtualTokens, int parts, int d)
    {
        const string op = "PrefixLayout.Backward";
        context.Enter(op);
        Check.Positive(op, ("Pv", virtualTokens), ("L*2", parts), ("d", d));
        Launch(op, "dPeft (Pv, L*2, d)", dPeftLayout, "dEngine (L*2, Pv, d)", dEngineLayout, parts, virtualTokens, d);
    }

    /// <summary>output (cols, rows, d) ← input (rows, cols, d).</summary>
    void Launch(string op, string outputName, ArrayView<float> output, string inputName, ArrayView<float> input, int rows, int cols, int d)
    {
        long count = (long)rows * cols * d;
        Check.Length(op, outputName, output, count, "Pv*L*2*d");
        Check.Length(op, inputName, input, count, "Pv*L*2*d");
        swap(context.RunConfig(count, out int chunk), output, input, rows, cols, d, count, chunk);
    }

    #endregion
}
