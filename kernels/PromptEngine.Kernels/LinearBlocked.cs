using ILGPU;
using ILGPU.Runtime;
using Half = ILGPU.Half;

namespace PromptEngine.Kernels;

/// <summary>
/// GPU-shaped Linear with register blocking, the kernels <see cref="Linear"/> runs when <see cref="KernelShape.Gpu"/>
/// is chosen, plus 16-bit weight storage. Same contract as <see cref="Linear"/>: forward <c>Y = X·Wᵀ + b</c> with
/// X (N, K), W (M, K), b (M) optional, Y (N, M), overwritten; backward to the data only, <c>dX = dY·W</c> with
/// dY (N, M), dX (N, K), overwritten or accumulated into. W may be float32, IEEE half (ILGPU's <see cref="Half"/>)
/// or bfloat16 held as raw 16-bit words; every product is accumulated in float32.
/// </summary>
/// <remarks>
/// <para>A group of (gx, gy) threads owns a (4·gy) × (4·gx) block of the output; each thread owns 16 outputs in
/// registers, rows <c>ty + i·gy</c> and columns <c>tx + j·gx</c> (i, j &lt; 4). Per step along the reduction axis the
/// group stages a kTile-deep slice of both operands in shared memory (16-bit weights are widened there, once),
/// then each thread reads 4 + 4 values per 16 fused multiply-adds: a quarter of the shared-memory traffic of the
/// one-output-per-thread tiles. Slices are stored reduction-major with rows padded by one float, so the transposing
/// stores and the broadcast reads stay off a single bank. On a GPU: groups of 16×16, 64×64 output blocks,
/// kTile 16 (8.3 KB of shared memory). On the CPU device: 4×4 groups, 16×16 blocks.</para>
/// <para>Tensor cores: ILGPU 1.5.3's <c>CudaAsm.EmitRef</c> takes up to 44 by-reference operands, enough for the
/// 14 of <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c>, so an mma path is possible in principle;
/// it is not written yet, and without a GPU nothing here says whether it would pay.</para>
/// </remarks>
public sealed class LinearBlocked
{
    /// <summary>Outputs per thread along each axis (a 4×4 register block).</summary>
    internal const int RegisterBlock = 4;

    /// <summary>Widens one stored weight to float32 inside a kernel.</summary>
    /// <typeparam name="T">The stored element type.</typeparam>
    public interface IWeightFormat<T> where T : unmanaged
    {
        /// <summary>The weight as float32.</summary>
        float Widen(T stored);
    }

    /// <summary>float32 weights: nothing to widen.</summary>
    public readonly struct F32 : IWeightFormat<float>
    {
        /// <inheritdoc/>
        public float Widen(float stored) => stored;
    }

    /// <summary>IEEE half weights (ILGPU's <see cref="Half"/>), widened by a hardware conversion.</summary>
    public readonly struct F16 : IWeightFormat<Half>
    {
        /// <inheritdoc/>
        public float Widen(Half stored) => stored;
    }

    /// <summary>bfloat16 weights held as raw 16-bit words: the upper half of a float32, widened by a shift.</summary>
    public readonly struct Bf16 : IWeightFormat<ushort>
    {
        /// <inheritdoc/>
        public float Widen(ushort stored) => Interop.IntAsFloat((uint)stored << 16);
    }

    #region Kernels

