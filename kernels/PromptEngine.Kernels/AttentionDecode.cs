using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Attention for cached generation: one new query per batch row against that row's cached keys, and the
/// append that writes new keys and values into the cache. Extends <see cref="Attention"/> (same scores, same
/// grouped-query heads) to a key/value cache of capacity Tmax per row.
/// <c>out[b,h] = Σ_{j &lt; len_b} p_j · vCache[b,j,g]</c> with <c>p_j = softmax_j(scale · q[b,h]·kCache[b,j,g])</c>,
/// g = h / (H/KV), scale = 1/√hs, len_b = lengths[b]. Each row has its own length, so rows with different
/// prompt and input lengths share one launch and no padding slot is ever read.
/// Shapes: q, out (B, H, hs); kCache, vCache (B, Tmax, KV, hs); lengths (B) int; for the append k, v (B, T, KV, hs)
/// and slots (B) int. Every output is overwritten (the cache only at the slots written).
/// </summary>
/// <remarks>
/// <para>Inference only: there is no backward and no saved statistic, because generation never differentiates.
/// The query is expected to be rotated already (RoPE at the row's own position) and the cache to hold
/// rotated keys, so the scores are those of <see cref="Attention.Forward"/> at that position.</para>
/// <para>CPU-shaped kernel: one thread per (b, h), a single pass of online softmax that rescales the output
/// row (the accumulator) whenever the running max grows, so every key is scored once. GPU-shaped kernel:
/// one group per (b, h) as in <see cref="Attention"/>'s forward: threads split the keys for the max and the
/// sum, then stage Group.DimX probabilities at a time in shared memory and split the channels to accumulate.
/// Each query head re-reads its kv head's cache rows (from L2 on a GPU); one group per kv head serving all its
/// query heads would read the cache once, a later optimisation.</para>
/// <para>Lengths are device values the launcher cannot see: a length below 0 counts as 0 (the row's output is
/// zeros) and one above Tmax as Tmax. The append skips rows whose slot is negative (idle rows) and any element
/// that would land at or past Tmax, so a bad slot cannot write outside the cache.</para>
/// </remarks>
public sealed class AttentionDecode
{
    /// <summary>The forward's tensors, one kernel argument for both shapes' kernels (public because ILGPU's runtime
    /// assembly must see every kernel parameter type).</summary>
    /// <param name="Output">(B, H, hs).</param>
    /// <param name="Q">(B, H, hs).</param>
    /// <param name="KCache">(B, Tmax, KV, hs).</param>
    /// <param name="VCache">(B, Tmax, KV, hs).</param>
    /// <param name="Lengths">(B).</param>
    public readonly record struct Tensors(ArrayView<float> Output, ArrayView<float> Q, ArrayView<float> KCache, ArrayView<float> VCache,
        ArrayView<int> Lengths);

    #region Kernels

    /// <summary>Valid keys of a row: lengths[b] clamped to [0, capacity].</summary>
    static int RowLength(ArrayView<int> lengths, int batch, int capacity) => Math.Max(0, Math.Min(lengths[batch], capacity));

    /// <summary>CPU-shaped forward: a <see cref="ThreadRun"/> of (b, h) rows per thread; single-pass online softmax with the output row as the accumulator.</summary>
    internal static void ForwardRowKernel(Tensors tensors, AttentionDimensions dims)
    {
        var run = ThreadRun.Of(dims.B * dims.H, dims.RowsPerThread); // row = b·H + head
        for (int row = (int)run.Start; row < run.End; row++)
            ForwardRow(tensors, dims, row);
    }

