using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// GPU-shaped causal, masked, grouped-query attention in the FlashAttention style: the kernels
/// <see cref="Attention"/> runs when <see cref="KernelShape.Gpu"/> is chosen. Same contract as <see cref="Attention"/>:
/// q, out, dOut, dQ (B, T, H, hs); k, v, dK, dV (B, T, KV, hs); mask (B, T); lse, delta (B, H, T); every output
/// overwritten; a query whose allowed keys are all masked outputs zeros, stores lse = +∞ and gets zero gradient.
/// </summary>
/// <remarks>
/// <para>Forward: one group per (query block of Bq rows, b, h). It keeps the Bq query rows and their output
/// accumulators in shared memory and walks the key blocks j ≤ its last query, staging Bq keys and values at a time:
/// scores → per-row online softmax (running max m and sum l; previous accumulators rescaled by exp(m_old − m_new))
/// → accumulate p·V. No (T, T) matrix exists anywhere; each K/V row is read from global memory once per query
/// block instead of once per query row. At the end out = acc / l and lse = m + log l.</para>
/// <para>Backward, FlashAttention-2 split into two deterministic kernels (no atomics): the query kernel, one group
/// per (query block, b, h), writes delta = dOut·out for its rows and dQ = scale·Σ_j p(dP − delta)·k over the key
/// blocks; the key kernel, one group per (key block, b, kv head), walks the H/KV query heads of the group and the
/// query blocks i ≥ its first key in a fixed order, accumulating dV = Σ p·dOut and dK = scale·Σ p(dP − delta)·q in
/// shared memory. Both recompute p = exp(s − lse) from the saved lse.</para>
/// <para>Shared-memory rows of hs floats are padded to hs + 1 so that threads reading different rows at the same
/// channel hit different banks. The block edge Bq is the largest power of two ≤ 32 (and ≤ the group) whose
/// tiles fit the accelerator's shared memory per group; each kernel computes its own.</para>
/// </remarks>
public sealed class FlashAttention
{
    #region Kernels

    /// <summary>Dot product of two padded shared-memory rows.</summary>
    static float RowDot(ArrayView<float> a, int aOffset, ArrayView<float> b, int bOffset, int headSize)
    {
        float dot = 0;
        for (int d = 0; d < headSize; d++)
            dot += a[aOffset + d] * b[bOffset + d];
        return dot;
    }

    /// <summary>Copies Block rows of one head (rows past T read as zeros) into a padded shared tile.</summary>
    static void LoadRows(ArrayView<float> tile, ArrayView<float> source, int batch, int first, int heads, int head, AttentionDimensions s)
    {
        int stride = s.HeadSize + 1;
        for (int e = Group.IdxX; e < s.Block * s.HeadSize; e += Group.DimX)
        {
            int r = e / s.HeadSize, d = e % s.HeadSize;
            int position = first + r;
            tile[r * stride + d] = position < s.T ? source[((long)(batch * s.T + position) * heads + head) * s.HeadSize + d] : 0f;
        }
    }