    /// <summary>Forward body: group (gx, gy) computes a (4·gy) × (4·gx) block of Y. Shared memory: kTile·(4·gy + 1) + kTile·(4·gx + 1) floats.</summary>
    static void ForwardBody<TWeight, TFormat>(
        ArrayView<float> y,     // (N, M)
        ArrayView<float> x,     // (N, K)
        ArrayView<TWeight> w,   // (M, K)
        ArrayView<float> bias,  // (M) or empty
        int n, int k, int m, int kTile)
        where TWeight : unmanaged
        where TFormat : struct, IWeightFormat<TWeight>
    {
        var format = default(TFormat);
        int gx = Group.DimX, gy = Group.DimY;
        int rows = gy * RegisterBlock, cols = gx * RegisterBlock;
        int rowStride = rows + 1, colStride = cols + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var xs = shared.SubView(0, kTile * rowStride);                  // (kTile, rows) slice of X, transposed
        var ws = shared.SubView(kTile * rowStride, kTile * colStride);  // (kTile, cols) slice of W, transposed
        int tx = Group.IdxX, ty = Group.IdxY;
        int thread = ty * gx + tx, threads = gx * gy;
        int row0 = Grid.IdxY * rows, col0 = Grid.IdxX * cols;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int k0 = 0; k0 < k; k0 += kTile)
        {
            // Consecutive threads read consecutive K: coalesced loads of both row-major operands.
            for (int e = thread; e < rows * kTile; e += threads)
            {
                int r = e / kTile, c = e % kTile;
                int row = row0 + r, kk = k0 + c;
                xs[c * rowStride + r] = row < n && kk < k ? x[(long)row * k + kk] : 0f;
            }
            for (int e = thread; e < cols * kTile; e += threads)
            {
                int r = e / kTile, c = e % kTile;
                int wRow = col0 + r, kk = k0 + c;
                ws[c * colStride + r] = wRow < m && kk < k ? format.Widen(w[(long)wRow * k + kk]) : 0f;
            }
            Group.Barrier();
            for (int kk = 0; kk < kTile; kk++)
            {
                int xo = kk * rowStride + ty, wo = kk * colStride + tx;
                float x0 = xs[xo], x1 = xs[xo + gy], x2 = xs[xo + 2 * gy], x3 = xs[xo + 3 * gy];
                float w0 = ws[wo], w1 = ws[wo + gx], w2 = ws[wo + 2 * gx], w3 = ws[wo + 3 * gx];
                a00 += x0 * w0; a01 += x0 * w1; a02 += x0 * w2; a03 += x0 * w3;
                a10 += x1 * w0; a11 += x1 * w1; a12 += x1 * w2; a13 += x1 * w3;
                a20 += x2 * w0; a21 += x2 * w1; a22 += x2 * w2; a23 += x2 * w3;
                a30 += x3 * w0; a31 += x3 * w1; a32 += x3 * w2; a33 += x3 * w3;
            }
            Group.Barrier();
        }
        bool hasBias = bias.Length > 0;
        int col = col0 + tx;
        StoreRow(y, bias, hasBias, false, row0 + ty, col, gx, n, m, a00, a01, a02, a03);
        StoreRow(y, bias, hasBias, false, row0 + ty + gy, col, gx, n, m, a10, a11, a12, a13);
        StoreRow(y, bias, hasBias, false, row0 + ty + 2 * gy, col, gx, n, m, a20, a21, a22, a23);
        StoreRow(y, bias, hasBias, false, row0 + ty + 3 * gy, col, gx, n, m, a30, a31, a32, a33);
    }

    /// <summary>Backward body: group (gx, gy) computes a (4·gy) × (4·gx) block of dX, reducing over M in kTile-deep slices.</summary>
    static void BackwardBody<TWeight, TFormat>(
        ArrayView<float> dX,    // (N, K)
        ArrayView<float> dY,    // (N, M)
        ArrayView<TWeight> w,   // (M, K)
        int n, int k, int m, int accumulate, int kTile)
        where TWeight : unmanaged
        where TFormat : struct, IWeightFormat<TWeight>
    {
        var format = default(TFormat);
        int gx = Group.DimX, gy = Group.DimY;
        int rows = gy * RegisterBlock, cols = gx * RegisterBlock;
        int rowStride = rows + 1, colStride = cols + 1;
        var shared = SharedMemory.GetDynamic<float>();
        var dys = shared.SubView(0, kTile * rowStride);                 // (kTile of M, rows) slice of dY, transposed
        var ws = shared.SubView(kTile * rowStride, kTile * colStride);  // (kTile of M, cols) slice of W, as stored
        int tx = Group.IdxX, ty = Group.IdxY;
        int thread = ty * gx + tx, threads = gx * gy;
        int row0 = Grid.IdxY * rows, col0 = Grid.IdxX * cols;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int m0 = 0; m0 < m; m0 += kTile)
        {
            for (int e = thread; e < rows * kTile; e += threads)
            {
                int r = e / kTile, c = e % kTile;
                int row = row0 + r, mm = m0 + c;
                dys[c * rowStride + r] = row < n && mm < m ? dY[(long)row * m + mm] : 0f;
            }
            // W's rows are K-contiguous: consecutive threads read consecutive columns of one row.
            for (int e = thread; e < cols * kTile; e += threads)
            {
                int c = e / cols, r = e % cols;
                int mm = m0 + c, kk = col0 + r;
                ws[c * colStride + r] = mm < m && kk < k ? format.Widen(w[(long)mm * k + kk]) : 0f;
            }
            Group.Barrier();
            for (int mm = 0; mm < kTile; mm++)
            {
                int dyo = mm * rowStride + ty, wo = mm * colStride + tx;
                float d0 = dys[dyo], d1 = dys[dyo + gy], d2 = dys[dyo + 2 * gy], d3 = dys[dyo + 3 * gy];
                float w0 = ws[wo], w1 = ws[wo + gx], w2 = ws[wo + 2 * gx], w3 = ws[wo + 3 * gx];
                a00 += d0 * w0; a01 += d0 * w1; a02 += d0 * w2; a03 += d0 * w3;
                a10 += d1 * w0; a11 += d1 * w1; a12 += d1 * w2; a13 += d1 * w3;
                a20 += d2 * w0; a21 += d2 * w1; a22 += d2 * w2; a23 += d2 * w3;
                a30 += d3 * w0; a31 += d3 * w1; a32 += d3 * w2; a33 += d3 * w3;
            }
            Group.Barrier();
        }
        var noBias = default(ArrayView<float>);
        bool add = accumulate != 0;
        int col = col0 + tx;
        StoreRow(dX, noBias, false, add, row0 + ty, col, gx, n, k, a00, a01, a02, a03);
        StoreRow(dX, noBias, false, add, row0 + ty + gy, col, gx, n, k, a10, a11, a12, a13);
        StoreRow(dX, noBias, false, add, row0 + ty + 2 * gy, col, gx, n, k, a20, a21, a22, a23);
        StoreRow(dX, noBias, false, add, row0 + ty + 3 * gy, col, gx, n, k, a30, a31, a32, a33);
    }

    /// <summary>Stores (or adds) a thread's four values of one output row, at columns col, col + stride, …; skips the edge.</summary>
    static void StoreRow(ArrayView<float> output, ArrayView<float> bias, bool hasBias, bool add, int row, int col, int stride,
        int rowCount, int colCount, float v0, float v1, float v2, float v3)
    {
        if (row >= rowCount)
            return;
        long offset = (long)row * colCount;
        Store(output, bias, hasBias, add, offset, col, colCount, v0);
        Store(output, bias, hasBias, add, offset, col + stride, colCount, v1);
        Store(output, bias, hasBias, add, offset, col + 2 * stride, colCount, v2);
        Store(output, bias, hasBias, add, offset, col + 3 * stride, colCount, v3);
    }

    static void Store(ArrayView<float> output, ArrayView<float> bias, bool hasBias, bool add, long rowOffset, int col, int colCount, float value)
    {
        if (col >= colCount)
            return;
        long at = rowOffset + col;
        output[at] = value + (hasBias ? bias[col] : 0f) + (add ? output[at] : 0f);
    }

    /// <summary>Forward, float32 weights.</summary>
    internal static void ForwardF32Kernel(ArrayView<float> y, ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias,
        int n, int k, int m, int kTile) => ForwardBody<float, F32>(y, x, w, bias, n, k, m, kTile);

    /// <summary>Forward, half weights.</summary>
    internal static void ForwardF16Kernel(ArrayView<float> y, ArrayView<float> x, ArrayView<Half> w, ArrayView<float> bias,
        int n, int k, int m, int kTile) => ForwardBody<Half, F16>(y, x, w, bias, n, k, m, kTile);

    /// <summary>Forward, bfloat16 weights as raw words.</summary>
    internal static void ForwardBf16Kernel(ArrayView<float> y, ArrayView<float> x, ArrayView<ushort> w, ArrayView<float> bias,
        int n, int k, int m, int kTile) => ForwardBody<ushort, Bf16>(y, x, w, bias, n, k, m, kTile);

    /// <summary>Backward to the data, float32 weights.</summary>
    internal static void BackwardF32Kernel(ArrayView<float> dX, ArrayView<float> dY, ArrayView<float> w,
        int n, int k, int m, int accumulate, int kTile) => BackwardBody<float, F32>(dX, dY, w, n, k, m, accumulate, kTile);

    /// <summary>Backward to the data, half weights.</summary>
    internal static void BackwardF16Kernel(ArrayView<float> dX, ArrayView<float> dY, ArrayView<Half> w,
        int n, int k, int m, int accumulate, int kTile) => BackwardBody<Half, F16>(dX, dY, w, n, k, m, accumulate, kTile);

    /// <summary>Backward to the data, bfloat16 weights as raw words.</summary>
    internal static void BackwardBf16Kernel(ArrayView<float> dX, ArrayView<float> dY, ArrayView<ushort> w,
        int n, int k, int m, int accumulate, int kTile) => BackwardBody<ushort, Bf16>(dX, dY, w, n, k, m, accumulate, kTile);

    #endregion

    #region Launchers

    /// <summary>Depth of the shared-memory slices along the reduction axis.</summary>
    internal const int SliceDepth = 16;

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> forwardF32;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<Half>, ArrayView<float>, int, int, int, int> forwardF16;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, int, int, int> forwardBf16;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> backwardF32;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<Half>, int, int, int, int, int> backwardF16;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int, int, int> backwardBf16;

    internal LinearBlocked(KernelContext context)
    {
        this.context = context;
        var a = context.Accelerator;
        forwardF32 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(ForwardF32Kernel);
        forwardF16 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<Half>, ArrayView<float>, int, int, int, int>(ForwardF16Kernel);
        forwardBf16 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, int, int, int>(ForwardBf16Kernel);
        backwardF32 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(BackwardF32Kernel);
        backwardF16 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<Half>, int, int, int, int, int>(BackwardF16Kernel);
        backwardBf16 = a.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int, int, int>(BackwardBf16Kernel);
    }

    /// <summary>Y = X·Wᵀ + b with float32 weights.</summary>
    /// <param name="y">Output (N, M), overwritten.</param>
    /// <param name="x">Input (N, K).</param>
    /// <param name="w">Weight (M, K).</param>
    /// <param name="bias">Bias (M), or an empty view for none.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="k">Input features.</param>
    /// <param name="m">Output features.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> y, ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int n, int k, int m)
    {
        CheckForward("LinearBlocked.Forward", y, x, w.Length, bias, n, k, m);
        forwardF32(Config(n, m), y, x, w, bias, n, k, m, SliceDepth);
    }

    /// <summary>Y = X·Wᵀ + b with half weights widened to float32 in shared memory.</summary>
    /// <inheritdoc cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int)"/>
    public void ForwardF16(ArrayView<float> y, ArrayView<float> x, ArrayView<Half> w, ArrayView<float> bias, int n, int k, int m)
    {
        CheckForward("LinearBlocked.ForwardF16", y, x, w.Length, bias, n, k, m);
        forwardF16(Config(n, m), y, x, w, bias, n, k, m, SliceDepth);
    }

    /// <summary>Y = X·Wᵀ + b with bfloat16 weights given as raw 16-bit words (the upper half of each float32).</summary>
    /// <inheritdoc cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int)"/>
    public void ForwardBf16(ArrayView<float> y, ArrayView<float> x, ArrayView<ushort> w, ArrayView<float> bias, int n, int k, int m)
    {
        CheckForward("LinearBlocked.ForwardBf16", y, x, w.Length, bias, n, k, m);
        forwardBf16(Config(n, m), y, x, w, bias, n, k, m, SliceDepth);
    }

    /// <summary>dX = dY·W, or dX += dY·W with <paramref name="accumulate"/>, float32 weights.</summary>
    /// <param name="dX">Input gradient (N, K), overwritten or accumulated into.</param>
    /// <param name="dY">Output gradient (N, M).</param>
    /// <param name="w">Weight (M, K).</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="k">Input features.</param>
    /// <param name="m">Output features.</param>
    /// <param name="accumulate">Add into <paramref name="dX"/> instead of overwriting it.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dY, ArrayView<float> w, int n, int k, int m, bool accumulate = false)
    {
        CheckBackward("LinearBlocked.Backward", dX, dY, w.Length, n, k, m);
        backwardF32(Config(n, k), dX, dY, w, n, k, m, accumulate ? 1 : 0, SliceDepth);
    }

    /// <summary>dX = dY·W (or +=) with half weights.</summary>
    /// <inheritdoc cref="Backward(ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int, bool)"/>
    public void BackwardF16(ArrayView<float> dX, ArrayView<float> dY, ArrayView<Half> w, int n, int k, int m, bool accumulate = false)
    {
        CheckBackward("LinearBlocked.BackwardF16", dX, dY, w.Length, n, k, m);
        backwardF16(Config(n, k), dX, dY, w, n, k, m, accumulate ? 1 : 0, SliceDepth);
    }

    /// <summary>dX = dY·W (or +=) with bfloat16 weights as raw words.</summary>
    /// <inheritdoc cref="Backward(ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int, bool)"/>
    public void BackwardBf16(ArrayView<float> dX, ArrayView<float> dY, ArrayView<ushort> w, int n, int k, int m, bool accumulate = false)
    {
        CheckBackward("LinearBlocked.BackwardBf16", dX, dY, w.Length, n, k, m);
        backwardBf16(Config(n, k), dX, dY, w, n, k, m, accumulate ? 1 : 0, SliceDepth);
    }

    void CheckForward(string op, ArrayView<float> y, ArrayView<float> x, long weights, ArrayView<float> bias, int n, int k, int m)
    {
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "Y", y, (long)n * m, "N*M");
        Check.Length(op, "X", x, (long)n * k, "N*K");
        if (weights != (long)m * k)
            throw new KernelShapeException($"{op}: W has {weights} elements, expected M*K = {(long)m * k}.");
        if (bias.Length != 0)
            Check.Length(op, "b", bias, m, "M");
    }

    void CheckBackward(string op, ArrayView<float> dX, ArrayView<float> dY, long weights, int n, int k, int m)
    {
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "dX", dX, (long)n * k, "N*K");
        Check.Length(op, "dY", dY, (long)n * m, "N*M");
        if (weights != (long)m * k)
            throw new KernelShapeException($"{op}: W has {weights} elements, expected M*K = {(long)m * k}.");
    }

    /// <summary>Launch shape for an output of <paramref name="rows"/> × <paramref name="cols"/>: groups of Tile × Tile threads,
    /// each owning a (4·Tile)² block.</summary>
    KernelConfig Config(int rows, int cols)
    {
        int edge = context.Tile, block = edge * RegisterBlock;
        int sharedFloats = 2 * SliceDepth * (block + 1);
        return new KernelConfig(
            new Index2D((cols + block - 1) / block, (rows + block - 1) / block),
            new Index2D(edge, edge),
            SharedMemoryConfig.RequestDynamic<float>(sharedFloats));
    }

    #endregion
}
