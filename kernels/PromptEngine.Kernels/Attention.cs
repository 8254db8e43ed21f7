using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Causal multi-head self-attention with grouped-query heads and a key padding mask:
/// <c>out[b,i,h] = Σ_j p_ij · v[b,j,g]</c> with <c>p_ij = softmax_j(scale · q[b,i,h]·k[b,j,g])</c> over the keys
/// j ≤ i with <c>mask[b,j] = 1</c>, where g = h / (H/KV) is the kv head query head h reads and scale = 1/√hs.
/// A query row whose allowed keys are all masked (left padding) outputs zeros and gets zero gradient.
/// Shapes: q, out, dOut, dQ (B, T, H, hs); k, v, dK, dV (B, T, KV, hs); mask (B, T) int, 1 = attend, 0 = padding;
/// lse, delta (B, H, T). Every output (out, lse, dQ, dK, dV, delta) is overwritten.
/// </summary>
/// <remarks>
/// <para>Saved statistic: the per-row log-sum-exp <c>lse = log Σ_j exp(s_ij)</c> of the scaled scores, (B, H, T),
/// as in FlashAttention, rather than the (B, H, T, T) probabilities: the backward recomputes
/// <c>p_ij = exp(s_ij − lse_i)</c>, so memory stays linear in T for both shapes. A fully masked row stores
/// lse = +∞, which makes every recomputed p exactly 0 (never NaN).</para>
/// <para>The backward runs in two kernels. The first, per query row, writes <c>delta_i = dOut_i·out_i</c>
/// (= Σ_j p_ij·dP_ij, the softmax Jacobian's row term) and <c>dQ_i = scale·Σ_j p_ij(dP_ij − delta_i)·k_j</c>
/// with <c>dP_ij = dOut_i·v_j</c>. The second, per (b, key position j, kv head g), loops over the H/KV query
/// heads sharing g and the queries i ≥ j in a fixed order: <c>dV_j = Σ p_ij·dOut_i</c>,
/// <c>dK_j = scale·Σ p_ij(dP_ij − delta_i)·q_i</c>. Each gradient element has one owner thread, so the
/// sums over shared heads are deterministic without atomics.</para>
/// <para>CPU-shaped kernels (this file) give each thread a run of rows (group size 1) and read through pointers.
/// Under <see cref="KernelShape.Gpu"/> the launchers hand over to <see cref="FlashAttention"/> (FlashAttention.cs),
/// tiled over query and key blocks.</para>
/// <para>Later, prompt positions' K/V may be shared across batch rows; this op assumes each batch row owns its K/V.</para>
/// </remarks>
public sealed class Attention
{
    #region Kernels

    /// <summary>scale · q[qOffset..+hs] · k[kOffset..+hs].</summary>
    internal static float Score(ArrayView<float> q, long qOffset, ArrayView<float> k, long kOffset, int headSize, float scale)
    {
        float dot = 0;
        for (int d = 0; d < headSize; d++)
            dot += q[qOffset + d] * k[kOffset + d];
        return dot * scale;
    }

    /// <summary>a[aOffset..+hs] · b[bOffset..+hs].</summary>
    internal static float Dot(ArrayView<float> a, long aOffset, ArrayView<float> b, long bOffset, int headSize)
    {
        float dot = 0;
        for (int d = 0; d < headSize; d++)
            dot += a[aOffset + d] * b[bOffset + d];
        return dot;
    }

