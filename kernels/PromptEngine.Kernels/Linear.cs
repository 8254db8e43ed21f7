using ILGPU;
using ILGPU.Runtime;
using Half = ILGPU.Half;

namespace PromptEngine.Kernels;

/// <summary>
/// Linear layer on row-major tensors: forward <c>Y = X·Wᵀ + b</c> with X (N, K), W (M, K), b (M) optional,
/// Y (N, M); backward to the data, <c>dX = dY·W</c> with dY (N, M), dX (N, K). The model's weights are frozen, so the
/// engine never asks for their gradient; <see cref="BackwardWeights"/>, <c>dW = dYᵀ·X</c> and <c>db = Σₙ dY</c>, serves
/// the small trainable layers of prefix tuning's reparameterisation MLP. Y is overwritten; dX is overwritten, or
/// accumulated into when asked (a block's input feeds several projections — Llama's q, k and v — whose data
/// gradients add up); dW and db are overwritten.
/// </summary>
/// <remarks>
/// CPU-shaped kernels give each thread a run of 4×4 blocks of the output, each held in 16 registers, streaming four rows
/// of each operand along the reduction axis (rows past the edge are clamped on load and skipped on store).
/// They read and write through pointers taken once per launch thread, not through <see cref="ArrayView{T}"/>'s
/// indexer: on the CPU accelerator a kernel runs as ordinary .NET code, and each indexer call inlines a bounds
/// assertion (a compare, a branch and a cold call) whose locals push the method past the locals RyuJIT tracks;
/// the sixteen accumulators then live in memory (seen in the JIT's disassembly). The launchers check every length,
/// so the pointers stay inside the views. The multiply-adds are
/// <see cref="MathF.FusedMultiplyAdd"/>: one instruction instead of two on the CPU, and plain mul/add in PTX.
/// Under <see cref="KernelShape.Gpu"/> the launchers hand over to <see cref="LinearBlocked"/> (4×4 outputs per thread,
/// 64×64 blocks on a GPU).
/// Offsets are computed in <see cref="long"/> because N·M reaches 2³¹ for a large vocabulary.
/// </remarks>
public sealed class Linear
{
    /// <summary>Edge of the CPU kernels' register micro-tile.</summary>
    internal const int MicroTile = 4;

    #region Kernels

    /// <summary>CPU-shaped forward: each thread computes a run of <paramref name="blocksPerThread"/> 4×4 blocks of Y,
    /// row-major over the blocks (the run shares its X rows while it sweeps W).</summary>
    internal static void ForwardMicroTileKernel(
        ArrayView<float> y,    // (N, M)
        ArrayView<float> x,    // (N, K)
        ArrayView<float> w,    // (M, K)
        ArrayView<float> bias, // (M) or empty
        int n, int k, int m, int blocksPerThread) => ForwardMicroTileRun<float, LinearBlocked.F32>(y, x, w, bias, n, k, m, blocksPerThread);

