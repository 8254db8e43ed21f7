using ILGPU;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>
/// GPT-2 blocks: learned positions added to the embedding, pre-LayerNorm with biases, no rotation, GELU MLP.
/// <code>
/// h  = x + Wo · attention(Wq·ln(x), Wk·ln(x), Wv·ln(x)) + bo
/// x' = h + Wdown · gelu(Wup·ln(h) + bup) + bdown
/// </code>
/// LayerNorm's input gradient goes through dTemp and a residual add (its backward overwrites).
/// </summary>
internal sealed class Gpt2Blocks(KernelContext kernels, TransformerConfig config, EngineOptions options, DeviceWeights weights, MemoryPlan memory)
    : BlockProgram(kernels, config, options, weights, memory)
{
    protected override void Embed(in PassDimensions d, ArrayView<int> map, ArrayView<int> positions)
    {
        base.Embed(d, map, positions);
        kernels.PositionEmbedding.Forward(m.Residual(0, d.N), positions, weights.PositionEmbedding, d.N, d.C, config.MaxPositions);
    }

    protected override void BlockForward(in PassDimensions d, int l, int s, int nextSlot)
    {
        var w = weights.Block(l);
        int R = d.RowsAfterAttention(l);
        long rc = (long)R * d.C;
        var (normed, h, hNorm) = (m.Ln(d.N), m.Mid(s, R), m.Ln(R));
        var (proj, up, act) = (m.Projection(R), m.PreActivation(s, R), m.Activated(R));

        kernels.LayerNorm.Forward(normed, m.Residual(l, d.N), w.AttentionNorm, w.AttentionNormBias, m.Mean1(s, d.N), m.Rstd1(s, d.N), d.N, d.C, d.Eps);
        Attention(d, l, s, normed, rotate: false);
        var (att, xRows) = RowsAfterAttention(d, l, s);
        kernels.Linear.Forward(proj, att, w.AttentionOutput, w.AttentionOutputBias, R, d.Q, d.C);
        kernels.Residual.Forward(h, xRows, proj, rc);
        kernels.LayerNorm.Forward(hNorm, h, w.MlpNorm, w.MlpNormBias, m.Mean2(s, R), m.Rstd2(s, R), R, d.C, d.Eps);
        kernels.Linear.Forward(up, hNorm, w.MlpUp, w.MlpUpBias, R, d.C, d.I);
        kernels.Gelu.Forward(act, up, (long)R * d.I);
        kernels.Linear.Forward(proj, act, w.MlpDown, w.MlpDownBias, R, d.I, d.C);
        kernels.Residual.Forward(m.Residual(l + 1, R), h, proj, rc);
    }

    protected override void BlockBackward(in PassDimensions d, int l, int s, int injectedRows)
    {
        var w = weights.Block(l);
        int R = d.RowsAfterAttention(l);
        long rc = (long)R * d.C, nc = (long)d.N * d.C;
        var dRes = m.DResidual(d.N); // gradient of the residual stream, carried down through the blocks
        var dOut = d.Compacted(l) ? m.DScored(R) : dRes; // the compacted block's output gradient, as the loss left it
        var (dNorm, dAct, dUp, dTmp) = (m.DLn(R), m.DActivated(R), m.DPreActivation(R), m.DTemp(R));

        kernels.Linear.Backward(dAct, dOut, w.MlpDown, R, d.I, d.C);
        kernels.Gelu.Backward(dUp, dAct, m.PreActivation(s, R), (long)R * d.I);
        kernels.Linear.Backward(dNorm, dUp, w.MlpUp, R, d.C, d.I);
        kernels.LayerNorm.Backward(dTmp, dNorm, m.Mid(s, R), w.MlpNorm, m.Mean2(s, R), m.Rstd2(s, R), R, d.C);
        kernels.Residual.Forward(dOut, dOut, dTmp, rc);
        if (!AttentionBackward(d, l, s, dOut, injectedRows, rotate: false)) return;
        // dRes carries dx' down (all rows), or, below the compacted block, only the scored rows' dh, scattered in.
        var dxAttention = d.Compacted(l) ? dRes : m.DTemp(d.N);
        kernels.LayerNorm.Backward(dxAttention, m.DLn(d.N), m.Residual(l, d.N), w.AttentionNorm, m.Mean1(s, d.N), m.Rstd1(s, d.N), d.N, d.C);
        if (!d.Compacted(l)) kernels.Residual.Forward(dRes, dRes, dxAttention, nc);
        else kernels.RowGather.Backward(dRes, dOut, m.LossPositions(R), d.N, R, d.C);
    }

    protected override void FinalNormForward(in PassDimensions d)
    {
        int R = d.RowsOut;
        kernels.LayerNorm.Forward(m.FinalNorm(R), m.Residual(d.L, R), weights.FinalNorm, weights.FinalNormBias, m.FinalMean(R), m.FinalRstd(R), R, d.C, d.Eps);
    }

    public override void FinalNormBackward(ArrayView<float> dOut, ArrayView<float> dNorm, int rows) =>
        kernels.LayerNorm.Backward(dOut, dNorm, m.Residual(config.NumLayers, rows), weights.FinalNorm, m.FinalMean(rows), m.FinalRstd(rows), rows, config.HiddenSize);
}
