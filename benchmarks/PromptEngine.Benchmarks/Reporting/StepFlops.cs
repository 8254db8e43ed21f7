using PromptEngine.Engine;
using PromptEngine.Models;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>
/// Floating-point operations of one engine step, counted from the model's dimensions and the batch's shape: the
/// matrix-product work only, 2 FLOP per multiply-add.
/// <list type="bullet">
/// <item>Every Linear: 2·M·N·K for M rows, N outputs, K inputs (q, k, v, o; gate, up and down, or GPT-2's up and down).
/// Its backward to the input (dX = dY·W) is the same 2·M·N·K; no weight gradient is computed.</item>
/// <item>Attention: QKᵀ and P·V over the causal pairs (i, j ≤ i) of every row, 2·hs FLOP per pair and head each;
/// the backward is twice the forward (dP = dO·Vᵀ, dV = Pᵀ·dO, dQ = dS·K, dK = dSᵀ·Q), not counting the scores the
/// kernel recomputes.</item>
/// <item>The LM head at the scored positions only, over the vocabulary the loss reads (the verbalizer's words, or all
/// of it), forward and backward to the hidden state.</item>
/// </list>
/// With <c>scoredRowsOnly</c> (the engine's default when fewer rows are scored than run) the last block's output
/// projection and MLP count only the scored rows, as the engine runs them. Not counted: norms, RoPE, activations,
/// softmax, residual adds, the embedding and AdamW (elementwise, a few FLOP per element).
/// </summary>
/// <param name="LinearForward">Every Linear's forward.</param>
/// <param name="LinearBackward">Every Linear's backward to its input (zero for an inference forward).</param>
/// <param name="AttentionForward">QKᵀ and P·V.</param>
/// <param name="AttentionBackward">The four attention backward products (zero for an inference forward).</param>
/// <param name="Head">LM head forward, and backward when training.</param>
public sealed record StepFlops(double LinearForward, double LinearBackward, double AttentionForward, double AttentionBackward, double Head)
{
    /// <summary>Both directions of every Linear.</summary>
    public double Linear => LinearForward + LinearBackward;

    /// <summary>Everything counted.</summary>
    public double Total => Linear + AttentionForward + AttentionBackward + Head;

    /// <summary>Counts one step of <paramref name="batch"/> (every row of length T, prompt rows included) through a
    /// model of <paramref name="config"/>; a train step when <paramref name="training"/>, else an inference forward.</summary>
    public static StepFlops Count(TransformerConfig config, Batch batch, bool training, bool scoredRowsOnly = true)
    {
        double n = batch.Positions, s = batch.LossPositions.Length;
        double c = config.HiddenSize, inner = config.IntermediateSize, hs = config.HeadDim;
        double q = config.NumHeads * hs, kv = config.NumKvHeads * hs;
        double vocab = batch.Verbalizer?.Length ?? config.VocabSize;
        bool compactLast = scoredRowsOnly && s > 0 && s < n;
        int mlpMatrices = config.Family == ModelFamily.Llama ? 3 : 2;

        double linear = 0;
        for (var l = 0; l < config.NumLayers; l++)
        {
            double rows = compactLast && l == config.NumLayers - 1 ? s : n; // rows after the last block's attention
            linear += 2 * n * c * (q + 2 * kv);        // q, k, v at every row
            linear += 2 * rows * q * c;                // o
            linear += mlpMatrices * 2 * rows * c * inner;
        }
        double pairs = batch.Rows * (double)batch.Length * (batch.Length + 1) / 2;
        double attention = config.NumLayers * 2 * (2 * pairs * hs * config.NumHeads);
        double head = 2 * s * c * vocab;
        return training
            ? new StepFlops(linear, linear, attention, 2 * attention, 2 * head)
            : new StepFlops(linear, 0, attention, 0, head);
    }
}
