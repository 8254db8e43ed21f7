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
/// <para>CPU-shaped kernels run one thread per row (group size 1). GPU-shaped kernels run one group per row:
/// the threads split the keys (or queries), stage a chunk of Group.DimX probabilities in shared memory, then
/// split the hs channels to accumulate; shared memory is 2·Group.DimX floats whatever T is. Output rows
/// double as accumulators (each channel is owned by one thread). Not yet tiled like FlashAttention: K/V rows
/// are re-read from global memory (L2) by every query row.</para>
/// <para>Later, prompt positions' K/V may be shared across batch rows; this op assumes each batch row owns its K/V.</para>
/// </remarks>
public sealed class Attention
{
    /// <summary>The op's dimensions, passed to the kernels as one argument: the backward kernels would otherwise need
    /// more parameters than ILGPU's LoadStreamKernel overloads take. Public because ILGPU's runtime assembly must see
    /// every kernel parameter type; the launchers take plain integers.</summary>
    public readonly struct Dimensions(int b, int t, int h, int kv, int headSize)
    {
        /// <summary>Batch rows.</summary>
        public readonly int B = b;

        /// <summary>Sequence length.</summary>
        public readonly int T = t;

        /// <summary>Query heads.</summary>
        public readonly int H = h;

        /// <summary>Key/value heads.</summary>
        public readonly int KV = kv;

        /// <summary>Channels per head.</summary>
        public readonly int HeadSize = headSize;

        /// <summary>1/√hs, rounded to float once on the host.</summary>
        public readonly float Scale = (float)(1 / Math.Sqrt(headSize));
    }

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
    static float Dot(ArrayView<float> a, long aOffset, ArrayView<float> b, long bOffset, int headSize)
    {
        float dot = 0;
        for (int d = 0; d < headSize; d++)
            dot += a[aOffset + d] * b[bOffset + d];
        return dot;
    }

    /// <summary>CPU-shaped forward: one thread per query row (b, i, h); an online max/sum pass for lse, then a
    /// second pass accumulating p·v into the output row.</summary>
    internal static void ForwardRowKernel(
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.GlobalIndex.X; // (b·T + i)·H + head
        if (row >= b * t * h)
            return;
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;
        float max = float.NegativeInfinity, sum = 0;
        for (int j = 0; j <= position; j++)
        {
            if (mask[batch * t + j] == 0)
                continue;
            float s = Score(q, qOffset, k, ((long)(batch * t + j) * kv + kvHead) * headSize, headSize, scale);
            if (s > max)
            {
                sum = sum * XMath.Exp(max - s) + 1;
                max = s;
            }
            else
                sum += XMath.Exp(s - max);
        }
        float logSumExp = sum > 0 ? max + XMath.Log(sum) : float.PositiveInfinity;
        lse[((long)batch * h + head) * t + position] = logSumExp;
        for (int d = 0; d < headSize; d++)
            output[qOffset + d] = 0;
        if (sum <= 0)
            return;
        for (int j = 0; j <= position; j++)
        {
            if (mask[batch * t + j] == 0)
                continue;
            long kvOffset = ((long)(batch * t + j) * kv + kvHead) * headSize;
            float p = XMath.Exp(Score(q, qOffset, k, kvOffset, headSize, scale) - logSumExp);
            for (int d = 0; d < headSize; d++)
                output[qOffset + d] += p * v[kvOffset + d];
        }
    }

    /// <summary>CPU-shaped backward to the queries: one thread per query row; also writes delta = dOut·out.</summary>
    internal static void BackwardQueryRowKernel(
        ArrayView<float> dQ,     // (B, T, H, hs)
        ArrayView<float> delta,  // (B, H, T)
        ArrayView<float> dOut,   // (B, T, H, hs)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.GlobalIndex.X;
        if (row >= b * t * h)
            return;
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;
        long statistic = ((long)batch * h + head) * t + position;
        float rowDelta = Dot(dOut, qOffset, output, qOffset, headSize);
        delta[statistic] = rowDelta;
        for (int d = 0; d < headSize; d++)
            dQ[qOffset + d] = 0;
        float logSumExp = lse[statistic];
        if (logSumExp == float.PositiveInfinity)
            return;
        for (int j = 0; j <= position; j++)
        {
            if (mask[batch * t + j] == 0)
                continue;
            long kvOffset = ((long)(batch * t + j) * kv + kvHead) * headSize;
            float p = XMath.Exp(Score(q, qOffset, k, kvOffset, headSize, scale) - logSumExp);
            float dScore = p * (Dot(dOut, qOffset, v, kvOffset, headSize) - rowDelta) * scale;
            for (int d = 0; d < headSize; d++)
                dQ[qOffset + d] += dScore * k[kvOffset + d];
        }
    }