    /// <summary>One (b, h) row of <see cref="ForwardRowKernel"/>.</summary>
    static void ForwardRow(Tensors tensors, AttentionDimensions dims, int row)
    {
        ArrayView<float> output = tensors.Output, q = tensors.Q, kCache = tensors.KCache, vCache = tensors.VCache;
        ArrayView<int> lengths = tensors.Lengths;
        int h = dims.H, kv = dims.KV, headSize = dims.HeadSize, capacity = dims.T;
        int head = row % h;
        int batch = row / h;
        int kvHead = head / (h / kv);
        int length = RowLength(lengths, batch, capacity);
        long qOffset = (long)row * headSize;
        for (int d = 0; d < headSize; d++)
            output[qOffset + d] = 0;
        float max = float.NegativeInfinity, sum = 0;
        for (int j = 0; j < length; j++)
        {
            long kvOffset = ((long)(batch * capacity + j) * kv + kvHead) * headSize;
            float s = Attention.Score(q, qOffset, kCache, kvOffset, headSize, dims.Scale);
            float p;
            if (s > max)
            {
                // The running max grew: rescale what is accumulated so far to the new max.
                float rescale = XMath.Exp(max - s);
                sum *= rescale;
                for (int d = 0; d < headSize; d++)
                    output[qOffset + d] *= rescale;
                max = s;
                p = 1;
            }
            else
                p = XMath.Exp(s - max);
            sum += p;
            for (int d = 0; d < headSize; d++)
                output[qOffset + d] += p * vCache[kvOffset + d];
        }
        if (sum <= 0)
            return;
        float inverse = 1 / sum;
        for (int d = 0; d < headSize; d++)
            output[qOffset + d] *= inverse;
    }