    /// <summary>Forward: one group per (query block, b·H + h). Shared: 4·Bq·(hs+1) + Bq² + 3·Bq floats.</summary>
    internal static void ForwardKernel(
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        AttentionDimensions s)
    {
        int blk = s.Block, hs = s.HeadSize, stride = hs + 1, t = s.T;
        int thread = Group.IdxX, threads = Group.DimX;
        int q0 = Grid.IdxX * blk;
        int batch = Grid.IdxY / s.H, head = Grid.IdxY % s.H, kvHead = head / (s.H / s.KV);
        var shared = SharedMemory.GetDynamic<float>();
        var qs = shared.SubView(0, blk * stride);                     // (Bq, hs+1) queries
        var ks = shared.SubView(blk * stride, blk * stride);          // (Bq, hs+1) keys of the current block
        var vs = shared.SubView(2 * blk * stride, blk * stride);      // (Bq, hs+1) values of the current block
        var acc = shared.SubView(3 * blk * stride, blk * stride);     // (Bq, hs+1) unnormalised outputs
        var scores = shared.SubView(4 * blk * stride, blk * blk);     // (Bq queries, Bq keys), then probabilities
        var rowMax = shared.SubView(4 * blk * stride + blk * blk, blk);
        var rowSum = shared.SubView(4 * blk * stride + blk * blk + blk, blk);
        var rowRescale = shared.SubView(4 * blk * stride + blk * blk + 2 * blk, blk);

        LoadRows(qs, q, batch, q0, s.H, head, s);
        for (int e = thread; e < blk * stride; e += threads)
            acc[e] = 0;
        for (int r = thread; r < blk; r += threads)
        {
            rowMax[r] = float.NegativeInfinity;
            rowSum[r] = 0;
        }
        int lastQuery = Math.Min(q0 + blk, t) - 1;
        for (int j0 = 0; j0 <= lastQuery; j0 += blk)
        {
            Group.Barrier(); // the previous block's readers are done with ks, vs and scores
            LoadRows(ks, k, batch, j0, s.KV, kvHead, s);
            LoadRows(vs, v, batch, j0, s.KV, kvHead, s);
            Group.Barrier();
            for (int e = thread; e < blk * blk; e += threads)
            {
                int r = e / blk, c = e % blk;
                int i = q0 + r, j = j0 + c;
                bool allowed = i < t && j <= i && mask[batch * t + j] != 0;
                scores[e] = allowed ? RowDot(qs, r * stride, ks, c * stride, hs) * s.Scale : float.NegativeInfinity;
            }
            Group.Barrier();
            for (int r = thread; r < blk; r += threads)
            {
                float oldMax = rowMax[r], newMax = oldMax;
                for (int c = 0; c < blk; c++)
                    newMax = Math.Max(newMax, scores[r * blk + c]);
                float rescale = 1f, sum = rowSum[r];
                if (newMax != float.NegativeInfinity)
                {
                    rescale = XMath.Exp(oldMax - newMax); // 0 while the row had seen no key
                    sum *= rescale;
                    for (int c = 0; c < blk; c++)
                    {
                        float p = XMath.Exp(scores[r * blk + c] - newMax); // exp(−∞) = 0 for masked keys
                        scores[r * blk + c] = p;
                        sum += p;
                    }
                }
                else
                {
                    for (int c = 0; c < blk; c++)
                        scores[r * blk + c] = 0;
                }
                rowMax[r] = newMax;
                rowSum[r] = sum;
                rowRescale[r] = rescale;
            }
            Group.Barrier();
            for (int e = thread; e < blk * hs; e += threads)
            {
                int r = e / hs, d = e % hs;
                float value = acc[r * stride + d] * rowRescale[r];
                for (int c = 0; c < blk; c++)
                    value += scores[r * blk + c] * vs[c * stride + d];
                acc[r * stride + d] = value;
            }
        }
        Group.Barrier();
        for (int e = thread; e < blk * hs; e += threads)
        {
            int r = e / hs, d = e % hs, i = q0 + r;
            if (i < t)
                output[((long)(batch * t + i) * s.H + head) * hs + d] = rowSum[r] > 0 ? acc[r * stride + d] / rowSum[r] : 0f;
        }
        for (int r = thread; r < blk; r += threads)
        {
            int i = q0 + r;
            if (i < t)
                lse[((long)batch * s.H + head) * t + i] = rowSum[r] > 0 ? rowMax[r] + XMath.Log(rowSum[r]) : float.PositiveInfinity;
        }
    }