    /// <summary>CPU-shaped backward to the keys and values: one thread per (b, j, kv head), summing over the
    /// query heads of its group and the queries i ≥ j in order.</summary>
    internal static void BackwardKeyRowKernel(
        ArrayView<float> dK,    // (B, T, KV, hs)
        ArrayView<float> dV,    // (B, T, KV, hs)
        ArrayView<float> dOut,  // (B, T, H, hs)
        ArrayView<float> q,     // (B, T, H, hs)
        ArrayView<float> k,     // (B, T, KV, hs)
        ArrayView<float> v,     // (B, T, KV, hs)
        ArrayView<int> mask,    // (B, T)
        ArrayView<float> lse,   // (B, H, T)
        ArrayView<float> delta, // (B, H, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.GlobalIndex.X; // (b·T + j)·KV + kvHead
        if (row >= b * t * kv)
            return;
        int kvHead = row % kv;
        int batchPosition = row / kv;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        long kvOffset = (long)row * headSize;
        for (int d = 0; d < headSize; d++)
        {
            dK[kvOffset + d] = 0;
            dV[kvOffset + d] = 0;
        }
        if (mask[batch * t + position] == 0)
            return;
        int group = h / kv;
        for (int member = 0; member < group; member++)
        {
            int head = kvHead * group + member;
            long statistics = ((long)batch * h + head) * t;
            for (int i = position; i < t; i++)
            {
                float logSumExp = lse[statistics + i];
                if (logSumExp == float.PositiveInfinity)
                    continue;
                long qOffset = ((long)(batch * t + i) * h + head) * headSize;
                float p = XMath.Exp(Score(q, qOffset, k, kvOffset, headSize, scale) - logSumExp);
                float dScore = p * (Dot(dOut, qOffset, v, kvOffset, headSize) - delta[statistics + i]) * scale;
                for (int d = 0; d < headSize; d++)
                {
                    dV[kvOffset + d] += p * dOut[qOffset + d];
                    dK[kvOffset + d] += dScore * q[qOffset + d];
                }
            }
        }
    }