    /// <summary>CPU-shaped forward: one thread per query row (b, i, h).</summary>
    internal static unsafe void ForwardRowKernel(
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        AttentionDimensions dims)
    {
        int rows = dims.B * dims.T * dims.H; // row = (b·T + i)·H + head
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        fixed (float* outputBase = &output[0])
        fixed (float* lseBase = &lse[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &k[0])
        fixed (float* vBase = &v[0])
        fixed (int* maskBase = &mask[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                ForwardRow(outputBase, lseBase, qBase, kBase, vBase, maskBase, dims, row);
        }
    }

    /// <summary>One query row in one pass with an online softmax: the output row accumulates p·v under the running
    /// maximum and is rescaled whenever the maximum grows, then divided by the sum (as FlashAttention does per tile).
    /// Pointer-only, like every CPU-shaped row method here, so RyuJIT keeps its accumulators in registers (see
    /// <see cref="Linear"/>'s remarks).</summary>
    static unsafe void ForwardRow(float* output, float* lse, float* q, float* k, float* v, int* mask, AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        int head = row % h, batchPosition = row / h, position = batchPosition % t, batch = batchPosition / t;
        int kvHead = head / (h / kv);
        float* query = q + (long)row * headSize;
        float* outputRow = output + (long)row * headSize;
        int* rowMask = mask + batch * t;
        long keyStride = (long)kv * headSize;
        float* keys = k + ((long)batch * t * kv + kvHead) * headSize;
        float* values = v + ((long)batch * t * kv + kvHead) * headSize;
        for (int d = 0; d < headSize; d++)
            outputRow[d] = 0;
        float max = float.NegativeInfinity, sum = 0;
        for (int j = 0; j <= position; j++)
        {
            if (rowMask[j] == 0)
                continue;
            float score = DotRow(query, keys + j * keyStride, headSize) * dims.Scale;
            float p = 1f;
            if (score > max)
            {
                float rescale = XMath.Exp(max - score); // 0 on the first allowed key
                sum *= rescale;
                ScaleRow(outputRow, rescale, headSize);
                max = score;
            }
            else
                p = XMath.Exp(score - max);
            sum += p;
            AddScaledRow(outputRow, p, values + j * keyStride, headSize);
        }
        lse[((long)batch * h + head) * t + position] = sum > 0 ? max + XMath.Log(sum) : float.PositiveInfinity;
        if (sum > 0)
            ScaleRow(outputRow, 1f / sum, headSize);
    }

    /// <summary>a·b over n channels with four independent accumulators (one chain would wait on each multiply-add).</summary>
    internal static unsafe float DotRow(float* a, float* b, int n)
    {
        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int d = 0;
        for (; d + 3 < n; d += 4)
        {
            s0 = MathF.FusedMultiplyAdd(a[d], b[d], s0);
            s1 = MathF.FusedMultiplyAdd(a[d + 1], b[d + 1], s1);
            s2 = MathF.FusedMultiplyAdd(a[d + 2], b[d + 2], s2);
            s3 = MathF.FusedMultiplyAdd(a[d + 3], b[d + 3], s3);
        }
        for (; d < n; d++)
            s0 = MathF.FusedMultiplyAdd(a[d], b[d], s0);
        return (s0 + s1) + (s2 + s3);
    }

    /// <summary>y += a·x over n channels.</summary>
    internal static unsafe void AddScaledRow(float* y, float a, float* x, int n)
    {
        for (int d = 0; d < n; d++)
            y[d] = MathF.FusedMultiplyAdd(a, x[d], y[d]);
    }

    /// <summary>y *= a over n channels.</summary>
    internal static unsafe void ScaleRow(float* y, float a, int n)
    {
        for (int d = 0; d < n; d++)
            y[d] *= a;
    }

    /// <summary>CPU-shaped backward to the queries: one thread per query row; also writes delta = dOut·out.</summary>
    internal static unsafe void BackwardQueryRowKernel(
        ArrayView<float> dQ,     // (B, T, H, hs)
        ArrayView<float> delta,  // (B, H, T)
        ArrayView<float> dOut,   // (B, T, H, hs)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        AttentionDimensions dims)
    {
        int rows = dims.B * dims.T * dims.H;
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        fixed (float* dQBase = &dQ[0])
        fixed (float* deltaBase = &delta[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &k[0])
        fixed (float* vBase = &v[0])
        fixed (int* maskBase = &mask[0])
        fixed (float* outputBase = &output[0])
        fixed (float* lseBase = &lse[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                BackwardQueryRow(dQBase, deltaBase, dOutBase, qBase, kBase, vBase, maskBase, outputBase, lseBase, dims, row);
        }
    }

    /// <summary>dQ_i = scale·Σ_j p_ij(dP_ij − delta_i)·k_j for one query row, with delta_i = dOut_i·out_i.</summary>
    static unsafe void BackwardQueryRow(float* dQ, float* delta, float* dOut, float* q, float* k, float* v, int* mask,
        float* output, float* lse, AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        int head = row % h, batchPosition = row / h, position = batchPosition % t, batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long rowOffset = (long)row * headSize;
        float* query = q + rowOffset, dOutRow = dOut + rowOffset, dQRow = dQ + rowOffset;
        long statistic = ((long)batch * h + head) * t + position;
        float rowDelta = DotRow(dOutRow, output + rowOffset, headSize);
        delta[statistic] = rowDelta;
        for (int d = 0; d < headSize; d++)
            dQRow[d] = 0;
        float logSumExp = lse[statistic];
        if (logSumExp == float.PositiveInfinity)
            return;
        int* rowMask = mask + batch * t;
        long keyStride = (long)kv * headSize;
        float* keys = k + ((long)batch * t * kv + kvHead) * headSize;
        float* values = v + ((long)batch * t * kv + kvHead) * headSize;
        for (int j = 0; j <= position; j++)
        {
            if (rowMask[j] == 0)
                continue;
            float* key = keys + j * keyStride;
            float p = XMath.Exp(DotRow(query, key, headSize) * dims.Scale - logSumExp);
            float dScore = p * (DotRow(dOutRow, values + j * keyStride, headSize) - rowDelta) * dims.Scale;
            AddScaledRow(dQRow, dScore, key, headSize);
        }
    }

    /// <summary>CPU-shaped backward to the keys and values: one thread per (b, j, kv head), summing over the
    /// query heads of its group and the queries i ≥ j in order.</summary>
    internal static unsafe void BackwardKeyRowKernel(
        ArrayView<float> dK,    // (B, T, KV, hs)
        ArrayView<float> dV,    // (B, T, KV, hs)
        ArrayView<float> dOut,  // (B, T, H, hs)
        ArrayView<float> q,     // (B, T, H, hs)
        ArrayView<float> k,     // (B, T, KV, hs)
        ArrayView<float> v,     // (B, T, KV, hs)
        ArrayView<int> mask,    // (B, T)
        ArrayView<float> lse,   // (B, H, T)
        ArrayView<float> delta, // (B, H, T)
        AttentionDimensions dims)
    {
        int rows = dims.B * dims.T * dims.KV; // row = (b·T + j)·KV + kvHead
        var run = ThreadRun.Of(rows, dims.RowsPerThread);
        fixed (float* dKBase = &dK[0])
        fixed (float* dVBase = &dV[0])
        fixed (float* dOutBase = &dOut[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &k[0])
        fixed (float* vBase = &v[0])
        fixed (int* maskBase = &mask[0])
        fixed (float* lseBase = &lse[0])
        fixed (float* deltaBase = &delta[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
                BackwardKeyRow(dKBase, dVBase, dOutBase, qBase, kBase, vBase, maskBase, lseBase, deltaBase, dims, row);
        }
    }

    /// <summary>dV_j = Σ p_ij·dOut_i and dK_j = scale·Σ p_ij(dP_ij − delta_i)·q_i for one key row, over its group's heads.</summary>
    static unsafe void BackwardKeyRow(float* dK, float* dV, float* dOut, float* q, float* k, float* v, int* mask,
        float* lse, float* delta, AttentionDimensions dims, int row)
    {
        int t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        int kvHead = row % kv, batchPosition = row / kv, position = batchPosition % t, batch = batchPosition / t;
        long rowOffset = (long)row * headSize;
        float* key = k + rowOffset, value = v + rowOffset, dKRow = dK + rowOffset, dVRow = dV + rowOffset;
        for (int d = 0; d < headSize; d++)
        {
            dKRow[d] = 0;
            dVRow[d] = 0;
        }
        if (mask[batch * t + position] == 0)
            return;
        int group = h / kv;
        long queryStride = (long)h * headSize;
        for (int member = 0; member < group; member++)
        {
            int head = kvHead * group + member;
            long statistics = ((long)batch * h + head) * t;
            float* queries = q + ((long)batch * t * h + head) * headSize;
            float* dOuts = dOut + ((long)batch * t * h + head) * headSize;
            for (int i = position; i < t; i++)
            {
                float logSumExp = lse[statistics + i];
                if (logSumExp == float.PositiveInfinity)
                    continue;
                float* query = queries + i * queryStride, dOutRow = dOuts + i * queryStride;
                float p = XMath.Exp(DotRow(query, key, headSize) * dims.Scale - logSumExp);
                float dScore = p * (DotRow(dOutRow, value, headSize) - delta[statistics + i]) * dims.Scale;
                AddScaledRow(dVRow, p, dOutRow, headSize);
                AddScaledRow(dKRow, dScore, query, headSize);
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        AttentionDimensions>? forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>? backwardQuery;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>? backwardKey;

    internal Attention(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        if (context.Shape != KernelShape.Cpu)
            return; // the GPU shape hands over to FlashAttention
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            AttentionDimensions>(ForwardRowKernel);
        backwardQuery = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>(BackwardQueryRowKernel);
        backwardKey = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>(BackwardKeyRowKernel);
    }

    /// <summary>Causal, masked, grouped-query attention; saves the per-row log-sum-exp for <see cref="Backward"/>.</summary>
    /// <param name="output">Attention output (B, T, H, hs), overwritten; zero rows where every allowed key is masked.</param>
    /// <param name="lse">Saved log-sum-exp of the scaled scores (B, H, T), overwritten; +∞ for fully masked rows.</param>
    /// <param name="q">Queries (B, T, H, hs), already rotated.</param>
    /// <param name="kv">Keys (already rotated) and values, each (B, T, KV, hs).</param>
    /// <param name="mask">Key validity (B, T): 1 = attend, 0 = padding.</param>
    /// <param name="dims">B, T, H (a multiple of KV), KV (KV = H without grouping, 1 for multi-query) and hs (the
    /// scores are scaled by 1/√hs); Pv must be 0 (prefix keys are <see cref="AttentionPrefix"/>'s).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> q, KeysValues kv, ArrayView<int> mask, AttentionDimensions dims)
    {
        const string op = "Attention.Forward";
        context.Enter(op);
        CheckForward(op, output, lse, q, kv, mask, dims);
        if ((long)dims.B * dims.T * dims.H > int.MaxValue)
            throw new KernelShapeException($"{op}: B*T*H = {(long)dims.B * dims.T * dims.H} rows exceed the launch limit.");
        if (context.Shape == KernelShape.Gpu)
        {
            context.FlashAttention.Forward(output, lse, q, kv, mask, dims); // FlashAttention.cs
            return;
        }
        forward!(Config(dims.B * dims.T * dims.H, out int perThread), output, lse, q, kv.Keys, kv.Values, mask, dims.WithRowsPerThread(perThread));
    }

    /// <summary>dQ, dK, dV from dOut, recomputing the probabilities from the saved log-sum-exp.</summary>
    /// <param name="dQ">Query gradient (B, T, H, hs), overwritten.</param>
    /// <param name="dKV">Key and value gradients, each (B, T, KV, hs), overwritten; each sums over the query heads sharing its kv head.</param>
    /// <param name="delta">Scratch (B, H, T), overwritten with dOut·out per query row.</param>
    /// <param name="dOut">Output gradient (B, T, H, hs).</param>
    /// <param name="q">The forward's queries (B, T, H, hs).</param>
    /// <param name="kv">The forward's keys and values, each (B, T, KV, hs).</param>
    /// <param name="mask">Key validity (B, T).</param>
    /// <param name="output">The forward's output (B, T, H, hs).</param>
    /// <param name="lse">Log-sum-exp saved by <see cref="Forward"/> (B, H, T).</param>
    /// <param name="dims">As for <see cref="Forward"/>.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Backward(ArrayView<float> dQ, KeysValues dKV, ArrayView<float> delta, ArrayView<float> dOut, ArrayView<float> q, KeysValues kv,
        ArrayView<int> mask, ArrayView<float> output, ArrayView<float> lse, AttentionDimensions dims)
    {
        const string op = "Attention.Backward";
        context.Enter(op);
        CheckBackward(op, dQ, dKV, delta, dOut, q, kv, mask, output, lse, dims);
        if ((long)dims.B * dims.T * dims.H > int.MaxValue)
            throw new KernelShapeException($"{op}: B*T*H = {(long)dims.B * dims.T * dims.H} rows exceed the launch limit.");
        if (context.Shape == KernelShape.Gpu)
        {
            context.FlashAttention.Backward(dQ, dKV, delta, dOut, q, kv, mask, output, lse, dims); // FlashAttention.cs
            return;
        }
        var queryConfig = Config(dims.B * dims.T * dims.H, out int queriesPerThread);
        backwardQuery!(queryConfig, dQ, delta, dOut, q, kv.Keys, kv.Values, mask, output, lse, dims.WithRowsPerThread(queriesPerThread));
        var keyConfig = Config(dims.B * dims.T * dims.KV, out int keysPerThread);
        backwardKey!(keyConfig, dKV.Keys, dKV.Values, dOut, q, kv.Keys, kv.Values, mask, lse, delta, dims.WithRowsPerThread(keysPerThread));
    }

    /// <summary>The forward's shape contract, shared with <see cref="FlashAttention"/>.</summary>
    internal static void CheckForward(string op, ArrayView<float> output, ArrayView<float> lse, ArrayView<float> q, KeysValues kv,
        ArrayView<int> mask, AttentionDimensions dims)
    {
        dims.Check(op);
        if (dims.Prefix != 0)
            throw new KernelShapeException($"{op}: Pv = {dims.Prefix}: prefix keys are merged by AttentionPrefix, not here.");
        long queries = (long)dims.B * dims.T * dims.H * dims.HeadSize, keys = (long)dims.B * dims.T * dims.KV * dims.HeadSize;
        Check.Length(op, "out", output, queries, "B*T*H*hs");
        Check.Length(op, "lse", lse, (long)dims.B * dims.H * dims.T, "B*H*T");
        Check.Length(op, "q", q, queries, "B*T*H*hs");
        Check.Length(op, "k", kv.Keys, keys, "B*T*KV*hs");
        Check.Length(op, "v", kv.Values, keys, "B*T*KV*hs");
        Check.Length(op, "mask", mask, (long)dims.B * dims.T, "B*T");
    }

    /// <summary>The backward's shape contract, shared with <see cref="FlashAttention"/>.</summary>
    internal static void CheckBackward(string op, ArrayView<float> dQ, KeysValues dKV, ArrayView<float> delta, ArrayView<float> dOut,
        ArrayView<float> q, KeysValues kv, ArrayView<int> mask, ArrayView<float> output, ArrayView<float> lse, AttentionDimensions dims)
    {
        CheckForward(op, output, lse, q, kv, mask, dims);
        long queries = (long)dims.B * dims.T * dims.H * dims.HeadSize, keys = (long)dims.B * dims.T * dims.KV * dims.HeadSize;
        Check.Length(op, "dQ", dQ, queries, "B*T*H*hs");
        Check.Length(op, "dK", dKV.Keys, keys, "B*T*KV*hs");
        Check.Length(op, "dV", dKV.Values, keys, "B*T*KV*hs");
        Check.Length(op, "delta", delta, (long)dims.B * dims.H * dims.T, "B*H*T");
        Check.Length(op, "dOut", dOut, queries, "B*T*H*hs");
    }

    /// <summary>CPU launch: a <see cref="ThreadRun"/> of rows per thread. Rows near the end of a sequence see more keys:
    /// interleaving would balance better, but runs of a few hundred rows over many threads already spread the causal
    /// triangle evenly enough.</summary>
    KernelConfig Config(int rows, out int rowsPerThread) => context.RunConfig(rows, out rowsPerThread);

    #endregion
}