    /// <summary>Backward to the queries: one group per (query block, b·H + h); writes delta and dQ.
    /// Shared: 5·Bq·(hs+1) + Bq² + 2·Bq floats.</summary>
    internal static void BackwardQueryKernel(
        ArrayView<float> dQ,     // (B, T, H, hs)
        ArrayView<float> delta,  // (B, H, T)
        ArrayView<float> dOut,   // (B, T, H, hs)
        ArrayView<float> q,      // (B, T, H, hs)
        ArrayView<float> k,      // (B, T, KV, hs)
        ArrayView<float> v,      // (B, T, KV, hs)
        ArrayView<int> mask,     // (B, T)
        ArrayView<float> output, // (B, T, H, hs)
        ArrayView<float> lse,    // (B, H, T)
        AttentionDimensions s)
    {
        int blk = s.Block, hs = s.HeadSize, stride = hs + 1, t = s.T;
        int thread = Group.IdxX, threads = Group.DimX;
        int q0 = Grid.IdxX * blk;
        int batch = Grid.IdxY / s.H, head = Grid.IdxY % s.H, kvHead = head / (s.H / s.KV);
        var shared = SharedMemory.GetDynamic<float>();
        var qs = shared.SubView(0, blk * stride);                 // (Bq, hs+1)
        var dos = shared.SubView(blk * stride, blk * stride);     // (Bq, hs+1) dOut rows
        var ks = shared.SubView(2 * blk * stride, blk * stride);  // (Bq, hs+1)
        var vs = shared.SubView(3 * blk * stride, blk * stride);  // (Bq, hs+1)
        var dqs = shared.SubView(4 * blk * stride, blk * stride); // (Bq, hs+1) dQ accumulators
        var dScores = shared.SubView(5 * blk * stride, blk * blk);
        var rowLse = shared.SubView(5 * blk * stride + blk * blk, blk);
        var rowDelta = shared.SubView(5 * blk * stride + blk * blk + blk, blk);
        long statistics = ((long)batch * s.H + head) * t;

        LoadRows(qs, q, batch, q0, s.H, head, s);
        LoadRows(dos, dOut, batch, q0, s.H, head, s);
        for (int e = thread; e < blk * stride; e += threads)
            dqs[e] = 0;
        Group.Barrier();
        for (int r = thread; r < blk; r += threads)
        {
            int i = q0 + r;
            float rowDot = 0, logSumExp = float.PositiveInfinity;
            if (i < t)
            {
                long offset = ((long)(batch * t + i) * s.H + head) * hs;
                for (int d = 0; d < hs; d++)
                    rowDot += dos[r * stride + d] * output[offset + d];
                delta[statistics + i] = rowDot;
                logSumExp = lse[statistics + i];
            }
            rowDelta[r] = rowDot;
            rowLse[r] = logSumExp;
        }
        int lastQuery = Math.Min(q0 + blk, t) - 1;
        for (int j0 = 0; j0 <= lastQuery; j0 += blk)
        {
            Group.Barrier();
            LoadRows(ks, k, batch, j0, s.KV, kvHead, s);
            LoadRows(vs, v, batch, j0, s.KV, kvHead, s);
            Group.Barrier();
            for (int e = thread; e < blk * blk; e += threads)
            {
                int r = e / blk, c = e % blk;
                int i = q0 + r, j = j0 + c;
                float dScore = 0;
                if (i < t && j <= i && mask[batch * t + j] != 0 && rowLse[r] != float.PositiveInfinity)
                {
                    float p = XMath.Exp(RowDot(qs, r * stride, ks, c * stride, hs) * s.Scale - rowLse[r]);
                    dScore = p * (RowDot(dos, r * stride, vs, c * stride, hs) - rowDelta[r]) * s.Scale;
                }
                dScores[e] = dScore;
            }
            Group.Barrier();
            for (int e = thread; e < blk * hs; e += threads)
            {
                int r = e / hs, d = e % hs;
                float value = dqs[r * stride + d];
                for (int c = 0; c < blk; c++)
                    value += dScores[r * blk + c] * ks[c * stride + d];
                dqs[r * stride + d] = value;
            }
        }
        Group.Barrier();
        for (int e = thread; e < blk * hs; e += threads)
        {
            int r = e / hs, d = e % hs, i = q0 + r;
            if (i < t)
                dQ[((long)(batch * t + i) * s.H + head) * hs + d] = dqs[r * stride + d];
        }
    }

