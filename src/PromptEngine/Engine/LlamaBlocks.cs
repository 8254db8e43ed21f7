using ILGPU;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>
/// Llama-family blocks (Llama, Mistral, Qwen2): pre-RMSNorm, rotary q and k, SwiGLU MLP.
/// <code>
/// h  = x + Wo · attention(rope(Wq·rms(x)), rope(Wk·rms(x)), Wv·rms(x))
/// x' = h + Wdown · (silu(Wgate·rms(h)) ⊙ Wup·rms(h))
/// </code>
/// In the forward's chain of blocks each block ends with the next norm fused into its residual add
/// (<see cref="ResidualRmsNorm"/>): the next block's attention norm (output in the ln scratch, rstd in the next slot) or,
/// after the last block, the final norm; a chained block after the first therefore finds its input already normalised.
/// Re-run alone (recomputation) a block norms its own input and ends with a plain add.
/// </summary>
internal sealed class LlamaBlocks(KernelContext kernels, TransformerConfig config, EngineOptions options, DeviceWeights weights, MemoryPlan memory)
    : BlockProgram(kernels, config, options, weights, memory)
{
    protected override void BlockForward(in PassDimensions d, int l, int s, int nextSlot)
    {
        var w = weights.Block(l);
        bool chained = nextSlot >= 0;
        int R = d.RowsAfterAttention(l);
        var (x, normed, h, hNorm) = (m.Residual(l, d.N), m.Ln(d.N), m.Mid(s, R), m.Ln(R));
        var (proj, gateUp, act) = (m.Projection(R), m.PreActivation(s, R), m.Activated(R));

        if (!(chained && l > 0)) kernels.RmsNorm.Forward(normed, x, w.AttentionNorm, m.Rstd1(s, d.N), d.N, d.C, d.Eps);
        Attention(d, l, s, normed, rotate: true);
        var (att, xRows) = RowsAfterAttention(d, l, s);
        kernels.Linear.Forward(proj, att, w.AttentionOutput, w.AttentionOutputBias, R, d.Q, d.C);
        kernels.ResidualRmsNorm.Forward(h, hNorm, m.Rstd2(s, R), xRows, proj, w.MlpNorm, R, d.C, d.Eps);
        kernels.Linear.Forward(gateUp, hNorm, w.MlpGateUp, default, R, d.C, 2 * d.I);
        kernels.SwiGlu.Forward(act, gateUp, R, d.I);
        kernels.Linear.Forward(proj, act, w.MlpDown, w.MlpDownBias, R, d.I, d.C);
        var output = m.Residual(l + 1, R);
        if (!chained) kernels.Residual.Forward(output, h, proj, (long)R * d.C);
        else if (l + 1 < d.L)
            kernels.ResidualRmsNorm.Forward(output, normed, m.Rstd1(nextSlot, d.N), h, proj, weights.Block(l + 1).AttentionNorm, d.N, d.C, d.Eps);
        else
            kernels.ResidualRmsNorm.Forward(output, m.FinalNorm(R), m.FinalRstd(R), h, proj, weights.FinalNorm, R, d.C, d.Eps);
    }

    protected override void BlockBackward(in PassDimensions d, int l, int s, int injectedRows)
    {
        var w = weights.Block(l);
        int R = d.RowsAfterAttention(l);
        var dRes = m.DResidual(d.N); // gradient of the residual stream, carried down through the blocks
        var dOut = d.Compacted(l) ? m.DScored(R) : dRes; // the compacted block's output gradient, as the loss left it
        var (dNorm, dAct, dGateUp) = (m.DLn(R), m.DActivated(R), m.DPreActivation(R));

        kernels.Linear.Backward(dAct, dOut, w.MlpDown, R, d.I, d.C);
        kernels.SwiGlu.Backward(dGateUp, dAct, m.PreActivation(s, R), R, d.I);
        kernels.Linear.Backward(dNorm, dGateUp, w.MlpGateUp, R, d.C, 2 * d.I);
        kernels.RmsNorm.Backward(dOut, dNorm, m.Mid(s, R), w.MlpNorm, m.Rstd2(s, R), R, d.C, accumulate: true);
        if (!AttentionBackward(d, l, s, dOut, injectedRows, rotate: true)) return;
        // dRes carries dx' down (all rows), or, below the compacted block, only the scored rows' dh, scattered in.
        kernels.RmsNorm.Backward(dRes, m.DLn(d.N), m.Residual(l, d.N), w.AttentionNorm, m.Rstd1(s, d.N), d.N, d.C, accumulate: !d.Compacted(l));
        if (d.Compacted(l)) kernels.RowGather.Backward(dRes, dOut, m.LossPositions(R), d.N, R, d.C);
    }

    /// <summary>Nothing: the last chained block ended with the final norm, fused with its residual add.</summary>
    protected override void FinalNormForward(in PassDimensions d) { }

    public override void FinalNormBackward(ArrayView<float> dOut, ArrayView<float> dNorm, int rows) =>
        kernels.RmsNorm.Backward(dOut, dNorm, m.Residual(config.NumLayers, rows), weights.FinalNorm, m.FinalRstd(rows), rows, config.HiddenSize);
}
