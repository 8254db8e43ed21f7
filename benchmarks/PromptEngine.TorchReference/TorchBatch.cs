using PromptEngine.Engine;
using PromptEngine.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace PromptEngine.TorchReference;

/// <summary>
/// An engine <see cref="Batch"/> turned into TorchSharp index tensors once, so that repeated steps on the same
/// batch (benchmarks) pay for no host-to-tensor conversion. Built by <see cref="TorchCausalLm.Prepare"/>.
/// </summary>
/// <remarks>
/// The placement story is the engine's: source map value s ≥ 0 is token s, s &lt; 0 is prompt row −1 − s; rows
/// are right-padded with key mask 0; position ids drive RoPE (Llama) or the learned-position rows (GPT-2); a
/// position attends to the earlier-or-same slots of its row whose key mask is 1.
/// </remarks>
public sealed class TorchBatch : IDisposable
{
    /// <summary>The engine batch this was built from.</summary>
    public Batch Source { get; }
    /// <summary>B.</summary>
    public int Rows => Source.Rows;
    /// <summary>T.</summary>
    public int Length => Source.Length;
    /// <summary>Whether any position reads a prompt row.</summary>
    public bool ReadsPrompt { get; }
    /// <summary>Rows of the prompt bank the batch refers to at most (1 + the largest prompt row used).</summary>
    public int PromptRowsUsed { get; }

    /// <summary>(N) int64 token id at each position; 0 where the position reads the prompt.</summary>
    internal Tensor TokenIds { get; }
    /// <summary>(N) int64 prompt row at each position; 0 where the position reads a token.</summary>
    internal Tensor PromptIndex { get; }
    /// <summary>(N, 1) bool, true where the position reads the prompt.</summary>
    internal Tensor IsPrompt { get; }
    /// <summary>(B, 1, T, T) bool, true where query i may attend to key j: j ≤ i and key j is not padding.</summary>
    internal Tensor AttentionMask { get; }
    /// <summary>(N) int64 position ids (GPT-2's learned-position rows).</summary>
    internal Tensor PositionIds { get; }
    /// <summary>(B, 1, T, hs) RoPE cosines and sines per position, Hugging Face's rotate_half layout (Llama only).</summary>
    internal Tensor? Cos { get; }
    /// <inheritdoc cref="Cos"/>
    internal Tensor? Sin { get; }
    /// <summary>(S) int64 flattened scored positions b·T + t.</summary>
    internal Tensor LossPositions { get; }
    /// <summary>(S) int64 target column per scored position: the vocabulary id, or its index in the verbalizer; −1 ignored.</summary>
    internal Tensor TargetColumns { get; }
    /// <summary>(R) int64 verbalizer rows, or null for the whole vocabulary.</summary>
    internal Tensor? Verbalizer { get; }
    /// <summary>(N) int64 Hugging Face–style labels already shifted: the token position p predicts, or −100.</summary>
    internal Tensor DenseLabels { get; }

    internal TorchBatch(Batch batch, TransformerConfig config, ScalarType dtype)
    {
        Source = batch;
        int B = batch.Rows, T = batch.Length, N = batch.Positions;
        var tokens = new long[N];
        var promptIndex = new long[N];
        var isPrompt = new bool[N];
        for (var i = 0; i < N; i++)
        {
            var s = batch.SourceMap[i];
            if (s >= 0) tokens[i] = s;
            else
            {
                promptIndex[i] = -1 - s;
                isPrompt[i] = true;
                PromptRowsUsed = Math.Max(PromptRowsUsed, -s);
            }
        }
        ReadsPrompt = PromptRowsUsed > 0;
        TokenIds = tensor(tokens, int64);
        PromptIndex = tensor(promptIndex, int64);
        IsPrompt = tensor(isPrompt).reshape(N, 1);

        var allowed = new bool[B * T * T];
        for (var b = 0; b < B; b++)
            for (var i = 0; i < T; i++)
                for (var j = 0; j <= i; j++)
                    allowed[(b * T + i) * T + j] = batch.KeyMask[b * T + j] == 1;
        AttentionMask = tensor(allowed).reshape(B, 1, T, T);
        PositionIds = tensor(batch.PositionIds.Select(p => (long)p).ToArray(), int64);

        if (config.Family == ModelFamily.Llama)
        {
            // rotate_half layout: channel c < hs/2 pairs with c + hs/2, both at frequency θ^(−2c/hs).
            int hs = config.HeadDim, half = hs / 2;
            var cos = new double[N * hs];
            var sin = new double[N * hs];
            for (var n = 0; n < N; n++)
                for (var c = 0; c < half; c++)
                {
                    var angle = batch.PositionIds[n] * Math.Pow(config.RopeTheta, -2.0 * c / hs);
                    cos[n * hs + c] = cos[n * hs + c + half] = Math.Cos(angle);
                    sin[n * hs + c] = sin[n * hs + c + half] = Math.Sin(angle);
                }
            Cos = tensor(cos, float64).to_type(dtype).reshape(B, T, 1, hs).transpose(1, 2).contiguous();
            Sin = tensor(sin, float64).to_type(dtype).reshape(B, T, 1, hs).transpose(1, 2).contiguous();
        }

        var words = batch.Verbalizer;
        LossPositions = tensor(batch.LossPositions.Select(p => (long)p).ToArray(), int64);
        TargetColumns = tensor(batch.Targets.Select(t => (long)(t < 0 ? -1 : words is null ? t : Array.IndexOf(words, t))).ToArray(), int64);
        Verbalizer = words is null ? null : tensor(words.Select(w => (long)w).ToArray(), int64);
        var labels = Enumerable.Repeat(-100L, N).ToArray();
        for (var i = 0; i < batch.LossPositions.Length; i++)
            if (batch.Targets[i] >= 0) labels[batch.LossPositions[i]] = batch.Targets[i];
        DenseLabels = tensor(labels, int64);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in new[] { TokenIds, PromptIndex, IsPrompt, AttentionMask, PositionIds, Cos, Sin, LossPositions, TargetColumns, Verbalizer, DenseLabels })
            t?.Dispose();
    }
}