    /// <summary>Backward to the keys and values: one group per (key block, b·KV + kv head), after
    /// <see cref="BackwardQueryKernel"/> has written delta. Shared: 6·Bq·(hs+1) + 2·Bq² + 2·Bq floats.</summary>
    internal static void BackwardKeyKernel(
        ArrayView<float> dK,    // (B, T, KV, hs)
        ArrayView<float> dV,    // (B, T, KV, hs)
        ArrayView<float> dOut,  // (B, T, H, hs)
        ArrayView<float> q,     // (B, T, H, hs)
        ArrayView<float> k,     // (B, T, KV, hs)
        ArrayView<float> v,     // (B, T, KV, hs)
        ArrayView<int> mask,    // (B, T)
        ArrayView<float> lse,   // (B, H, T)
        ArrayView<float> delta, // (B, H, T)
        AttentionDimensions s)
    {
        int blk = s.Block, hs = s.HeadSize, stride = hs + 1, t = s.T;
        int thread = Group.IdxX, threads = Group.DimX;
        int j0 = Grid.IdxX * blk;
        int batch = Grid.IdxY / s.KV, kvHead = Grid.IdxY % s.KV;
        var shared = SharedMemory.GetDynamic<float>();
        var ks = shared.SubView(0, blk * stride);                 // (Bk, hs+1)
        var vs = shared.SubView(blk * stride, blk * stride);      // (Bk, hs+1)
        var qs = shared.SubView(2 * blk * stride, blk * stride);  // (Bq, hs+1) queries of the current block
        var dos = shared.SubView(3 * blk * stride, blk * stride); // (Bq, hs+1)
        var dks = shared.SubView(4 * blk * stride, blk * stride); // (Bk, hs+1) accumulators
        var dvs = shared.SubView(5 * blk * stride, blk * stride); // (Bk, hs+1) accumulators
        var probabilities = shared.SubView(6 * blk * stride, blk * blk); // (Bq queries, Bk keys)
        var dScores = shared.SubView(6 * blk * stride + blk * blk, blk * blk);
        var rowLse = shared.SubView(6 * blk * stride + 2 * blk * blk, blk);
        var rowDelta = shared.SubView(6 * blk * stride + 2 * blk * blk + blk, blk);

        LoadRows(ks, k, batch, j0, s.KV, kvHead, s);
        LoadRows(vs, v, batch, j0, s.KV, kvHead, s);
        for (int e = thread; e < blk * stride; e += threads)
        {
            dks[e] = 0;
            dvs[e] = 0;
        }
        int group = s.H / s.KV;
        for (int member = 0; member < group; member++)
        {
            int head = kvHead * group + member;
            long statistics = ((long)batch * s.H + head) * t;
            // Queries before this key block never see its keys (causal): start at the block holding j0.
            for (int i0 = j0; i0 < t; i0 += blk)
            {
                Group.Barrier();
                LoadRows(qs, q, batch, i0, s.H, head, s);
                LoadRows(dos, dOut, batch, i0, s.H, head, s);
                for (int r = thread; r < blk; r += threads)
                {
                    int i = i0 + r;
                    rowLse[r] = i < t ? lse[statistics + i] : float.PositiveInfinity;
                    rowDelta[r] = i < t ? delta[statistics + i] : 0f;
                }
                Group.Barrier();
                for (int e = thread; e < blk * blk; e += threads)
                {
                    int r = e / blk, c = e % blk;
                    int i = i0 + r, j = j0 + c;
                    float p = 0, dScore = 0;
                    if (i < t && j <= i && mask[batch * t + j] != 0 && rowLse[r] != float.PositiveInfinity)
                    {
                        p = XMath.Exp(RowDot(qs, r * stride, ks, c * stride, hs) * s.Scale - rowLse[r]);
                        dScore = p * (RowDot(dos, r * stride, vs, c * stride, hs) - rowDelta[r]) * s.Scale;
                    }
                    probabilities[e] = p;
                    dScores[e] = dScore;
                }
                Group.Barrier();
                for (int e = thread; e < blk * hs; e += threads)
                {
                    int c = e / hs, d = e % hs;
                    float accV = dvs[c * stride + d], accK = dks[c * stride + d];
                    for (int r = 0; r < blk; r++)
                    {
                        accV += probabilities[r * blk + c] * dos[r * stride + d];
                        accK += dScores[r * blk + c] * qs[r * stride + d];
                    }
                    dvs[c * stride + d] = accV;
                    dks[c * stride + d] = accK;
                }
            }
        }
        Group.Barrier();
        for (int e = thread; e < blk * hs; e += threads)
        {
            int c = e / hs, d = e % hs, j = j0 + c;
            if (j < t)
            {
                long offset = ((long)(batch * t + j) * s.KV + kvHead) * hs + d;
                dK[offset] = dks[c * stride + d];
                dV[offset] = dvs[c * stride + d];
            }
        }
    }

    #endregion

    #region Launchers

    /// <summary>Largest block edge tried.</summary>
    internal const int MaxBlock = 32;

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
        AttentionDimensions> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions> backwardQuery;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions> backwardKey;

    internal FlashAttention(KernelContext context)
    {
        this.context = context;
        var a = context.Accelerator;
        forward = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>,
            AttentionDimensions>(ForwardKernel);
        backwardQuery = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>(BackwardQueryKernel);
        backwardKey = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            ArrayView<int>, ArrayView<float>, ArrayView<float>, AttentionDimensions>(BackwardKeyKernel);
    }

    /// <summary>Block edge forced by tests (0: choose by shared memory), so the CPU device's small groups still see several blocks per row.</summary>
    internal int BlockOverride { get; set; }

    /// <summary>Shared memory per group assumed by the block choice (0: the accelerator's), so tests can impose a GPU's 48 KB.</summary>
    internal long SharedMemoryBytesOverride { get; set; }

