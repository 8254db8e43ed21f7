using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Linear layer on row-major tensors: forward <c>Y = X·Wᵀ + b</c> with X (N, K), W (M, K), b (M) optional,
/// Y (N, M); backward to the data only, <c>dX = dY·W</c> with dY (N, M), dX (N, K). The weights are frozen,
/// so no weight or bias gradient is ever computed. Y is overwritten; dX is overwritten, or accumulated into
/// when asked (a block's input feeds several projections — Llama's q, k and v — whose data gradients add up).
/// </summary>
/// <remarks>
/// CPU-shaped kernels give each thread a 4×4 block of the output held in 16 registers, streaming four rows
/// of each operand along the reduction axis (rows past the edge are clamped on load and skipped on store).
/// GPU-shaped kernels stage Tile×Tile blocks of both operands in dynamic shared memory, one output element
/// per thread. Offsets are computed in <see cref="long"/> because N·M reaches 2³¹ for a large vocabulary.
/// </remarks>
public sealed class Linear
{
    /// <summary>Edge of the CPU kernels' register micro-tile.</summary>
    internal const int MicroTile = 4;

    #region Kernels

    /// <summary>CPU-shaped forward: one thread per 4×4 block of Y.</summary>
    internal static void ForwardMicroTileKernel(
        ArrayView<float> y,    // (N, M)
        ArrayView<float> x,    // (N, K)
        ArrayView<float> w,    // (M, K)
        ArrayView<float> bias, // (M) or empty
        int n, int k, int m)
    {
        int blocksM = (m + MicroTile - 1) / MicroTile;
        int block = Grid.GlobalIndex.X;
        if (block >= blocksM * ((n + MicroTile - 1) / MicroTile))
            return;
        int n0 = block / blocksM * MicroTile;
        int m0 = block % blocksM * MicroTile;
        long x0 = (long)Math.Min(n0, n - 1) * k, x1 = (long)Math.Min(n0 + 1, n - 1) * k;
        long x2 = (long)Math.Min(n0 + 2, n - 1) * k, x3 = (long)Math.Min(n0 + 3, n - 1) * k;
        long w0 = (long)Math.Min(m0, m - 1) * k, w1 = (long)Math.Min(m0 + 1, m - 1) * k;
        long w2 = (long)Math.Min(m0 + 2, m - 1) * k, w3 = (long)Math.Min(m0 + 3, m - 1) * k;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int i = 0; i < k; i++)
        {
            float xv0 = x[x0 + i], xv1 = x[x1 + i], xv2 = x[x2 + i], xv3 = x[x3 + i];
            float wv0 = w[w0 + i], wv1 = w[w1 + i], wv2 = w[w2 + i], wv3 = w[w3 + i];
            a00 += xv0 * wv0; a01 += xv0 * wv1; a02 += xv0 * wv2; a03 += xv0 * wv3;
            a10 += xv1 * wv0; a11 += xv1 * wv1; a12 += xv1 * wv2; a13 += xv1 * wv3;
            a20 += xv2 * wv0; a21 += xv2 * wv1; a22 += xv2 * wv2; a23 += xv2 * wv3;
            a30 += xv3 * wv0; a31 += xv3 * wv1; a32 += xv3 * wv2; a33 += xv3 * wv3;
        }
        bool hasBias = bias.Length > 0;
        StoreRow(y, bias, hasBias, false, n0, m0, n, m, a00, a01, a02, a03);
        StoreRow(y, bias, hasBias, false, n0 + 1, m0, n, m, a10, a11, a12, a13);
        StoreRow(y, bias, hasBias, false, n0 + 2, m0, n, m, a20, a21, a22, a23);
        StoreRow(y, bias, hasBias, false, n0 + 3, m0, n, m, a30, a31, a32, a33);
    }

    /// <summary>CPU-shaped backward: one thread per 4×4 block of dX, reducing over M.</summary>
    internal static void BackwardMicroTileKernel(
        ArrayView<float> dX, // (N, K)
        ArrayView<float> dY, // (N, M)
        ArrayView<float> w,  // (M, K)
        int n, int k, int m, int accumulate)
    {
        int blocksK = (k + MicroTile - 1) / MicroTile;
        int block = Grid.GlobalIndex.X;
        if (block >= blocksK * ((n + MicroTile - 1) / MicroTile))
            return;
        int n0 = block / blocksK * MicroTile;
        int k0 = block % blocksK * MicroTile;
        long d0 = (long)Math.Min(n0, n - 1) * m, d1 = (long)Math.Min(n0 + 1, n - 1) * m;
        long d2 = (long)Math.Min(n0 + 2, n - 1) * m, d3 = (long)Math.Min(n0 + 3, n - 1) * m;
        int c0 = Math.Min(k0, k - 1), c1 = Math.Min(k0 + 1, k - 1);
        int c2 = Math.Min(k0 + 2, k - 1), c3 = Math.Min(k0 + 3, k - 1);
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int j = 0; j < m; j++)
        {
            float dv0 = dY[d0 + j], dv1 = dY[d1 + j], dv2 = dY[d2 + j], dv3 = dY[d3 + j];
            long row = (long)j * k;
            float wv0 = w[row + c0], wv1 = w[row + c1], wv2 = w[row + c2], wv3 = w[row + c3];
            a00 += dv0 * wv0; a01 += dv0 * wv1; a02 += dv0 * wv2; a03 += dv0 * wv3;
            a10 += dv1 * wv0; a11 += dv1 * wv1; a12 += dv1 * wv2; a13 += dv1 * wv3;
            a20 += dv2 * wv0; a21 += dv2 * wv1; a22 += dv2 * wv2; a23 += dv2 * wv3;
            a30 += dv3 * wv0; a31 += dv3 * wv1; a32 += dv3 * wv2; a33 += dv3 * wv3;
        }
        var noBias = default(ArrayView<float>);
        bool add = accumulate != 0;
        StoreRow(dX, noBias, false, add, n0, k0, n, k, a00, a01, a02, a03);
        StoreRow(dX, noBias, false, add, n0 + 1, k0, n, k, a10, a11, a12, a13);
        StoreRow(dX, noBias, false, add, n0 + 2, k0, n, k, a20, a21, a22, a23);
        StoreRow(dX, noBias, false, add, n0 + 3, k0, n, k, a30, a31, a32, a33);
    }

    /// <summary>Stores (or adds) up to four consecutive values of one output row, skipping what lies past the edge.</summary>
    static void StoreRow(ArrayView<float> output, ArrayView<float> bias, bool hasBias, bool add, int row, int col0, int rows, int cols,
        float v0, float v1, float v2, float v3)
    {
        if (row >= rows)
            return;
        long offset = (long)row * cols + col0;
        output[offset] = v0 + (hasBias ? bias[col0] : 0f) + (add ? output[offset] : 0f);
        if (col0 + 1 < cols) output[offset + 1] = v1 + (hasBias ? bias[col0 + 1] : 0f) + (add ? output[offset + 1] : 0f);
        if (col0 + 2 < cols) output[offset + 2] = v2 + (hasBias ? bias[col0 + 2] : 0f) + (add ? output[offset + 2] : 0f);
        if (col0 + 3 < cols) output[offset + 3] = v3 + (hasBias ? bias[col0 + 3] : 0f) + (add ? output[offset + 3] : 0f);
    }

    /// <summary>GPU-shaped forward: group (Tile, Tile) computes a Tile×Tile block of Y; shared memory holds 2·Tile² floats.</summary>
    internal static void ForwardTiledKernel(
        ArrayView<float> y,    // (N, M)
        ArrayView<float> x,    // (N, K)
        ArrayView<float> w,    // (M, K)
        ArrayView<float> bias, // (M) or empty
        int n, int k, int m)
    {
        int tile = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var xTile = shared.SubView(0, tile * tile);          // (Tile rows of X, Tile of K)
        var wTile = shared.SubView(tile * tile, tile * tile); // (Tile rows of W, Tile of K)
        int tx = Group.IdxX, ty = Group.IdxY;
        int row = Grid.IdxY * tile + ty;    // of Y and X
        int col = Grid.IdxX * tile + tx;    // of Y
        int wRow = Grid.IdxX * tile + ty;   // of W, loaded by this thread
        float acc = 0;
        for (int k0 = 0; k0 < k; k0 += tile)
        {
            int kk = k0 + tx;
            xTile[ty * tile + tx] = row < n && kk < k ? x[(long)row * k + kk] : 0f;
            wTile[ty * tile + tx] = wRow < m && kk < k ? w[(long)wRow * k + kk] : 0f;
            Group.Barrier();
            for (int i = 0; i < tile; i++)
                acc += xTile[ty * tile + i] * wTile[tx * tile + i];
            Group.Barrier();
        }
        if (row < n && col < m)
            y[(long)row * m + col] = acc + (bias.Length > 0 ? bias[col] : 0f);
    }

    /// <summary>GPU-shaped backward: group (Tile, Tile) computes a Tile×Tile block of dX, reducing over M through shared memory.</summary>
    internal static void BackwardTiledKernel(
        ArrayView<float> dX, // (N, K)
        ArrayView<float> dY, // (N, M)
        ArrayView<float> w,  // (M, K)
        int n, int k, int m, int accumulate)
    {
        int tile = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var dyTile = shared.SubView(0, tile * tile);         // (Tile rows of dY, Tile of M)
        var wTile = shared.SubView(tile * tile, tile * tile); // (Tile of M, Tile columns of W)
        int tx = Group.IdxX, ty = Group.IdxY;
        int row = Grid.IdxY * tile + ty; // of dX and dY
        int col = Grid.IdxX * tile + tx; // of dX and W
        float acc = 0;
        for (int m0 = 0; m0 < m; m0 += tile)
        {
            int dyCol = m0 + tx, wRow = m0 + ty;
            dyTile[ty * tile + tx] = row < n && dyCol < m ? dY[(long)row * m + dyCol] : 0f;
            wTile[ty * tile + tx] = wRow < m && col < k ? w[(long)wRow * k + col] : 0f;
            Group.Barrier();
            for (int i = 0; i < tile; i++)
                acc += dyTile[ty * tile + i] * wTile[i * tile + tx];
            Group.Barrier();
        }
        if (row < n && col < k)
            dX[(long)row * k + col] = accumulate != 0 ? dX[(long)row * k + col] + acc : acc;
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int> backward;

    internal Linear(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        if (context.Shape == KernelShape.Cpu)
        {
            forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(ForwardMicroTileKernel);
            backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(BackwardMicroTileKernel);
        }
        else
        {
            forward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int>(ForwardTiledKernel);
            backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(BackwardTiledKernel);
        }
    }

    /// <summary>Y = X·Wᵀ + b.</summary>
    /// <param name="y">Output (N, M), overwritten.</param>
    /// <param name="x">Input (N, K).</param>
    /// <param name="w">Weight (M, K), row-major as stored by PyTorch.</param>
    /// <param name="bias">Bias (M), or an empty view for none.</param>
    /// <param name="n">Rows (B·T).</param>
    /// <param name="k">Input features.</param>
    /// <param name="m">Output features.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> y, ArrayView<float> x, ArrayView<float> w, ArrayView<float> bias, int n, int k, int m)
    {
        const string op = "Linear.Forward";
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "Y", y, (long)n * m, "N*M");
        Check.Length(op, "X", x, (long)n * k, "N*K");
        Check.Length(op, "W", w, (long)m * k, "M*K");
        if (bias.Length != 0)
            Check.Length(op, "b", bias, m, "M");
        if (context.Shape == KernelShape.Gpu)
        {
            context.LinearBlocked.Forward(y, x, w, bias, n, k, m); // register-blocked tiles (LinearBlocked.cs)
            return;
        }
        forward(Config(n, m), y, x, w, bias, n, k, m);
    }

    /// <summary>dX = dY·W, or dX += dY·W with <paramref name="accumulate"/> (gradient to the input only; W is frozen).</summary>
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
        const string op = "Linear.Backward";
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "dX", dX, (long)n * k, "N*K");
        Check.Length(op, "dY", dY, (long)n * m, "N*M");
        Check.Length(op, "W", w, (long)m * k, "M*K");
        if (context.Shape == KernelShape.Gpu)
        {
            context.LinearBlocked.Backward(dX, dY, w, n, k, m, accumulate); // register-blocked tiles (LinearBlocked.cs)
            return;
        }
        backward(Config(n, k), dX, dY, w, n, k, m, accumulate ? 1 : 0);
    }

    /// <summary>Launch shape for an output of <paramref name="rows"/> × <paramref name="cols"/>.</summary>
    KernelConfig Config(int rows, int cols)
    {
        if (context.Shape == KernelShape.Cpu)
        {
            long blocks = (long)((rows + MicroTile - 1) / MicroTile) * ((cols + MicroTile - 1) / MicroTile);
            return new KernelConfig((int)blocks, 1);
        }
        int tile = context.Tile;
        return new KernelConfig(
            new Index2D((cols + tile - 1) / tile, (rows + tile - 1) / tile),
            new Index2D(tile, tile),
            SharedMemoryConfig.RequestDynamic<float>(2 * tile * tile));
    }

    #endregion
}
