using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Deep-prompt (prefix-tuning, P-tuning v2) attention: extends <see cref="Attention"/> with Pv trainable key and value
/// vectors per kv head that every query of every batch row attends to, before its own causal keys. This is how
/// Hugging Face PEFT's PREFIX_TUNING uses its prefixes: as past_key_values, i.e. keys exactly as the cache stores
/// them (already rotated; no RoPE is applied to them) with an all-ones attention mask.
/// <c>out[b,i,h] = Σ_j p_ij·v_j</c> over the keys j ∈ prefix ∪ {token keys s ≤ i with mask 1}, the prefix keys
/// being <c>prefixK[j, g]</c>, <c>prefixV[j, g]</c> for g = h / (H/KV), shared by all batch rows — or, in inference,
/// a bank of D prefixes stacked (D·Pv, KV, hs) with each row b attending to its own, prefix <c>prefixOfRow[b]</c>
/// (several deep prompts served in one batch; the forward and the cache fill take the bank, training takes one prefix).
/// Shapes: q, out, dOut, dQ (B, T, H, hs); prefixK, prefixV (D·Pv, KV, hs); dPrefixK, dPrefixV (Pv, KV, hs);
/// prefixOfRow (B) or empty (every row prefix 0); lse, delta (B, H, T).
/// Gradient contract: dQ and dPrefixK/dPrefixV ACCUMULATE (dQ on top of <see cref="Attention.Backward"/>'s token
/// part; the prefixes' gradient across batch rows and across batches, like dPrompt).
/// </summary>
/// <remarks>
/// <para>The op runs after <see cref="Attention.Forward"/> and merges into its result in place, the way
/// FlashAttention merges two key blocks: with the token part's (out_t, lse_t) and the prefix part's
/// (Σ_j e^{s_j}·v_j, lse_p), the whole is <c>lse = logaddexp(lse_t, lse_p)</c>,
/// <c>out = e^{lse_t − lse}·out_t + Σ_j e^{s_j − lse}·v_j</c>. lse_t = +∞ marks "no token key" and counts as −∞.
/// After the merge, out and lse are those of one softmax over prefix and tokens, so <see cref="Attention.Backward"/>
/// run on them gives the token keys' and values' gradients and the token part of dQ unchanged (its delta =
/// dOut·out is the full row's). This op's backward then adds the prefix part of dQ and the prefixes' gradients.
/// Nothing is saved beyond lse: probabilities are recomputed from it.</para>
/// <para>CPU-shaped kernels give each thread a run of query rows, or of (prefix slot, kv head) rows for the prefixes'
/// gradient, which sums over the batch rows, the query heads of the group and the queries in a fixed order:
/// deterministic, no atomics; they read through pointers as <see cref="Attention"/>'s do. GPU-shaped kernels run one group per such row, the threads splitting the keys (or queries), with
/// 2·Group.DimX floats of shared memory.</para>
/// </remarks>
public sealed class AttentionPrefix
{
    #region Kernels

    /// <summary>The merged log-sum-exp of the token part (+∞ = none) and the prefix part (max, sum &gt; 0).</summary>
    static float Merge(float tokenLse, float prefixMax, float prefixSum)
    {
        float prefixLse = prefixMax + XMath.Log(prefixSum);
        if (tokenLse == float.PositiveInfinity)
            return prefixLse;
        float top = Math.Max(tokenLse, prefixLse);
        return top + XMath.Log(XMath.Exp(tokenLse - top) + XMath.Exp(prefixLse - top));
    }