    /// <summary>Same contract and arguments as <see cref="Attention.Forward"/>.</summary>
    /// <param name="output">Attention output (B, T, H, hs), overwritten.</param>
    /// <param name="lse">Saved log-sum-exp (B, H, T), overwritten.</param>
    /// <param name="q">Queries (B, T, H, hs).</param>
    /// <param name="kv">Keys and values, each (B, T, KV, hs).</param>
    /// <param name="mask">Key validity (B, T): 1 = attend, 0 = padding.</param>
    /// <param name="dims">B, T, H (a multiple of KV), KV, hs; Pv = 0.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, H is not a multiple of KV, or hs is too
    /// large for the accelerator's shared memory.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> lse, ArrayView<float> q, KeysValues kv, ArrayView<int> mask, AttentionDimensions dims)
    {
        const string op = "FlashAttention.Forward";
        Attention.CheckForward(op, output, lse, q, kv, mask, dims);
        CheckLaunch(op, dims);
        int block = Block(op, dims.HeadSize, tiles: 4, squares: 1, vectors: 3);
        forward(Config(dims.T, dims.B * dims.H, block, 4, 1, 3, dims.HeadSize), output, lse, q, kv.Keys, kv.Values, mask, dims.WithBlock(block));
    }

    /// <summary>Same contract and arguments as <see cref="Attention.Backward"/>.</summary>
    /// <param name="dQ">Query gradient (B, T, H, hs), overwritten.</param>
    /// <param name="dKV">Key and value gradients, each (B, T, KV, hs), overwritten.</param>
    /// <param name="delta">Scratch (B, H, T), overwritten with dOut·out per query row.</param>
    /// <param name="dOut">Output gradient (B, T, H, hs).</param>
    /// <param name="q">The forward's queries.</param>
    /// <param name="kv">The forward's keys and values.</param>
    /// <param name="mask">Key validity (B, T).</param>
    /// <param name="output">The forward's output.</param>
    /// <param name="lse">Log-sum-exp saved by <see cref="Forward"/>.</param>
    /// <param name="dims">As for <see cref="Forward"/>.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match, H is not a multiple of KV, or hs is too large.</exception>
    public void Backward(ArrayView<float> dQ, KeysValues dKV, ArrayView<float> delta, ArrayView<float> dOut, ArrayView<float> q, KeysValues kv,
        ArrayView<int> mask, ArrayView<float> output, ArrayView<float> lse, AttentionDimensions dims)
    {
        const string op = "FlashAttention.Backward";
        Attention.CheckBackward(op, dQ, dKV, delta, dOut, q, kv, mask, output, lse, dims);
        CheckLaunch(op, dims);
        int queryBlock = Block(op, dims.HeadSize, tiles: 5, squares: 1, vectors: 2);
        backwardQuery(Config(dims.T, dims.B * dims.H, queryBlock, 5, 1, 2, dims.HeadSize), dQ, delta, dOut, q, kv.Keys, kv.Values, mask, output, lse,
            dims.WithBlock(queryBlock));
        int keyBlock = Block(op, dims.HeadSize, tiles: 6, squares: 2, vectors: 2);
        backwardKey(Config(dims.T, dims.B * dims.KV, keyBlock, 6, 2, 2, dims.HeadSize), dKV.Keys, dKV.Values, dOut, q, kv.Keys, kv.Values, mask, lse, delta,
            dims.WithBlock(keyBlock));
    }

    static long SharedFloats(int block, int tiles, int squares, int vectors, int headSize) =>
        (long)tiles * block * (headSize + 1) + (long)squares * block * block + (long)vectors * block;

    /// <summary>The largest power-of-two block edge ≤ 32 and ≤ the group size whose tiles fit in shared memory.</summary>
    int Block(string op, int headSize, int tiles, int squares, int vectors)
    {
        if (BlockOverride > 0)
            return BlockOverride;
        long limit = (SharedMemoryBytesOverride > 0 ? SharedMemoryBytesOverride : context.Accelerator.MaxSharedMemoryPerGroup) / sizeof(float);
        for (int block = Math.Min(MaxBlock, context.GroupSize); block >= 1; block /= 2)
            if (SharedFloats(block, tiles, squares, vectors, headSize) <= limit)
                return block;
        throw new KernelShapeException($"{op}: head size hs = {headSize} is too large for {limit * sizeof(float)} bytes of shared memory per group.");
    }

    KernelConfig Config(int t, int heads, int block, int tiles, int squares, int vectors, int headSize) =>
        new(new Index2D((t + block - 1) / block, heads), new Index2D(context.GroupSize, 1),
            SharedMemoryConfig.RequestDynamic<float>((int)SharedFloats(block, tiles, squares, vectors, headSize)));

    static void CheckLaunch(string op, AttentionDimensions dims)
    {
        if ((long)dims.B * dims.H > int.MaxValue)
            throw new KernelShapeException($"{op}: B*H = {(long)dims.B * dims.H} exceeds the launch limit.");
    }

    #endregion
}
