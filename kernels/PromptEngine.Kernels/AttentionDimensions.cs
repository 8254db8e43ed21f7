using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// The dimensions of every attention kernel (<see cref="Attention"/>, <see cref="FlashAttention"/>,
/// <see cref="AttentionPrefix"/>, <see cref="AttentionDecode"/>), passed to the kernels as one argument: the backward
/// kernels would otherwise need more parameters than ILGPU's LoadStreamKernel overloads take, and a named field
/// cannot be swapped with its neighbour the way a positional integer can. Public because ILGPU's runtime assembly must
/// see every kernel parameter type, and because launchers with long lists take it (<see cref="AttentionPrefix"/>).
/// </summary>
public readonly struct AttentionDimensions
{
    /// <summary>Batch rows B.</summary>
    public readonly int B;

    /// <summary>Sequence length T; for <see cref="AttentionDecode"/>, the key/value cache's capacity Tmax per row.</summary>
    public readonly int T;

    /// <summary>Query heads H, a multiple of <see cref="KV"/>.</summary>
    public readonly int H;

    /// <summary>Key/value heads KV (KV = H without grouping, 1 for multi-query).</summary>
    public readonly int KV;

    /// <summary>Channels per head hs.</summary>
    public readonly int HeadSize;

    /// <summary>Deep-prompt keys per kv head Pv that every query attends to besides its own (<see cref="AttentionPrefix"/>); else 0.</summary>
    public readonly int Prefix;

    /// <summary>1/√hs, rounded to float once on the host, the same for every attention kernel.</summary>
    public readonly float Scale;

    /// <summary>Rows each thread of a CPU-shaped kernel takes in turn (its <see cref="ThreadRun"/>), set by the launcher.</summary>
    public readonly int RowsPerThread;

    /// <summary>Rows per block of queries and of keys of a <see cref="FlashAttention"/> kernel, set by the launcher.</summary>
    public readonly int Block;

    /// <summary>The dimensions of one attention call.</summary>
    /// <param name="b">Batch rows B.</param>
    /// <param name="t">Sequence length T (or cache capacity Tmax).</param>
    /// <param name="h">Query heads H.</param>
    /// <param name="kv">Key/value heads KV.</param>
    /// <param name="headSize">Channels per head hs.</param>
    /// <param name="prefix">Deep-prompt keys per kv head Pv, 0 for none.</param>
    public AttentionDimensions(int b, int t, int h, int kv, int headSize, int prefix = 0) : this(b, t, h, kv, headSize, prefix, 1, 0) { }

    AttentionDimensions(int b, int t, int h, int kv, int headSize, int prefix, int rowsPerThread, int block)
    {
        B = b;
        T = t;
        H = h;
        KV = kv;
        HeadSize = headSize;
        Prefix = prefix;
        Scale = (float)(1 / Math.Sqrt(headSize));
        RowsPerThread = rowsPerThread;
        Block = block;
    }

    /// <summary>These dimensions with a CPU-shaped kernel's run of rows per thread.</summary>
    internal AttentionDimensions WithRowsPerThread(int rowsPerThread) => new(B, T, H, KV, HeadSize, Prefix, rowsPerThread, Block);

    /// <summary>These dimensions with a FlashAttention block edge.</summary>
    internal AttentionDimensions WithBlock(int block) => new(B, T, H, KV, HeadSize, Prefix, RowsPerThread, block);

    /// <summary>Throws unless every dimension is positive (Pv too when <paramref name="withPrefix"/>) and H is a multiple of KV;
    /// <paramref name="sequence"/> names T in the message (Tmax for a cache).</summary>
    internal void Check(string op, bool withPrefix = false, string sequence = "T")
    {
        Kernels.Check.Positive(op, ("B", B), (sequence, T), ("H", H), ("KV", KV), ("hs", HeadSize));
        if (withPrefix)
            Kernels.Check.Positive(op, ("Pv", Prefix));
        if (H % KV != 0)
            throw new KernelShapeException($"{op}: query heads H = {H} must be a multiple of kv heads KV = {KV}.");
    }
}

/// <summary>A pair of key and value tensors of the same shape (a deep prompt's prefix, or its gradient), named so that
/// the two cannot be swapped silently at a call site.</summary>
/// <param name="Keys">Keys.</param>
/// <param name="Values">Values.</param>
public readonly record struct KeysValues(ArrayView<float> Keys, ArrayView<float> Values);