    /// <summary>CPU-shaped forward merge: each thread takes a run of <see cref="AttentionDimensions.RowsPerThread"/> query
    /// rows (b, i, h), read through pointers (see <see cref="Linear"/>'s remarks on why).</summary>
    internal static unsafe void ForwardRowKernel(
        ArrayView<float> output,  // (B, T, H, hs) token part in, whole out
        ArrayView<float> lse,     // (B, H, T) token part in, whole out
        ArrayView<float> q,       // (B, T, H, hs)
        ArrayView<float> prefixK, // (D·Pv, KV, hs)
        ArrayView<float> prefixV, // (D·Pv, KV, hs)
        ArrayView<int> prefixOfRow, // (B) or empty
        AttentionDimensions dims)
    {
        int rows = dims.B * dims.T * dims.H; // row = (b·T + i)·H + head
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        long prefixSize = (long)dims.Prefix * dims.KV * dims.HeadSize;
        fixed (float* outputBase = &output[0])
        fixed (float* lseBase = &lse[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &prefixK[0])
        fixed (float* vBase = &prefixV[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
            {
                long bank = prefixOfRow.Length > 0 ? prefixOfRow[row / (dims.H * dims.T)] * prefixSize : 0;
                ForwardRow(outputBase, lseBase, qBase, kBase + bank, vBase + bank, dims, row);
            }
        }
    }

    /// <summary>One query row in one pass over the Pv prefix keys, continuing the token part's softmax online: the
    /// token part's normalised output is Σ e^{s−m}·v at m = its lse with Σ e^{s−m} = 1, so the prefix keys join as
    /// more keys of an online softmax (the row rescaled when the maximum grows), then the row is divided by the sum
    /// (as <see cref="Attention"/>'s forward does for its own keys). A row with no token key starts empty.</summary>
    static unsafe void ForwardRow(float* output, float* lse, float* q, float* prefixK, float* prefixV, AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize, prefix = dims.Prefix;
        int head = row % h, batchPosition = row / h, position = batchPosition % t, batch = batchPosition / t;
        int kvHead = head / (h / kv);
        float* query = q + (long)row * headSize;
        float* outputRow = output + (long)row * headSize;
        long stride = (long)kv * headSize;
        float* keys = prefixK + (long)kvHead * headSize;
        float* values = prefixV + (long)kvHead * headSize;
        long statistic = ((long)batch * h + head) * t + position;
        float tokenLse = lse[statistic];
        float max = tokenLse, sum = 1;
        if (tokenLse == float.PositiveInfinity) // no token key: the prefix keys are the whole softmax
        {
            max = float.NegativeInfinity;
            sum = 0;
            Attention.ScaleRow(outputRow, 0f, headSize);
        }
        for (int j = 0; j < prefix; j++)
        {
            float score = Attention.DotRow(query, keys + j * stride, headSize) * dims.Scale;
            float p = 1f;
            if (score > max)
            {
                float rescale = XMath.Exp(max - score); // 0 while nothing has been summed
                sum *= rescale;
                Attention.ScaleRow(outputRow, rescale, headSize);
                max = score;
            }
            else
                p = XMath.Exp(score - max);
            sum += p;
            Attention.AddScaledRow(outputRow, p, values + j * stride, headSize);
        }
        lse[statistic] = max + XMath.Log(sum);
        Attention.ScaleRow(outputRow, 1f / sum, headSize);
    }

    /// <summary>CPU-shaped backward to the queries: a run of query rows per thread; adds the prefix keys' share of dQ.</summary>
    internal static unsafe void BackwardQueryRowKernel(
        ArrayView<float> dQ,      // (B, T, H, hs) accumulated
        ArrayView<float> dOut,    // (B, T, H, hs)
        ArrayView<float> q,       // (B, T, H, hs)
        ArrayView<float> prefixK, // (Pv, KV, hs)
        ArrayView<float> prefixV, // (Pv, KV, hs)
        ArrayView<float> lse,     // (B, H, T) merged
        ArrayView<float> delta,   // (B, H, T) dOut·out
        AttentionDimensions dims)
    {
        int rows = dims.B * dims.T * dims.H;
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        fixed (float* dQBase = &dQ[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &prefixK[0])
        fixed (float* vBase = &prefixV[0])
        fixed (float* lseBase = &lse[0])
        fixed (float* deltaBase = &delta[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                BackwardQueryRow(dQBase, dOutBase, qBase, kBase, vBase, lseBase, deltaBase, dims, row);
        }
    }

    /// <summary>One query row's prefix share of dQ: Σ_j p_j·(dOut·v_j − delta)·scale·k_j.</summary>
    static unsafe void BackwardQueryRow(float* dQ, float* dOut, float* q, float* prefixK, float* prefixV, float* lse, float* delta,
        AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize, prefix = dims.Prefix;
        int head = row % h, batchPosition = row / h, position = batchPosition % t, batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long offset = (long)row * headSize;
        float* query = q + offset;
        float* dOutRow = dOut + offset;
        float* dQRow = dQ + offset;
        long stride = (long)kv * headSize;
        float* keys = prefixK + (long)kvHead * headSize;
        float* values = prefixV + (long)kvHead * headSize;
        long statistic = ((long)batch * h + head) * t + position;
        float logSumExp = lse[statistic], rowDelta = delta[statistic];
        for (int j = 0; j < prefix; j++)
        {
            float p = XMath.Exp(Attention.DotRow(query, keys + j * stride, headSize) * dims.Scale - logSumExp);
            float dScore = p * (Attention.DotRow(dOutRow, values + j * stride, headSize) - rowDelta) * dims.Scale;
            Attention.AddScaledRow(dQRow, dScore, keys + j * stride, headSize);
        }
    }

    /// <summary>CPU-shaped backward to the prefixes: a run of (prefix slot j, kv head g) rows per thread, each summing
    /// over the batch rows, the query heads of g and every query in order (deterministic, no atomics).</summary>
    internal static unsafe void BackwardPrefixRowKernel(
        ArrayView<float> dPrefixK, // (Pv, KV, hs) accumulated
        ArrayView<float> dPrefixV, // (Pv, KV, hs) accumulated
        ArrayView<float> dOut,     // (B, T, H, hs)
        ArrayView<float> q,        // (B, T, H, hs)
        ArrayView<float> prefixK,  // (Pv, KV, hs)
        ArrayView<float> prefixV,  // (Pv, KV, hs)
        ArrayView<float> lse,      // (B, H, T)
        ArrayView<float> delta,    // (B, H, T)
        AttentionDimensions dims)
    {
        int rows = dims.Prefix * dims.KV; // row = j·KV + kvHead
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        fixed (float* dKBase = &dPrefixK[0])
        fixed (float* dVBase = &dPrefixV[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &prefixK[0])
        fixed (float* vBase = &prefixV[0])
        fixed (float* lseBase = &lse[0])
        fixed (float* deltaBase = &delta[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                BackwardPrefixRow(dKBase, dVBase, dOutBase, qBase, kBase, vBase, lseBase, deltaBase, dims, row);
        }
    }

    /// <summary>One prefix slot and kv head: dV_j += Σ p·dOut, dK_j += Σ p·(dOut·v_j − delta)·scale·q over every query
    /// of every batch row and query head of the group.</summary>
    static unsafe void BackwardPrefixRow(float* dPrefixK, float* dPrefixV, float* dOut, float* q, float* prefixK, float* prefixV,
        float* lse, float* delta, AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        int kvHead = row % kv, group = h / kv;
        long kvOffset = (long)row * headSize;
        float* key = prefixK + kvOffset;
        float* value = prefixV + kvOffset;
        float* dKey = dPrefixK + kvOffset;
        float* dValue = dPrefixV + kvOffset;
        long queryStride = (long)h * headSize;
        for (int batch = 0; batch < dims.B; batch++)
            for (int member = 0; member < group; member++)
            {
                int head = kvHead * group + member;
                long statistics = ((long)batch * h + head) * t;
                long first = ((long)batch * t * h + head) * headSize;
                for (int i = 0; i < t; i++)
                {
                    float* query = q + first + i * queryStride;
                    float* dOutRow = dOut + first + i * queryStride;
                    float p = XMath.Exp(Attention.DotRow(query, key, headSize) * dims.Scale - lse[statistics + i]);
                    float dScore = p * (Attention.DotRow(dOutRow, value, headSize) - delta[statistics + i]) * dims.Scale;
                    Attention.AddScaledRow(dValue, p, dOutRow, headSize);
                    Attention.AddScaledRow(dKey, dScore, query, headSize);
                }
            }
    }

    /// <summary>GPU-shaped forward merge: one group per query row; the threads split the prefix keys for the max and
    /// sum, then stage Group.DimX probabilities at a time and split the channels. Shared memory: 2·Group.DimX floats.</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> output,  // (B, T, H, hs)
        ArrayView<float> lse,     // (B, H, T)
        ArrayView<float> q,       // (B, T, H, hs)
        ArrayView<float> prefixK, // (D·Pv, KV, hs)
        ArrayView<float> prefixV, // (D·Pv, KV, hs)
        ArrayView<int> prefixOfRow, // (B) or empty
        AttentionDimensions dims)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize, prefix = dims.Prefix;
        float scale = dims.Scale;
        int row = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var probabilities = shared.SubView(0, threads);
        var scratch = shared.SubView(threads, threads);
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;
        long bank = prefixOfRow.Length > 0 ? (long)prefixOfRow[batch] * prefix * kv * headSize : 0;
        float max = float.NegativeInfinity, sum = 0;
        for (int j = thread; j < prefix; j += threads)
        {
            float s = Attention.Score(q, qOffset, prefixK, bank + ((long)j * kv + kvHead) * headSize, headSize, scale);
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
        long statistic = ((long)batch * h + head) * t + position;
        float tokenLse = lse[statistic];
        float logSumExp = Merge(tokenLse, groupMax, total);
        Group.Barrier(); // every thread has read the token lse before thread 0 overwrites it
        if (thread == 0)
            lse[statistic] = logSumExp;
        float keep = tokenLse == float.PositiveInfinity ? 0f : XMath.Exp(tokenLse - logSumExp);
        for (int d = thread; d < headSize; d += threads)
            output[qOffset + d] *= keep;
        for (int j0 = 0; j0 < prefix; j0 += threads)
        {
            int j = j0 + thread;
            float p = 0;
            if (j < prefix)
                p = XMath.Exp(Attention.Score(q, qOffset, prefixK, bank + ((long)j * kv + kvHead) * headSize, headSize, scale) - logSumExp);
            probabilities[thread] = p;
            Group.Barrier();
            int count = Math.Min(threads, prefix - j0);
            for (int d = thread; d < headSize; d += threads)
            {
                float acc = output[qOffset + d];
                for (int jj = 0; jj < count; jj++)
                    acc += probabilities[jj] * prefixV[bank + ((long)(j0 + jj) * kv + kvHead) * headSize + d];
                output[qOffset + d] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>GPU-shaped backward to the queries: one group per query row. Shared memory: 2·Group.DimX floats.</summary>
    internal static void BackwardQueryGroupKernel(
        ArrayView<float> dQ,      // (B, T, H, hs)
        ArrayView<float> dOut,    // (B, T, H, hs)
        ArrayView<float> q,       // (B, T, H, hs)
        ArrayView<float> prefixK, // (Pv, KV, hs)
        ArrayView<float> prefixV, // (Pv, KV, hs)
        ArrayView<float> lse,     // (B, H, T)
        ArrayView<float> delta,   // (B, H, T)
        AttentionDimensions dims)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize, prefix = dims.Prefix;
        float scale = dims.Scale;
        int row = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var dScores = SharedMemory.GetDynamic<float>().SubView(0, threads);
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;
        long statistic = ((long)batch * h + head) * t + position;
        float logSumExp = lse[statistic], rowDelta = delta[statistic];
        for (int j0 = 0; j0 < prefix; j0 += threads)
        {
            int j = j0 + thread;
            float dScore = 0;
            if (j < prefix)
            {
                long kvOffset = ((long)j * kv + kvHead) * headSize;
                float p = XMath.Exp(Attention.Score(q, qOffset, prefixK, kvOffset, headSize, scale) - logSumExp);
                dScore = p * (Attention.Dot(dOut, qOffset, prefixV, kvOffset, headSize) - rowDelta) * scale;
            }
            dScores[thread] = dScore;
            Group.Barrier();
            int count = Math.Min(threads, prefix - j0);
            for (int d = thread; d < headSize; d += threads)
            {
                float acc = dQ[qOffset + d];
                for (int jj = 0; jj < count; jj++)
                    acc += dScores[jj] * prefixK[((long)(j0 + jj) * kv + kvHead) * headSize + d];
                dQ[qOffset + d] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>GPU-shaped backward to the prefixes: one group per (prefix slot, kv head); the threads split the
    /// (batch row, query head, query) triples of each chunk, then the channels. Shared memory: 2·Group.DimX floats.</summary>
    internal static void BackwardPrefixGroupKernel(
        ArrayView<float> dPrefixK, // (Pv, KV, hs)
        ArrayView<float> dPrefixV, // (Pv, KV, hs)
        ArrayView<float> dOut,     // (B, T, H, hs)
        ArrayView<float> q,        // (B, T, H, hs)
        ArrayView<float> prefixK,  // (Pv, KV, hs)
        ArrayView<float> prefixV,  // (Pv, KV, hs)
        ArrayView<float> lse,      // (B, H, T)
        ArrayView<float> delta,    // (B, H, T)
        AttentionDimensions dims)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.IdxX; // j·KV + kvHead
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var probabilities = shared.SubView(0, threads);
        var dScores = shared.SubView(threads, threads);
        int kvHead = row % kv;
        long kvOffset = (long)row * headSize;
        int group = h / kv;
        int queries = dims.B * group * t; // (batch, member, i) flattened
        for (int e0 = 0; e0 < queries; e0 += threads)
        {
            int e = e0 + thread;
            float p = 0, dScore = 0;
            if (e < queries)
            {
                int i = e % t;
                int rest = e / t;
                int head = kvHead * group + rest % group;
                int batch = rest / group;
                long qOffset = ((long)(batch * t + i) * h + head) * headSize;
                long statistic = ((long)batch * h + head) * t + i;
                p = XMath.Exp(Attention.Score(q, qOffset, prefixK, kvOffset, headSize, scale) - lse[statistic]);
                dScore = p * (Attention.Dot(dOut, qOffset, prefixV, kvOffset, headSize) - delta[statistic]) * scale;
            }
            probabilities[thread] = p;
            dScores[thread] = dScore;
            Group.Barrier();
            int count = Math.Min(threads, queries - e0);
            for (int d = thread; d < headSize; d += threads)
            {
                float accV = dPrefixV[kvOffset + d], accK = dPrefixK[kvOffset + d];
                for (int ee = 0; ee < count; ee++)
                {
                    int f = e0 + ee;
                    int i = f % t;
                    int rest = f / t;
                    int head = kvHead * group + rest % group;
                    int batch = rest / group;
                    long qOffset = ((long)(batch * t + i) * h + head) * headSize + d;
                    accV += probabilities[ee] * dOut[qOffset];
                    accK += dScores[ee] * q[qOffset];
                }
                dPrefixV[kvOffset + d] = accV;
                dPrefixK[kvOffset + d] = accK;
            }
            Group.Barrier();
        }
    }

    /// <summary>Writes each row's prefix into slots [0, Pv) of its row of a KV cache (prefill of deep-prompt generation);
    /// elementwise over a chunk of (B, Pv·KV·hs).</summary>
    internal static void FillCacheKernel(
        ArrayView<float> kCache,  // (B, Tmax, KV, hs)
        ArrayView<float> vCache,  // (B, Tmax, KV, hs)
        ArrayView<float> prefixK, // (D·Pv, KV, hs)
        ArrayView<float> prefixV, // (D·Pv, KV, hs)
        ArrayView<int> prefixOfRow, // (B) or empty
        int b, int capacity, int prefixWidth, int width, int chunk)
    {
        long total = (long)b * prefixWidth;
        var run = ThreadRun.Of(total, chunk);
        for (long e = run.Start; e < run.End; e++)
        {
            int batch = (int)(e / prefixWidth);
            int inner = (int)(e - (long)batch * prefixWidth);
            long target = (long)batch * capacity * width + inner;
            long source = (prefixOfRow.Length > 0 ? (long)prefixOfRow[batch] * prefixWidth : 0) + inner;
            kCache[target] = prefixK[source];
            vCache[target] = prefixV[source];
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDimensions> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, AttentionDimensions> backwardQuery;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<float>, ArrayView<float>, AttentionDimensions> backwardPrefix;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int> fillCache;

    internal AttentionPrefix(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, AttentionDimensions>(
            cpu ? ForwardRowKernel : ForwardGroupKernel);
        backwardQuery = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, AttentionDimensions>(cpu ? BackwardQueryRowKernel : BackwardQueryGroupKernel);
        backwardPrefix = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<float>, ArrayView<float>, ArrayView<float>, AttentionDimensions>(cpu ? BackwardPrefixRowKernel : BackwardPrefixGroupKernel);
        fillCache = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>(
            FillCacheKernel);
    }

    /// <summary>Merges the prefixes into a finished <see cref="Attention.Forward"/>: afterwards <paramref name="output"/>
    /// and <paramref name="lse"/> are those of one softmax over the Pv prefix keys and the row's causal token keys.</summary>
    /// <param name="output">(B, T, H, hs) the token-only attention output in, the whole attention output out.</param>
    /// <param name="lse">(B, H, T) the token-only log-sum-exp in (+∞ = no token key), the whole one out (always finite).</param>
    /// <param name="q">Queries (B, T, H, hs), already rotated.</param>
    /// <param name="prefix">Prefix keys and values, each (D·Pv, KV, hs): D ≥ 1 prefixes stacked, used as they are (as a KV cache holds them).</param>
    /// <param name="dims">B, T, H (a multiple of KV), KV, hs and the prefix keys per kv head Pv.</param>
    /// <param name="prefixOfRow">(B) which of the D prefixes each row attends to, each in [0, D) (the caller vouches: the
    /// launcher does not read device memory); empty: prefix 0 for every row.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> q, KeysValues prefix, AttentionDimensions dims,
        ArrayView<int> prefixOfRow = default)
    {
        const string op = "AttentionPrefix.Forward";
        context.Enter(op);
        CheckDimensions(op, dims);
        long queries = QueryElements(dims);
        Check.Length(op, "out", output, queries, "B*T*H*hs");
        Check.Length(op, "lse", lse, (long)dims.B * dims.H * dims.T, "B*H*T");
        Check.Length(op, "q", q, queries, "B*T*H*hs");
        CheckBank(op, prefix.Keys.Length, prefix.Values.Length, prefixOfRow.Length, dims.B, dims.KV, dims.HeadSize, dims.Prefix);
        forward(Config(dims.B * dims.T * dims.H, out int perThread), output, lse, q, prefix.Keys, prefix.Values, prefixOfRow,
            dims.WithRowsPerThread(perThread));
    }

    /// <summary>A bank of D ≥ 1 prefixes (D·Pv, KV, hs) for keys and values alike, and a (B) choice per row or none.</summary>
    static void CheckBank(string op, long prefixKLength, long prefixVLength, long prefixOfRowLength, int b, int kv, int headSize, int prefix)
    {
        long prefixes = (long)prefix * kv * headSize;
        if (prefixKLength == 0 || prefixKLength % prefixes != 0)
            throw new KernelShapeException($"{op}: prefixK has {prefixKLength} elements, expected a positive multiple D of Pv*KV*hs = {prefixes}.");
        if (prefixVLength != prefixKLength)
            throw new KernelShapeException($"{op}: prefixV has {prefixVLength} elements, expected D*Pv*KV*hs (as prefixK) = {prefixKLength}.");
        if (prefixOfRowLength != 0 && prefixOfRowLength != b)
            throw new KernelShapeException($"{op}: prefixOfRow has {prefixOfRowLength} elements, expected B = {b}.");
    }

    /// <summary>The prefix part of the attention backward, run after <see cref="Attention.Backward"/> on the merged
    /// output and lse: ADDS the prefix keys' share of dQ and the prefixes' gradients (summed over the batch rows).</summary>
    /// <param name="dQ">Query gradient (B, T, H, hs), accumulated.</param>
    /// <param name="dPrefix">Prefix key and value gradients, each (Pv, KV, hs), accumulated.</param>
    /// <param name="dOut">Output gradient (B, T, H, hs).</param>
    /// <param name="q">The forward's queries (B, T, H, hs).</param>
    /// <param name="prefix">Prefix keys and values, each (Pv, KV, hs).</param>
    /// <param name="lse">The merged log-sum-exp (B, H, T) from <see cref="Forward"/>.</param>
    /// <param name="delta">dOut·out per query row (B, H, T), as <see cref="Attention.Backward"/> wrote it.</param>
    /// <param name="dims">B, T, H, KV, hs and Pv, as for <see cref="Forward"/>.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Backward(ArrayView<float> dQ, KeysValues dPrefix, ArrayView<float> dOut, ArrayView<float> q, KeysValues prefix,
        ArrayView<float> lse, ArrayView<float> delta, AttentionDimensions dims)
    {
        const string op = "AttentionPrefix.Backward";
        context.Enter(op);
        CheckDimensions(op, dims);
        long queries = QueryElements(dims), prefixes = (long)dims.Prefix * dims.KV * dims.HeadSize, rows = (long)dims.B * dims.H * dims.T;
        Check.Length(op, "dQ", dQ, queries, "B*T*H*hs");
        Check.Length(op, "dPrefixK", dPrefix.Keys, prefixes, "Pv*KV*hs");
        Check.Length(op, "dPrefixV", dPrefix.Values, prefixes, "Pv*KV*hs");
        Check.Length(op, "dOut", dOut, queries, "B*T*H*hs");
        Check.Length(op, "q", q, queries, "B*T*H*hs");
        Check.Length(op, "prefixK", prefix.Keys, prefixes, "Pv*KV*hs");
        Check.Length(op, "prefixV", prefix.Values, prefixes, "Pv*KV*hs");
        Check.Length(op, "lse", lse, rows, "B*H*T");
        Check.Length(op, "delta", delta, rows, "B*H*T");
        var queryConfig = Config(dims.B * dims.T * dims.H, out int queriesPerThread);
        backwardQuery(queryConfig, dQ, dOut, q, prefix.Keys, prefix.Values, lse, delta, dims.WithRowsPerThread(queriesPerThread));
        var prefixConfig = Config(dims.Prefix * dims.KV, out int prefixesPerThread);
        backwardPrefix(prefixConfig, dPrefix.Keys, dPrefix.Values, dOut, q, prefix.Keys, prefix.Values, lse, delta,
            dims.WithRowsPerThread(prefixesPerThread));
    }

    /// <summary>Writes each row's prefix into cache slots [0, Pv) of each of the first B rows, so cached generation attends
    /// to them like to any cached position (the input's positions then start at slot and position Pv).</summary>
    /// <param name="cache">Key and value caches, each (B, Tmax, KV, hs).</param>
    /// <param name="bank">Prefix keys and values, each (D·Pv, KV, hs), D ≥ 1 prefixes stacked.</param>
    /// <param name="b">Batch rows B.</param>
    /// <param name="capacity">Cache capacity Tmax ≥ Pv.</param>
    /// <param name="kv">Key/value heads KV.</param>
    /// <param name="headSize">Channels per head hs.</param>
    /// <param name="prefix">Prefix keys per kv head Pv.</param>
    /// <param name="prefixOfRow">(B) which prefix each row gets, each in [0, D); empty: prefix 0 for every row.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or Pv exceeds Tmax.</exception>
    public void FillCache(KeysValues cache, KeysValues bank, int b, int capacity, int kv, int headSize, int prefix, ArrayView<int> prefixOfRow = default)
    {
        const string op = "AttentionPrefix.FillCache";
        context.Enter(op);
        Check.Positive(op, ("B", b), ("Tmax", capacity), ("KV", kv), ("hs", headSize), ("Pv", prefix));
        if (prefix > capacity)
            throw new KernelShapeException($"{op}: Pv = {prefix} prefix positions exceed the cache capacity Tmax = {capacity}.");
        long cached = (long)b * capacity * kv * headSize, prefixes = (long)prefix * kv * headSize;
        Check.Length(op, "kCache", cache.Keys, cached, "B*Tmax*KV*hs");
        Check.Length(op, "vCache", cache.Values, cached, "B*Tmax*KV*hs");
        CheckBank(op, bank.Keys.Length, bank.Values.Length, prefixOfRow.Length, b, kv, headSize, prefix);
        long total = b * prefixes;
        fillCache(context.RunConfig(total, out int chunk), cache.Keys, cache.Values, bank.Keys, bank.Values, prefixOfRow, b, capacity, (int)prefixes,
            kv * headSize, chunk);
    }

    static void CheckDimensions(string op, AttentionDimensions dims)
    {
        dims.Check(op, withPrefix: true);
        if ((long)dims.B * dims.T * dims.H > int.MaxValue)
            throw new KernelShapeException($"{op}: B*T*H = {(long)dims.B * dims.T * dims.H} rows exceed the launch limit.");
    }

    static long QueryElements(AttentionDimensions dims) => (long)dims.B * dims.T * dims.H * dims.HeadSize;

    /// <summary>CPU: a <see cref="ThreadRun"/> of rows per thread; GPU: one group per row (two reductions' scratch).</summary>
    KernelConfig Config(int rows, out int rowsPerThread) => context.RowConfig(rows, out rowsPerThread, sharedFloatsPerThread: 2);

    #endregion
}