    /// <summary>GPU-shaped forward: one group per (b, h); shared memory holds 2·Group.DimX floats
    /// (a chunk of probabilities, then the reduction scratch).</summary>
    internal static void ForwardGroupKernel(Tensors tensors, AttentionDimensions dims)
    {
        ArrayView<float> output = tensors.Output, q = tensors.Q, kCache = tensors.KCache, vCache = tensors.VCache;
        ArrayView<int> lengths = tensors.Lengths;
        int h = dims.H, kv = dims.KV, headSize = dims.HeadSize, capacity = dims.T;
        int row = Grid.IdxX; // b·H + head
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var probabilities = shared.SubView(0, threads); // (Group.DimX) keys of the current chunk
        var scratch = shared.SubView(threads, threads);
        int head = row % h;
        int batch = row / h;
        int kvHead = head / (h / kv);
        int length = RowLength(lengths, batch, capacity); // uniform across the group
        long qOffset = (long)row * headSize;

        // Each thread keeps an online (max, sum) over its strided keys; the group then rescales to the common max.
        float max = float.NegativeInfinity, sum = 0;
        for (int j = thread; j < length; j += threads)
        {
            float s = Attention.Score(q, qOffset, kCache, ((long)(batch * capacity + j) * kv + kvHead) * headSize, headSize, dims.Scale);
            if (s > max)
            {
                sum = sum * XMath.Exp(max - s) + 1;
                max = s;
            }
            else
                sum += XMath.Exp(s - max);
        }
        float groupMax = GroupReduce.Max(scratch, max);
        float total = GroupReduce.Sum(scratch, sum > 0 ? sum * XMath.Exp(max - groupMax) : 0f);
        for (int d = thread; d < headSize; d += threads)
            output[qOffset + d] = 0;
        if (total <= 0) // uniform across the group: every thread read the same reduction
            return;
        float logSumExp = groupMax + XMath.Log(total);
        for (int j0 = 0; j0 < length; j0 += threads)
        {
            int j = j0 + thread;
            float p = 0;
            if (j < length)
                p = XMath.Exp(Attention.Score(q, qOffset, kCache, ((long)(batch * capacity + j) * kv + kvHead) * headSize, headSize, dims.Scale) - logSumExp);
            probabilities[thread] = p;
            Group.Barrier();
            int count = Math.Min(threads, length - j0);
            for (int d = thread; d < headSize; d += threads)
            {
                float acc = output[qOffset + d];
                for (int jj = 0; jj < count; jj++)
                    acc += probabilities[jj] * vCache[((long)(batch * capacity + j0 + jj) * kv + kvHead) * headSize + d];
                output[qOffset + d] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>Append: kCache[b, slots[b] + i] = k[b, i] and likewise for v, for i &lt; T; rows with a negative
    /// slot and elements at or past Tmax are skipped. Elementwise over a chunk of (B, T, KV·hs).</summary>
    internal static void AppendKernel(
        ArrayView<float> kCache, // (B, Tmax, KV, hs)
        ArrayView<float> vCache, // (B, Tmax, KV, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> slots,    // (B)
        int b, int t, int capacity, int width, int chunk)
    {
        long total = (long)b * t * width;
        var run = ThreadRun.Of(total, chunk);
        for (long e = run.Start; e < run.End; e++)
        {
            long rowPosition = e / width;
            int channel = (int)(e - rowPosition * width);
            int batch = (int)(rowPosition / t);
            int position = (int)(rowPosition - (long)batch * t);
            int slot = slots[batch];
            if (slot < 0 || slot + position >= capacity)
                continue;
            long target = ((long)batch * capacity + slot + position) * width + channel;
            kCache[target] = k[e];
            vCache[target] = v[e];
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, Tensors, AttentionDimensions> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int> append;

    internal AttentionDecode(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        forward = accelerator.LoadStreamKernel<Tensors, AttentionDimensions>(
            context.Shape == KernelShape.Cpu ? ForwardRowKernel : ForwardGroupKernel);
        append = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>(
            AppendKernel);
    }

    /// <summary>One query per row against the row's first <c>lengths[b]</c> cached keys and values.</summary>
    /// <param name="output">Attention output (B, H, hs), overwritten; zeros for a row of length 0.</param>
    /// <param name="q">Queries (B, H, hs), already rotated to each row's position.</param>
    /// <param name="cache">Key cache (rotated keys) and value cache, each (B, Tmax, KV, hs).</param>
    /// <param name="lengths">Valid cached positions per row (B), the new position's own key included; clamped to [0, Tmax].</param>
    /// <param name="dims">B, T = the cache capacity Tmax per row, H (a multiple of KV), KV, hs (the scores are scaled by 1/√hs).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> q, KeysValues cache, ArrayView<int> lengths, AttentionDimensions dims)
    {
        const string op = "AttentionDecode.Forward";
        context.Enter(op);
        dims.Check(op, sequence: "Tmax");
        long rows = (long)dims.B * dims.H, cached = (long)dims.B * dims.T * dims.KV * dims.HeadSize;
        if (rows > int.MaxValue)
            throw new KernelShapeException($"{op}: B*H = {rows} rows exceed the launch limit.");
        Check.Length(op, "out", output, rows * dims.HeadSize, "B*H*hs");
        Check.Length(op, "q", q, rows * dims.HeadSize, "B*H*hs");
        Check.Length(op, "kCache", cache.Keys, cached, "B*Tmax*KV*hs");
        Check.Length(op, "vCache", cache.Values, cached, "B*Tmax*KV*hs");
        Check.Length(op, "lengths", lengths, dims.B, "B");
        var config = context.RowConfig((int)rows, out int rowsPerThread, sharedFloatsPerThread: 2);
        forward(config, new Tensors(output, q, cache.Keys, cache.Values, lengths), dims.WithRowsPerThread(rowsPerThread));
    }

    /// <summary>Writes T new positions of keys and values per row into the caches, starting at each row's slot:
    /// prefill writes a whole prompt (slots 0), a decode step one position (T = 1, slot = the row's length).</summary>
    /// <param name="cache">Key and value caches, each (B, Tmax, KV, hs), written at [b, slots[b] .. slots[b] + T) only.</param>
    /// <param name="added">New keys (already rotated) and values, each (B, T, KV, hs).</param>
    /// <param name="slots">First cache position written per row (B); negative leaves the row untouched.</param>
    /// <param name="b">Batch rows B.</param>
    /// <param name="t">New positions per row T (≤ Tmax); positions landing at or past Tmax are dropped.</param>
    /// <param name="capacity">Cache capacity Tmax per row.</param>
    /// <param name="kv">Key/value heads KV.</param>
    /// <param name="headSize">Channels per head hs.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or T exceeds Tmax.</exception>
    public void Append(KeysValues cache, KeysValues added, ArrayView<int> slots, int b, int t, int capacity, int kv, int headSize)
    {
        const string op = "AttentionDecode.Append";
        context.Enter(op);
        Check.Positive(op, ("B", b), ("T", t), ("Tmax", capacity), ("KV", kv), ("hs", headSize));
        if (t > capacity)
            throw new KernelShapeException($"{op}: T = {t} new positions exceed the cache capacity Tmax = {capacity}.");
        long cached = (long)b * capacity * kv * headSize, count = (long)b * t * kv * headSize;
        Check.Length(op, "kCache", cache.Keys, cached, "B*Tmax*KV*hs");
        Check.Length(op, "vCache", cache.Values, cached, "B*Tmax*KV*hs");
        Check.Length(op, "k", added.Keys, count, "B*T*KV*hs");
        Check.Length(op, "v", added.Values, count, "B*T*KV*hs");
        Check.Length(op, "slots", slots, b, "B");
        append(context.RunConfig(count, out int chunk), cache.Keys, cache.Values, added.Keys, added.Values, slots, b, t, capacity, kv * headSize, chunk);
    }

    #endregion
}