    /// <summary>GPU-shaped forward: one group per query row; shared memory holds 2·Group.DimX floats
    /// (a chunk of probabilities, then the reduction scratch).</summary>
    internal static void ForwardGroupKernel(
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var probabilities = shared.SubView(0, threads); // (Group.DimX) keys of the current chunk
        var scratch = shared.SubView(threads, threads);
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;

        // Each thread keeps an online (max, sum) over its strided keys; the group then rescales to the common max.
        float max = float.NegativeInfinity, sum = 0;
        for (int j = thread; j <= position; j += threads)
        {
            if (mask[batch * t + j] == 0)
                continue;
            float s = Score(q, qOffset, k, ((long)(batch * t + j) * kv + kvHead) * headSize, headSize, scale);
            if (s > max)
            {
                sum = sum * XMath.Exp(max - s) + 1;
                max = s;
            }
            else
                sum += XMath.Exp(s - max);
        }
        float groupMax = GroupReduceMax.Max(scratch, max);
        float total = GroupReduce.Sum(scratch, sum > 0 ? sum * XMath.Exp(max - groupMax) : 0f);
        float logSumExp = total > 0 ? groupMax + XMath.Log(total) : float.PositiveInfinity;
        if (thread == 0)
            lse[((long)batch * h + head) * t + position] = logSumExp;
        for (int d = thread; d < headSize; d += threads)
            output[qOffset + d] = 0;
        if (total <= 0) // uniform across the group: every thread read the same reduction
            return;
        for (int j0 = 0; j0 <= position; j0 += threads)
        {
            int j = j0 + thread;
            float p = 0;
            if (j <= position && mask[batch * t + j] != 0)
                p = XMath.Exp(Score(q, qOffset, k, ((long)(batch * t + j) * kv + kvHead) * headSize, headSize, scale) - logSumExp);
            probabilities[thread] = p;
            Group.Barrier();
            int count = Math.Min(threads, position + 1 - j0);
            for (int d = thread; d < headSize; d += threads)
            {
                float acc = output[qOffset + d];
                for (int jj = 0; jj < count; jj++)
                    acc += probabilities[jj] * v[((long)(batch * t + j0 + jj) * kv + kvHead) * headSize + d];
                output[qOffset + d] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>GPU-shaped backward to the queries: one group per query row; shared memory holds 2·Group.DimX floats.</summary>
    internal static void BackwardQueryGroupKernel(
        ArrayView<float> dQ,     // (B, T, H, hs)
        ArrayView<float> delta,  // (B, H, T)
        ArrayView<float> dOut,   // (B, T, H, hs)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var dScores = shared.SubView(0, threads); // (Group.DimX) keys of the current chunk
        var scratch = shared.SubView(threads, threads);
        int head = row % h;
        int batchPosition = row / h;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        int kvHead = head / (h / kv);
        long qOffset = (long)row * headSize;
        long statistic = ((long)batch * h + head) * t + position;
        float partial = 0;
        for (int d = thread; d < headSize; d += threads)
        {
            partial += dOut[qOffset + d] * output[qOffset + d];
            dQ[qOffset + d] = 0;
        }
        float rowDelta = GroupReduce.Sum(scratch, partial);
        if (thread == 0)
            delta[statistic] = rowDelta;
        float logSumExp = lse[statistic];
        if (logSumExp == float.PositiveInfinity) // uniform across the group
            return;
        for (int j0 = 0; j0 <= position; j0 += threads)
        {
            int j = j0 + thread;
            float dScore = 0;
            if (j <= position && mask[batch * t + j] != 0)
            {
                long kvOffset = ((long)(batch * t + j) * kv + kvHead) * headSize;
                float p = XMath.Exp(Score(q, qOffset, k, kvOffset, headSize, scale) - logSumExp);
                dScore = p * (Dot(dOut, qOffset, v, kvOffset, headSize) - rowDelta) * scale;
            }
            dScores[thread] = dScore;
            Group.Barrier();
            int count = Math.Min(threads, position + 1 - j0);
            for (int d = thread; d < headSize; d += threads)
            {
                float acc = dQ[qOffset + d];
                for (int jj = 0; jj < count; jj++)
                    acc += dScores[jj] * k[((long)(batch * t + j0 + jj) * kv + kvHead) * headSize + d];
                dQ[qOffset + d] = acc;
            }
            Group.Barrier();
        }
    }

    /// <summary>GPU-shaped backward to the keys and values: one group per (b, j, kv head); the threads split the
    /// queries of each chunk, then the channels. Shared memory holds 2·Group.DimX floats.</summary>
    internal static void BackwardKeyGroupKernel(
        ArrayView<float> dK,    // (B, T, KV, hs)
        ArrayView<float> dV,    // (B, T, KV, hs)
        ArrayView<float> dOut,  // (B, T, H, hs)
        ArrayView<float> q,     // (B, T, H, hs)
        ArrayView<float> k,     // (B, T, KV, hs)
        ArrayView<float> v,     // (B, T, KV, hs)
        ArrayView<int> mask,    // (B, T)
        ArrayView<float> lse,   // (B, H, T)
        ArrayView<float> delta, // (B, H, T)
        Dimensions dims)
    {
        int b = dims.B, t = dims.T, h = dims.H, kv = dims.KV, headSize = dims.HeadSize;
        float scale = dims.Scale;
        int row = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var probabilities = shared.SubView(0, threads); // (Group.DimX) queries of the current chunk
        var dScores = shared.SubView(threads, threads);  // (Group.DimX)
        int kvHead = row % kv;
        int batchPosition = row / kv;
        int position = batchPosition % t;
        int batch = batchPosition / t;
        long kvOffset = (long)row * headSize;
        for (int d = thread; d < headSize; d += threads)
        {
            dK[kvOffset + d] = 0;
            dV[kvOffset + d] = 0;
        }
        if (mask[batch * t + position] == 0) // uniform across the group
            return;
        int group = h / kv;
        for (int member = 0; member < group; member++)
        {
            int head = kvHead * group + member;
            long statistics = ((long)batch * h + head) * t;
            for (int i0 = position; i0 < t; i0 += threads)
            {
                int i = i0 + thread;
                float p = 0, dScore = 0;
                if (i < t && lse[statistics + i] != float.PositiveInfinity)
                {
                    long qOffset = ((long)(batch * t + i) * h + head) * headSize;
                    p = XMath.Exp(Score(q, qOffset, k, kvOffset, headSize, scale) - lse[statistics + i]);
                    dScore = p * (Dot(dOut, qOffset, v, kvOffset, headSize) - delta[statistics + i]) * scale;
                }
                probabilities[thread] = p;
                dScores[thread] = dScore;
                Group.Barrier();
                int count = Math.Min(threads, t - i0);
                for (int d = thread; d < headSize; d += threads)
                {
                    float accV = dV[kvOffset + d], accK = dK[kvOffset + d];
                    for (int ii = 0; ii < count; ii++)
                    {
                        long qOffset = ((long)(batch * t + i0 + ii) * h + head) * headSize + d;
                        accV += probabilities[ii] * dOut[qOffset];
                        accK += dScores[ii] * q[qOffset];
                    }
                    dV[kvOffset + d] = accV;
                    dK[kvOffset + d] = accK;
                }
                Group.Barrier();
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        Dimensions> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, Dimensions> backwardQuery;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, Dimensions> backwardKey;

    internal Attention(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            Dimensions>(cpu ? ForwardRowKernel : ForwardGroupKernel);
        backwardQuery = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, Dimensions>(cpu ? BackwardQueryRowKernel : BackwardQueryGroupKernel);
        backwardKey = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, Dimensions>(cpu ? BackwardKeyRowKernel : BackwardKeyGroupKernel);
    }

    /// <summary>Causal, masked, grouped-query attention; saves the per-row log-sum-exp for <see cref="Backward"/>.</summary>
    /// <param name="output">Attention output (B, T, H, hs), overwritten; zero rows where every allowed key is masked.</param>
    /// <param name="lse">Saved log-sum-exp of the scaled scores (B, H, T), overwritten; +∞ for fully masked rows.</param>
    /// <param name="q">Queries (B, T, H, hs), already rotated.</param>
    /// <param name="k">Keys (B, T, KV, hs), already rotated.</param>
    /// <param name="v">Values (B, T, KV, hs).</param>
    /// <param name="mask">Key validity (B, T): 1 = attend, 0 = padding.</param>
    /// <param name="b">Batch rows B.</param>
    /// <param name="t">Sequence length T.</param>
    /// <param name="h">Query heads H, a multiple of <paramref name="kv"/>.</param>
    /// <param name="kv">Key/value heads KV (KV = H without grouping, 1 for multi-query).</param>
    /// <param name="headSize">Channels per head hs; the scores are scaled by 1/√hs.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v,
        ArrayView<int> mask, int b, int t, int h, int kv, int headSize)
    {
        const string op = "Attention.Forward";
        CheckDimensions(op, b, t, h, kv, headSize);
        Check.Length(op, "out", output, (long)b * t * h * headSize, "B*T*H*hs");
        Check.Length(op, "lse", lse, (long)b * h * t, "B*H*T");
        Check.Length(op, "q", q, (long)b * t * h * headSize, "B*T*H*hs");
        Check.Length(op, "k", k, (long)b * t * kv * headSize, "B*T*KV*hs");
        Check.Length(op, "v", v, (long)b * t * kv * headSize, "B*T*KV*hs");
        Check.Length(op, "mask", mask, (long)b * t, "B*T");
        if (context.Shape == KernelShape.Gpu)
        {
            context.FlashAttention.Forward(output, lse, q, k, v, mask, b, t, h, kv, headSize); // FlashAttention.cs
            return;
        }
        forward(Config(b * t * h), output, lse, q, k, v, mask, new Dimensions(b, t, h, kv, headSize));
    }

    /// <summary>dQ, dK, dV from dOut, recomputing the probabilities from the saved log-sum-exp.</summary>
    /// <param name="dQ">Query gradient (B, T, H, hs), overwritten.</param>
    /// <param name="dK">Key gradient (B, T, KV, hs), overwritten; sums over the query heads sharing each kv head.</param>
    /// <param name="dV">Value gradient (B, T, KV, hs), overwritten; sums likewise.</param>
    /// <param name="delta">Scratch (B, H, T), overwritten with dOut·out per query row.</param>
    /// <param name="dOut">Output gradient (B, T, H, hs).</param>
    /// <param name="q">The forward's queries (B, T, H, hs).</param>
    /// <param name="k">The forward's keys (B, T, KV, hs).</param>
    /// <param name="v">The forward's values (B, T, KV, hs).</param>
    /// <param name="mask">Key validity (B, T).</param>
    /// <param name="output">The forward's output (B, T, H, hs).</param>
    /// <param name="lse">Log-sum-exp saved by <see cref="Forward"/> (B, H, T).</param>
    /// <param name="b">Batch rows B.</param>
    /// <param name="t">Sequence length T.</param>
    /// <param name="h">Query heads H.</param>
    /// <param name="kv">Key/value heads KV.</param>
    /// <param name="headSize">Channels per head hs.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, or H is not a multiple of KV.</exception>
    public void Backward(ArrayView<float> dQ, ArrayView<float> dK, ArrayView<float> dV, ArrayView<float> delta,
        ArrayView<float> dOut, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<int> mask,
        ArrayView<float> output, ArrayView<float> lse, int b, int t, int h, int kv, int headSize)
    {
        const string op = "Attention.Backward";
        CheckDimensions(op, b, t, h, kv, headSize);
        long queries = (long)b * t * h * headSize, keys = (long)b * t * kv * headSize;
        Check.Length(op, "dQ", dQ, queries, "B*T*H*hs");
        Check.Length(op, "dK", dK, keys, "B*T*KV*hs");
        Check.Length(op, "dV", dV, keys, "B*T*KV*hs");
        Check.Length(op, "delta", delta, (long)b * h * t, "B*H*T");
        Check.Length(op, "dOut", dOut, queries, "B*T*H*hs");
        Check.Length(op, "q", q, (long)b * t * h * headSize, "B*T*H*hs");
        Check.Length(op, "k", k, (long)b * t * kv * headSize, "B*T*KV*hs");
        Check.Length(op, "v", v, (long)b * t * kv * headSize, "B*T*KV*hs");
        Check.Length(op, "mask", mask, (long)b * t, "B*T");
        Check.Length(op, "out", output, queries, "B*T*H*hs");
        Check.Length(op, "lse", lse, (long)b * h * t, "B*H*T");
        if (context.Shape == KernelShape.Gpu)
        {
            context.FlashAttention.Backward(dQ, dK, dV, delta, dOut, q, k, v, mask, output, lse, b, t, h, kv, headSize); // FlashAttention.cs
            return;
        }
        var dims = new Dimensions(b, t, h, kv, headSize);
        backwardQuery(Config(b * t * h), dQ, delta, dOut, q, k, v, mask, output, lse, dims);
        backwardKey(Config(b * t * kv), dK, dV, dOut, q, k, v, mask, lse, delta, dims);
    }

    static void CheckDimensions(string op, int b, int t, int h, int kv, int headSize)
    {
        Check.Positive(op, ("B", b), ("T", t), ("H", h), ("KV", kv), ("hs", headSize));
        if (h % kv != 0)
            throw new KernelShapeException($"{op}: query heads H = {h} must be a multiple of kv heads KV = {kv}.");
        if ((long)b * t * h > int.MaxValue)
            throw new KernelShapeException($"{op}: B*T*H = {(long)b * t * h} rows exceed the launch limit.");
    }

    KernelConfig Config(int rows) => context.Shape == KernelShape.Cpu
        ? new KernelConfig(rows, 1)
        : new KernelConfig(rows, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(2 * context.GroupSize));

    #endregion
}
