using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>Which way a forward uses the KV cache.</summary>
internal enum CacheMode
{
    /// <summary>Training and scoring: no cache.</summary>
    None,
    /// <summary>Prefill: the ordinary forward over the batch, appending every layer's K and V to the cache.</summary>
    Fill,
    /// <summary>One new token per row (T = 1), attending to the cache.</summary>
    Decode,
}

/// <summary>The sizes of one pass: the model's and the batch's, computed once per forward; its backward reuses them.</summary>
/// <param name="L">Layers.</param>
/// <param name="B">Rows of the batch.</param>
/// <param name="T">Positions per row.</param>
/// <param name="C">Hidden size.</param>
/// <param name="H">Query heads.</param>
/// <param name="KVH">Key/value heads.</param>
/// <param name="hs">Head size.</param>
/// <param name="I">The MLP's intermediate size.</param>
/// <param name="Tmax">The engine's longest row (the KV cache's stride).</param>
/// <param name="Pv">The deep prompt's virtual tokens (0 without one).</param>
/// <param name="Eps">The norms' epsilon.</param>
/// <param name="Theta">RoPE's base.</param>
/// <param name="Mode">How the pass uses the KV cache.</param>
/// <param name="Scored">S when the last block runs after its attention at the S scored rows only
/// (<see cref="BlockProgram.Forward"/>), else 0.</param>
internal readonly record struct PassDimensions(int L, int B, int T, int C, int H, int KVH, int hs, int I, int Tmax, int Pv,
    float Eps, float Theta, CacheMode Mode, int Scored)
{
    /// <summary>The sizes of a pass over <paramref name="rows"/> × <paramref name="length"/> positions.</summary>
    public static PassDimensions Of(TransformerConfig config, EngineOptions options, int rows, int length, CacheMode mode, int scored) =>
        new(config.NumLayers, rows, length, config.HiddenSize, config.NumHeads, config.NumKvHeads, config.HeadDim, config.IntermediateSize,
            options.MaxLength, options.DeepVirtualTokens, (float)config.NormEps, (float)config.RopeTheta, mode, scored);

    /// <summary>Positions B·T.</summary>
    public int N => B * T;

    /// <summary>Width of the queries, H·hs.</summary>
    public int Q => H * hs;

    /// <summary>Width of the keys and of the values, KV·hs.</summary>
    public int KV => KVH * hs;

    /// <summary>One token per cached row, attending to the cache.</summary>
    public bool Decoding => Mode == CacheMode.Decode;

    /// <summary>Whether <paramref name="layer"/> continues after its attention with the scored rows only.</summary>
    public bool Compacted(int layer) => Scored > 0 && layer == L - 1;

    /// <summary>Rows R of <paramref name="layer"/> after its attention: S when compacted, else N.</summary>
    public int RowsAfterAttention(int layer) => Compacted(layer) ? Scored : N;

    /// <summary>Rows leaving the last block: those the final norm and the loss read.</summary>
    public int RowsOut => Scored > 0 ? Scored : N;
}