    /// <summary>The forward's 4×4 block at (n0, m0), through pointers only. A separate method with no
    /// <see cref="ArrayView{T}"/> access, so that RyuJIT, which compiles it apart from the kernel, keeps all sixteen
    /// accumulators in registers: inlined view accessors (each with a bounds assertion) push a kernel past the
    /// JIT's count of tracked locals, and untracked locals live in memory.</summary>
    /// <remarks>Generic over the weights' storage (<see cref="WeightFormat"/>): each weight is widened by
    /// <typeparamref name="TFormat"/> as it is read, a no-op for float32 that the JIT specialises away.</remarks>
    static unsafe void ForwardMicroTile<TWeight, TFormat>(float* y, float* x, TWeight* w, float* bias, bool hasBias, int n0, int m0, int n, int k, int m)
        where TWeight : unmanaged
        where TFormat : struct, LinearBlocked.IWeightFormat<TWeight>
    {
        var format = default(TFormat);
        // Rows past the edge are clamped to the last row: loaded, computed, never stored.
        float* x0 = x + (long)Math.Min(n0, n - 1) * k, x1 = x + (long)Math.Min(n0 + 1, n - 1) * k;
        float* x2 = x + (long)Math.Min(n0 + 2, n - 1) * k, x3 = x + (long)Math.Min(n0 + 3, n - 1) * k;
        TWeight* w0 = w + (long)Math.Min(m0, m - 1) * k, w1 = w + (long)Math.Min(m0 + 1, m - 1) * k;
        TWeight* w2 = w + (long)Math.Min(m0 + 2, m - 1) * k, w3 = w + (long)Math.Min(m0 + 3, m - 1) * k;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int i = 0; i < k; i++)
        {
            float xv0 = x0[i], xv1 = x1[i], xv2 = x2[i], xv3 = x3[i];
            float wv = format.Widen(w0[i]);
            a00 = MathF.FusedMultiplyAdd(xv0, wv, a00); a10 = MathF.FusedMultiplyAdd(xv1, wv, a10);
            a20 = MathF.FusedMultiplyAdd(xv2, wv, a20); a30 = MathF.FusedMultiplyAdd(xv3, wv, a30);
            wv = format.Widen(w1[i]);
            a01 = MathF.FusedMultiplyAdd(xv0, wv, a01); a11 = MathF.FusedMultiplyAdd(xv1, wv, a11);
            a21 = MathF.FusedMultiplyAdd(xv2, wv, a21); a31 = MathF.FusedMultiplyAdd(xv3, wv, a31);
            wv = format.Widen(w2[i]);
            a02 = MathF.FusedMultiplyAdd(xv0, wv, a02); a12 = MathF.FusedMultiplyAdd(xv1, wv, a12);
            a22 = MathF.FusedMultiplyAdd(xv2, wv, a22); a32 = MathF.FusedMultiplyAdd(xv3, wv, a32);
            wv = format.Widen(w3[i]);
            a03 = MathF.FusedMultiplyAdd(xv0, wv, a03); a13 = MathF.FusedMultiplyAdd(xv1, wv, a13);
            a23 = MathF.FusedMultiplyAdd(xv2, wv, a23); a33 = MathF.FusedMultiplyAdd(xv3, wv, a33);
        }
        if (hasBias)
        {
            float b0 = bias[m0], b1 = bias[Math.Min(m0 + 1, m - 1)], b2 = bias[Math.Min(m0 + 2, m - 1)], b3 = bias[Math.Min(m0 + 3, m - 1)];
            a00 += b0; a01 += b1; a02 += b2; a03 += b3;
            a10 += b0; a11 += b1; a12 += b2; a13 += b3;
            a20 += b0; a21 += b1; a22 += b2; a23 += b3;
            a30 += b0; a31 += b1; a32 += b2; a33 += b3;
        }
        StoreRow(y, false, n0, m0, n, m, a00, a01, a02, a03);
        StoreRow(y, false, n0 + 1, m0, n, m, a10, a11, a12, a13);
        StoreRow(y, false, n0 + 2, m0, n, m, a20, a21, a22, a23);
        StoreRow(y, false, n0 + 3, m0, n, m, a30, a31, a32, a33);
    }

    /// <summary>CPU-shaped backward: each thread computes a run of <paramref name="blocksPerThread"/> 4×4 blocks of dX,
    /// reducing over M.</summary>
    internal static void BackwardMicroTileKernel(
        ArrayView<float> dX, // (N, K)
        ArrayView<float> dY, // (N, M)
        ArrayView<float> w,  // (M, K)
        int n, int k, int m, int accumulate, int blocksPerThread) =>
        BackwardMicroTileRun<float, LinearBlocked.F32>(dX, dY, w, n, k, m, accumulate, blocksPerThread);

    /// <summary>The backward's 4×4 block of dX at (n0, k0), through pointers only (see <see cref="ForwardMicroTile"/>).</summary>
    static unsafe void BackwardMicroTile<TWeight, TFormat>(float* dX, float* dY, TWeight* w, bool accumulate, int n0, int k0, int n, int k, int m)
        where TWeight : unmanaged
        where TFormat : struct, LinearBlocked.IWeightFormat<TWeight>
    {
        var format = default(TFormat);
        float* d0 = dY + (long)Math.Min(n0, n - 1) * m, d1 = dY + (long)Math.Min(n0 + 1, n - 1) * m;
        float* d2 = dY + (long)Math.Min(n0 + 2, n - 1) * m, d3 = dY + (long)Math.Min(n0 + 3, n - 1) * m;
        int c1 = Math.Min(k0 + 1, k - 1) - k0, c2 = Math.Min(k0 + 2, k - 1) - k0, c3 = Math.Min(k0 + 3, k - 1) - k0;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        TWeight* column = w + k0; // W[j, k0..k0+3] as j walks down the rows
        for (int j = 0; j < m; j++, column += k)
        {
            float dv0 = d0[j], dv1 = d1[j], dv2 = d2[j], dv3 = d3[j];
            float wv = format.Widen(column[0]);
            a00 = MathF.FusedMultiplyAdd(dv0, wv, a00); a10 = MathF.FusedMultiplyAdd(dv1, wv, a10);
            a20 = MathF.FusedMultiplyAdd(dv2, wv, a20); a30 = MathF.FusedMultiplyAdd(dv3, wv, a30);
            wv = format.Widen(column[c1]);
            a01 = MathF.FusedMultiplyAdd(dv0, wv, a01); a11 = MathF.FusedMultiplyAdd(dv1, wv, a11);
            a21 = MathF.FusedMultiplyAdd(dv2, wv, a21); a31 = MathF.FusedMultiplyAdd(dv3, wv, a31);
            wv = format.Widen(column[c2]);
            a02 = MathF.FusedMultiplyAdd(dv0, wv, a02); a12 = MathF.FusedMultiplyAdd(dv1, wv, a12);
            a22 = MathF.FusedMultiplyAdd(dv2, wv, a22); a32 = MathF.FusedMultiplyAdd(dv3, wv, a32);
            wv = format.Widen(column[c3]);
            a03 = MathF.FusedMultiplyAdd(dv0, wv, a03); a13 = MathF.FusedMultiplyAdd(dv1, wv, a13);
            a23 = MathF.FusedMultiplyAdd(dv2, wv, a23); a33 = MathF.FusedMultiplyAdd(dv3, wv, a33);
        }
        StoreRow(dX, accumulate, n0, k0, n, k, a00, a01, a02, a03);
        StoreRow(dX, accumulate, n0 + 1, k0, n, k, a10, a11, a12, a13);
        StoreRow(dX, accumulate, n0 + 2, k0, n, k, a20, a21, a22, a23);
        StoreRow(dX, accumulate, n0 + 3, k0, n, k, a30, a31, a32, a33);
    }

    /// <summary>CPU-shaped forward and backward with 16-bit weights: the same runs of 4×4 blocks as
    /// <see cref="ForwardMicroTileKernel"/> and <see cref="BackwardMicroTileKernel"/>, each weight widened to float32
    /// as the micro-tile reads it. The float32 entries keep their own copy of these few lines so that their code is
    /// not routed through a generic shell.</summary>
    static unsafe void ForwardMicroTileRun<TWeight, TFormat>(ArrayView<float> y, ArrayView<float> x, ArrayView<TWeight> w, ArrayView<float> bias,
        int n, int k, int m, int blocksPerThread)
        where TWeight : unmanaged
        where TFormat : struct, LinearBlocked.IWeightFormat<TWeight>
    {
        int blocksM = (m + MicroTile - 1) / MicroTile;
        var run = ThreadRun.Of(blocksM * ((n + MicroTile - 1) / MicroTile), blocksPerThread);
        bool hasBias = bias.Length > 0;
        fixed (float* yBase = &y[0])
        fixed (float* xBase = &x[0])
        fixed (TWeight* wBase = &w[0])
        fixed (float* biasBase = &(hasBias ? ref bias[0] : ref y[0]))
        {
            for (int block = (int)run.Start; block < run.End; block++)
                ForwardMicroTile<TWeight, TFormat>(yBase, xBase, wBase, biasBase, hasBias, block / blocksM * MicroTile, block % blocksM * MicroTile, n, k, m);
        }
    }

    /// <inheritdoc cref="ForwardMicroTileRun"/>
    static unsafe void BackwardMicroTileRun<TWeight, TFormat>(ArrayView<float> dX, ArrayView<float> dY, ArrayView<TWeight> w,
        int n, int k, int m, int accumulate, int blocksPerThread)
        where TWeight : unmanaged
        where TFormat : struct, LinearBlocked.IWeightFormat<TWeight>
    {
        int blocksK = (k + MicroTile - 1) / MicroTile;
        var run = ThreadRun.Of(blocksK * ((n + MicroTile - 1) / MicroTile), blocksPerThread);
        fixed (float* dXBase = &dX[0])
        fixed (float* dYBase = &dY[0])
        fixed (TWeight* wBase = &w[0])
        {
            for (int block = (int)run.Start; block < run.End; block++)
                BackwardMicroTile<TWeight, TFormat>(dXBase, dYBase, wBase, accumulate != 0, block / blocksK * MicroTile, block % blocksK * MicroTile, n, k, m);
        }
    }

    /// <summary>CPU-shaped forward, half weights.</summary>
    internal static void ForwardMicroTileF16Kernel(ArrayView<float> y, ArrayView<float> x, ArrayView<Half> w, ArrayView<float> bias,
        int n, int k, int m, int blocksPerThread) => ForwardMicroTileRun<Half, LinearBlocked.F16>(y, x, w, bias, n, k, m, blocksPerThread);

    /// <summary>CPU-shaped forward, bfloat16 weights as raw words.</summary>
    internal static void ForwardMicroTileBf16Kernel(ArrayView<float> y, ArrayView<float> x, ArrayView<ushort> w, ArrayView<float> bias,
        int n, int k, int m, int blocksPerThread) => ForwardMicroTileRun<ushort, LinearBlocked.Bf16>(y, x, w, bias, n, k, m, blocksPerThread);

    /// <summary>CPU-shaped backward to the data, half weights.</summary>
    internal static void BackwardMicroTileF16Kernel(ArrayView<float> dX, ArrayView<float> dY, ArrayView<Half> w,
        int n, int k, int m, int accumulate, int blocksPerThread) => BackwardMicroTileRun<Half, LinearBlocked.F16>(dX, dY, w, n, k, m, accumulate, blocksPerThread);

    /// <summary>CPU-shaped backward to the data, bfloat16 weights as raw words.</summary>
    internal static void BackwardMicroTileBf16Kernel(ArrayView<float> dX, ArrayView<float> dY, ArrayView<ushort> w,
        int n, int k, int m, int accumulate, int blocksPerThread) => BackwardMicroTileRun<ushort, LinearBlocked.Bf16>(dX, dY, w, n, k, m, accumulate, blocksPerThread);

    /// <summary>Weight and bias gradient over a chunk of their elements, one thread per run: element i &lt; M·K is
    /// dW[i / K, i % K] = Σₙ dY[n, i / K]·X[n, i % K]; element M·K + j (with a bias) is db[j] = Σₙ dY[n, j]. The sums
    /// run over n in order, so the result is the same on every shape. Built for the reparameterisation MLP, where
    /// N = Pv is a few dozen rows: a plain reduction per element is enough.</summary>
    internal static unsafe void BackwardWeightsKernel(
        ArrayView<float> dW,    // (M, K)
        ArrayView<float> dBias, // (M) or empty
        ArrayView<float> dY,    // (N, M)
        ArrayView<float> x,     // (N, K)
        int n, int k, int m, long count, int perThread)
    {
        var run = ThreadRun.Of(count, perThread);
        long weights = (long)m * k;
        bool hasBias = dBias.Length > 0;
        fixed (float* dWBase = &dW[0])
        fixed (float* dBiasBase = &(hasBias ? ref dBias[0] : ref dW[0]))
        fixed (float* dYBase = &dY[0])
        fixed (float* xBase = &x[0])
        {
            for (long i = run.Start; i < run.End; i++)
            {
                if (i < weights)
                {
                    long row = i / k, column = i % k;
                    float sum = 0;
                    for (int r = 0; r < n; r++)
                        sum = MathF.FusedMultiplyAdd(dYBase[(long)r * m + row], xBase[(long)r * k + column], sum);
                    dWBase[i] = sum;
                }
                else
                {
                    long row = i - weights;
                    float sum = 0;
                    for (int r = 0; r < n; r++)
                        sum += dYBase[(long)r * m + row];
                    dBiasBase[row] = sum;
                }
            }
        }
    }

    /// <summary>Stores (or adds) up to four consecutive values of one output row, skipping what lies past the edge.</summary>
    static unsafe void StoreRow(float* output, bool add, int row, int col0, int rows, int cols, float v0, float v1, float v2, float v3)
    {
        if (row >= rows)
            return;
        float* o = output + (long)row * cols + col0;
        o[0] = add ? o[0] + v0 : v0;
        if (col0 + 1 < cols) o[1] = add ? o[1] + v1 : v1;
        if (col0 + 2 < cols) o[2] = add ? o[2] + v2 : v2;
        if (col0 + 3 < cols) o[3] = add ? o[3] + v3 : v3;
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    // Loaded for the CPU shape only; the GPU shape hands over to LinearBlocked.
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>? microTileForward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>? microTileBackward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, long, int> backwardWeights;
    // CPU shape, 16-bit weights: loaded on first use, so a float32 model never compiles them.
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<Half>, ArrayView<float>, int, int, int, int>? microTileForwardF16;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, int, int, int>? microTileForwardBf16;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<Half>, int, int, int, int, int>? microTileBackwardF16;
    Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int, int, int>? microTileBackwardBf16;

    internal Linear(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        if (context.Shape == KernelShape.Cpu)
        {
            microTileForward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int>(ForwardMicroTileKernel);
            microTileBackward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(BackwardMicroTileKernel);
        }
        // Both shapes: barrier-free, one element per thread on a GPU (adjacent threads read adjacent X columns).
        backwardWeights = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, int, int, int, long, int>(BackwardWeightsKernel);
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
        context.Enter(op);
        CheckForward(op, y.Length, x.Length, w.Length, bias.Length, n, k, m);
        if (microTileForward is not null)
        {
            microTileForward(context.RunConfig(MicroTileBlocks(n, m), out int perThread), y, x, w, bias, n, k, m, perThread);
        }
        else
            context.LinearBlocked.Forward(y, x, w, bias, n, k, m); // register-blocked tiles (LinearBlocked.cs)
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
        context.Enter(op);
        CheckBackward(op, dX.Length, dY.Length, w.Length, n, k, m);
        if (microTileBackward is not null)
        {
            microTileBackward(context.RunConfig(MicroTileBlocks(n, k), out int perThread), dX, dY, w, n, k, m, accumulate ? 1 : 0, perThread);
        }
        else
            context.LinearBlocked.Backward(dX, dY, w, n, k, m, accumulate); // register-blocked tiles (LinearBlocked.cs)
    }

    /// <summary>Y = X·Wᵀ + b with W in any <see cref="WeightFormat"/>: float32 goes to the float32 kernels above, 16-bit
    /// weights are widened to float32 as they are read and every product is accumulated in float32.</summary>
    /// <inheritdoc cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int)"/>
    public void Forward(ArrayView<float> y, ArrayView<float> x, WeightView w, ArrayView<float> bias, int n, int k, int m)
    {
        if (w.Format == WeightFormat.F32)
        {
            Forward(y, x, w.F32, bias, n, k, m);
            return;
        }
        string op = w.Format == WeightFormat.F16 ? "Linear.ForwardF16" : "Linear.ForwardBf16";
        if (context.Shape == KernelShape.Gpu)
        {
            context.Enter(op);
            if (w.Format == WeightFormat.F16) context.LinearBlocked.ForwardF16(y, x, w.F16, bias, n, k, m);
            else context.LinearBlocked.ForwardBf16(y, x, w.Bf16, bias, n, k, m);
            return;
        }
        context.Enter(op);
        CheckForward(op, y.Length, x.Length, w.Length, bias.Length, n, k, m);
        var accelerator = context.Accelerator;
        var config = context.RunConfig(MicroTileBlocks(n, m), out int perThread);
        if (w.Format == WeightFormat.F16)
            (microTileForwardF16 ??= accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<Half>, ArrayView<float>, int, int, int, int>(ForwardMicroTileF16Kernel))
                (config, y, x, w.F16, bias, n, k, m, perThread);
        else
            (microTileForwardBf16 ??= accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, int, int, int, int>(ForwardMicroTileBf16Kernel))
                (config, y, x, w.Bf16, bias, n, k, m, perThread);
    }

    /// <summary>dX = dY·W (or +=) with W in any <see cref="WeightFormat"/>, accumulated in float32.</summary>
    /// <inheritdoc cref="Backward(ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int, bool)"/>
    public void Backward(ArrayView<float> dX, ArrayView<float> dY, WeightView w, int n, int k, int m, bool accumulate = false)
    {
        if (w.Format == WeightFormat.F32)
        {
            Backward(dX, dY, w.F32, n, k, m, accumulate);
            return;
        }
        string op = w.Format == WeightFormat.F16 ? "Linear.BackwardF16" : "Linear.BackwardBf16";
        if (context.Shape == KernelShape.Gpu)
        {
            context.Enter(op);
            if (w.Format == WeightFormat.F16) context.LinearBlocked.BackwardF16(dX, dY, w.F16, n, k, m, accumulate);
            else context.LinearBlocked.BackwardBf16(dX, dY, w.Bf16, n, k, m, accumulate);
            return;
        }
        context.Enter(op);
        CheckBackward(op, dX.Length, dY.Length, w.Length, n, k, m);
        var accelerator = context.Accelerator;
        var config = context.RunConfig(MicroTileBlocks(n, k), out int perThread);
        if (w.Format == WeightFormat.F16)
            (microTileBackwardF16 ??= accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<Half>, int, int, int, int, int>(BackwardMicroTileF16Kernel))
                (config, dX, dY, w.F16, n, k, m, accumulate ? 1 : 0, perThread);
        else
            (microTileBackwardBf16 ??= accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, int, int, int, int>(BackwardMicroTileBf16Kernel))
                (config, dX, dY, w.Bf16, n, k, m, accumulate ? 1 : 0, perThread);
    }

    /// <summary>dW = dYᵀ·X and db = Σₙ dY (the gradient of <see cref="Forward(ArrayView{float}, ArrayView{float}, ArrayView{float}, ArrayView{float}, int, int, int)"/> with respect to its weight and bias),
    /// OVERWRITING both: unlike dX, nothing is accumulated. For the small trainable layers of prefix tuning's
    /// reparameterisation MLP; the engine's frozen layers never call it.</summary>
    /// <param name="dW">Weight gradient (M, K), overwritten.</param>
    /// <param name="dBias">Bias gradient (M), overwritten; or an empty view (<c>default</c>) for a layer without bias.</param>
    /// <param name="dY">Output gradient (N, M).</param>
    /// <param name="x">The forward's input (N, K).</param>
    /// <param name="n">Rows N.</param>
    /// <param name="k">Input features.</param>
    /// <param name="m">Output features.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void BackwardWeights(ArrayView<float> dW, ArrayView<float> dBias, ArrayView<float> dY, ArrayView<float> x, int n, int k, int m)
    {
        const string op = "Linear.BackwardWeights";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "dW", dW, (long)m * k, "M*K");
        if (dBias.Length != 0)
            Check.Length(op, "db", dBias, m, "M");
        Check.Length(op, "dY", dY, (long)n * m, "N*M");
        Check.Length(op, "X", x, (long)n * k, "N*K");
        long count = (long)m * k + dBias.Length;
        backwardWeights(context.RunConfig(count, out int perThread), dW, dBias, dY, x, n, k, m, count, perThread);
    }

    /// <summary>The forward's shape contract on the tensors' lengths, whatever the weights' storage.</summary>
    static void CheckForward(string op, long y, long x, long weights, long bias, int n, int k, int m)
    {
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "Y", y, (long)n * m, "N*M");
        Check.Length(op, "X", x, (long)n * k, "N*K");
        Check.Length(op, "W", weights, (long)m * k, "M*K");
        if (bias != 0)
            Check.Length(op, "b", bias, m, "M");
    }

    /// <summary>The data backward's shape contract on the tensors' lengths, whatever the weights' storage.</summary>
    static void CheckBackward(string op, long dX, long dY, long weights, int n, int k, int m)
    {
        Check.Positive(op, ("N", n), ("K", k), ("M", m));
        Check.Length(op, "dX", dX, (long)n * k, "N*K");
        Check.Length(op, "dY", dY, (long)n * m, "N*M");
        Check.Length(op, "W", weights, (long)m * k, "M*K");
    }

    /// <summary>4×4 blocks covering a rows × cols output.</summary>
    static long MicroTileBlocks(int rows, int cols) => (long)((rows + MicroTile - 1) / MicroTile) * ((cols + MicroTile - 1) / MicroTile);

    #endregion
}
