using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Fused LM head + softmax + cross-entropy, evaluated only at selected positions. For each selected row
/// s (hidden row <c>rows[s]</c>): <c>logits[s, j] = hidden[rows[s]] · W[u_j]</c> over the columns j of the
/// vocabulary (u_j = j) or of an allowed subset (u_j = allowed[j], e.g. a verbalizer's label words), then
/// <c>loss[s] = logsumexp_j logits[s, j] − logits[s, target]</c>, and the mean over the rows whose target is not −1.
/// The backward is <c>dHidden[rows[s]] = Σ_j (softmax_j − 1[u_j = target]) · W[u_j] / count</c>, zero on every
/// row not selected. Shapes: hidden, dHidden (N, C); rows, targets, losses (S); W (V, C), the tied embedding
/// or lm_head; allowed (R), or empty with R = 0 for the whole vocabulary; logits, dLogits (S, V) or (S, R);
/// meanLoss (1). Targets are vocabulary ids and must lie in the allowed set. Everything is overwritten.
/// <para>A trainable linear classifier head is the same computation with W its (R, C) weight and no allowed subset
/// (V = R, R = 0, targets are class indices), plus an optional bias (R) added to every row of logits
/// (<c>logits[s, j] += b[j]</c>). Its gradient, unlike the frozen LM head's, is wanted: <see cref="HeadGradient"/> ADDS
/// <c>dW[j] += Σ_s dLogits[s, j] · hidden[rows[s]]</c> and <c>db[j] += Σ_s dLogits[s, j]</c> (it accumulates over a
/// step's batches, as dPrompt does).</para>
/// </summary>
/// <remarks>
/// <para>The head is evaluated at the S selected rows only, never (N, V). <see cref="Forward"/> writes the logits
/// into the caller's (S, width) scratch and replaces them in place by dLogits (as llm.c's fused classifier does),
/// so <see cref="Backward"/> is one more product, <c>dHidden = dLogits · W_allowed</c>, scattered to the selected rows.
/// The count of non-ignored rows and the mean are computed on the device: the host reads one float.</para>
/// <para>Selected rows must be distinct (the scatter writes each once; duplicates would race): check with
/// <see cref="CheckSelection"/> on the host. An index the kernels find out of range (row ≥ N, id ≥ V, a target
/// outside the allowed set) yields NaN in the logits or the loss rather than an out-of-bounds access.</para>
/// <para>CPU-shaped kernels: both products in runs of 4×4 register blocks per thread, as <see cref="Linear"/>'s (the
/// logits over (selected rows, columns), the backward over (selected rows, channels) in column chunks), and one thread
/// per selected row for the softmax, with one exponential per column. GPU-shaped: Tile×Tile shared-memory tiles for
/// both products and one group per selected row for the softmax.</para>
/// </remarks>
public sealed class CrossEntropy
{
    /// <summary>Edge of the CPU-shaped kernels' register micro-tile (as <see cref="Linear.MicroTile"/>).</summary>
    const int MicroTile = Linear.MicroTile;

    /// <summary>Columns summed into a partial before it joins the running total (CPU-shaped backward).</summary>
    const int SumBlock = 256;

    #region Kernels

    /// <summary>Vocabulary row of column <paramref name="column"/>: allowed[column], or the column itself when unrestricted.</summary>
    static int VocabularyRow(ArrayView<int> allowed, int r, int column) => r > 0 ? allowed[column] : column;

    /// <summary>Column of <paramref name="target"/> among the logits, −1 when it is not among them.</summary>
    static int TargetColumn(ArrayView<int> allowed, int v, int r, int target)
    {
        if (r == 0)
            return target < v ? target : -1;
        for (int j = 0; j < r; j++)
            if (allowed[j] == target)
                return j;
        return -1;
    }

    /// <summary>CPU-shaped logits: each thread computes a run of <paramref name="blocksPerThread"/> 4×4 blocks of
    /// (selected rows, columns), column-major over the blocks, so a run keeps its four weight rows in cache while it
    /// sweeps the S hidden rows (the weight, 37 MB for stories15M, is read from memory once).</summary>
    /// <remarks>Through pointers taken once per launch thread, as <see cref="Linear"/>'s micro-tile kernels do, for
    /// the same reason: view indexers' bounds assertions push the sixteen accumulators out of registers. The launchers
    /// check every length; an index out of range (row ≥ N, id ≥ V) is never dereferenced and yields NaN.</remarks>
    internal static unsafe void LogitsMicroTileKernel(
        ArrayView<float> logits, // (S, width)
        ArrayView<float> hidden, // (N, C)
        ArrayView<int> rows,     // (S)
        ArrayView<float> weight, // (V, C)
        ArrayView<int> allowed,  // (R) or empty
        int n, int c, int s, int v, int r, int blocksPerThread)
    {
        int width = r > 0 ? r : v;
        int blocksS = (s + MicroTile - 1) / MicroTile;
        var run = ThreadRun.Of(blocksS * ((width + MicroTile - 1) / MicroTile), blocksPerThread);
        fixed (float* logitsBase = &logits[0])
        fixed (float* hiddenBase = &hidden[0])
        fixed (int* rowsBase = &rows[0])
        fixed (float* weightBase = &weight[0])
        fixed (int* allowedBase = &(r > 0 ? ref allowed[0] : ref rows[0]))
        {
            for (int block = (int)run.Start; block < run.End; block++)
                LogitsMicroTile(logitsBase, hiddenBase, rowsBase, weightBase, allowedBase,
                    block % blocksS * MicroTile, block / blocksS * MicroTile, n, c, s, v, r);
        }
    }

    /// <summary>Hidden row of selected row <paramref name="selected"/> (clamped to the last selected row), and whether
    /// it lies in [0, N); an invalid row is read as row 0 and its results replaced by NaN.</summary>
    static unsafe int HiddenRow(int* rows, int selected, int s, int n, out bool valid)
    {
        int row = rows[Math.Min(selected, s - 1)];
        valid = row >= 0 && row < n;
        return valid ? row : 0;
    }

    /// <summary>Vocabulary row of column <paramref name="column"/> (clamped to the last column) through pointers, and
    /// whether it lies in [0, V); an invalid id is read as row 0 and its results replaced by NaN.</summary>
    static unsafe int VocabularyRow(int* allowed, int column, int width, int v, int r, out bool valid)
    {
        column = Math.Min(column, width - 1);
        int row = r > 0 ? allowed[column] : column;
        valid = row >= 0 && row < v;
        return valid ? row : 0;
    }

    /// <summary>The logits' 4×4 block at (selected row s0, column j0): sixteen accumulators over C, through pointers only
    /// (see <see cref="Linear"/>'s ForwardMicroTile for why it is a method apart).</summary>
    static unsafe void LogitsMicroTile(float* logits, float* hidden, int* rows, float* weight, int* allowed,
        int s0, int j0, int n, int c, int s, int v, int r)
    {
        int width = r > 0 ? r : v;
        float* x0 = hidden + (long)HiddenRow(rows, s0, s, n, out bool x0Valid) * c;
        float* x1 = hidden + (long)HiddenRow(rows, s0 + 1, s, n, out bool x1Valid) * c;
        float* x2 = hidden + (long)HiddenRow(rows, s0 + 2, s, n, out bool x2Valid) * c;
        float* x3 = hidden + (long)HiddenRow(rows, s0 + 3, s, n, out bool x3Valid) * c;
        float* w0 = weight + (long)VocabularyRow(allowed, j0, width, v, r, out bool w0Valid) * c;
        float* w1 = weight + (long)VocabularyRow(allowed, j0 + 1, width, v, r, out bool w1Valid) * c;
        float* w2 = weight + (long)VocabularyRow(allowed, j0 + 2, width, v, r, out bool w2Valid) * c;
        float* w3 = weight + (long)VocabularyRow(allowed, j0 + 3, width, v, r, out bool w3Valid) * c;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        for (int i = 0; i < c; i++)
        {
            float xv0 = x0[i], xv1 = x1[i], xv2 = x2[i], xv3 = x3[i];
            float wv = w0[i];
            a00 = MathF.FusedMultiplyAdd(xv0, wv, a00); a10 = MathF.FusedMultiplyAdd(xv1, wv, a10);
            a20 = MathF.FusedMultiplyAdd(xv2, wv, a20); a30 = MathF.FusedMultiplyAdd(xv3, wv, a30);
            wv = w1[i];
            a01 = MathF.FusedMultiplyAdd(xv0, wv, a01); a11 = MathF.FusedMultiplyAdd(xv1, wv, a11);
            a21 = MathF.FusedMultiplyAdd(xv2, wv, a21); a31 = MathF.FusedMultiplyAdd(xv3, wv, a31);
            wv = w2[i];
            a02 = MathF.FusedMultiplyAdd(xv0, wv, a02); a12 = MathF.FusedMultiplyAdd(xv1, wv, a12);
            a22 = MathF.FusedMultiplyAdd(xv2, wv, a22); a32 = MathF.FusedMultiplyAdd(xv3, wv, a32);
            wv = w3[i];
            a03 = MathF.FusedMultiplyAdd(xv0, wv, a03); a13 = MathF.FusedMultiplyAdd(xv1, wv, a13);
            a23 = MathF.FusedMultiplyAdd(xv2, wv, a23); a33 = MathF.FusedMultiplyAdd(xv3, wv, a33);
        }
        StoreLogits(logits, s0, j0, s, width, x0Valid, w0Valid, w1Valid, w2Valid, w3Valid, a00, a01, a02, a03);
        StoreLogits(logits, s0 + 1, j0, s, width, x1Valid, w0Valid, w1Valid, w2Valid, w3Valid, a10, a11, a12, a13);
        StoreLogits(logits, s0 + 2, j0, s, width, x2Valid, w0Valid, w1Valid, w2Valid, w3Valid, a20, a21, a22, a23);
        StoreLogits(logits, s0 + 3, j0, s, width, x3Valid, w0Valid, w1Valid, w2Valid, w3Valid, a30, a31, a32, a33);
    }

    /// <summary>Stores up to four logits of one selected row, NaN where the row or the column's id was invalid,
    /// skipping what lies past the edge.</summary>
    static unsafe void StoreLogits(float* logits, int selected, int j0, int s, int width, bool rowValid,
        bool valid0, bool valid1, bool valid2, bool valid3, float l0, float l1, float l2, float l3)
    {
        if (selected >= s)
            return;
        float* o = logits + (long)selected * width + j0;
        o[0] = rowValid && valid0 ? l0 : float.NaN;
        if (j0 + 1 < width) o[1] = rowValid && valid1 ? l1 : float.NaN;
        if (j0 + 2 < width) o[2] = rowValid && valid2 ? l2 : float.NaN;
        if (j0 + 3 < width) o[3] = rowValid && valid3 ? l3 : float.NaN;
    }

    /// <summary>CPU-shaped softmax and loss: one thread per selected row, one exponential per column (the shifted
    /// exponentials are kept in the row and scaled by 1/Σ, rather than recomputed as exp(l − logsumexp)); dLogits
    /// overwrites the row's logits.</summary>
    internal static unsafe void LossRowKernel(
        ArrayView<float> losses,  // (S)
        ArrayView<float> dLogits, // (S, width): logits in, dLogits out
        ArrayView<int> targets,   // (S)
        ArrayView<int> allowed,   // (R) or empty
        int s, int v, int r)
    {
        int selected = Grid.GlobalIndex.X;
        if (selected >= s)
            return;
        int width = r > 0 ? r : v;
        int target = targets[selected];
        int count = 0;
        for (int i = 0; i < s; i++)
            count += targets[i] >= 0 ? 1 : 0;
        int targetColumn = target >= 0 ? TargetColumn(allowed, v, r, target) : -1;
        fixed (float* logitsBase = &dLogits[0])
        {
            float* row = logitsBase + (long)selected * width;
            if (target < 0)
            {
                losses[selected] = 0;
                for (int j = 0; j < width; j++)
                    row[j] = 0;
                return;
            }
            float max = float.NegativeInfinity;
            for (int j = 0; j < width; j++)
                max = Math.Max(max, row[j]);
            float targetLogit = targetColumn >= 0 ? row[targetColumn] : float.NaN;
            // Compensated (Kahan) sum: a plain float sum over a 32,000-word vocabulary drifts by ~1e-5 relative,
            // which the TorchSharp oracle saw on stories15M's loss (5e-5 against float64).
            float sum = 0, compensation = 0;
            for (int j = 0; j < width; j++)
            {
                float e = XMath.Exp(row[j] - max);
                row[j] = e;
                float term = e - compensation;
                float next = sum + term;
                compensation = (next - sum) - term;
                sum = next;
            }
            losses[selected] = max + XMath.Log(sum) - targetLogit;
            float inverseCount = targetColumn >= 0 ? 1f / count : float.NaN;
            float scale = inverseCount / sum;
            for (int j = 0; j < width; j++)
                row[j] *= scale;
            if (targetColumn >= 0)
                row[targetColumn] -= inverseCount;
        }
    }

    /// <summary>Mean loss over the non-ignored rows, summed in row order by one thread (0 when every row is ignored).</summary>
    internal static void MeanKernel(
        ArrayView<float> meanLoss, // (1)
        ArrayView<float> losses,   // (S)
        ArrayView<int> targets,    // (S)
        int s)
    {
        if (Grid.GlobalIndex.X != 0)
            return;
        float sum = 0;
        int count = 0;
        for (int i = 0; i < s; i++)
            if (targets[i] >= 0)
            {
                sum += losses[i];
                count++;
            }
        meanLoss[0] = count > 0 ? sum / count : 0f;
    }

    /// <summary>CPU-shaped backward: each thread owns a run of <paramref name="blocksPerThread"/> 4×4 blocks of
    /// (selected rows, channels) of dHidden and reduces them over the columns in chunks of <see cref="SumBlock"/>: for
    /// each chunk it sweeps its blocks (the chunk's weight rows stay in cache), then adds the sixteen partial sums to
    /// the selected rows of dHidden, which the launcher zeroes first.</summary>
    /// <remarks>Blocked sum: rounding grows with width/SumBlock + SumBlock terms rather than with the whole vocabulary
    /// (32,000 for stories15M). Through pointers, as <see cref="LogitsMicroTileKernel"/>.</remarks>
    internal static unsafe void BackwardMicroTileKernel(
        ArrayView<float> dHidden, // (N, C)
        ArrayView<float> dLogits, // (S, width)
        ArrayView<float> weight,  // (V, C)
        ArrayView<int> rows,      // (S)
        ArrayView<int> allowed,   // (R) or empty
        int n, int c, int s, int v, int r, int blocksPerThread)
    {
        int width = r > 0 ? r : v;
        int blocksC = (c + MicroTile - 1) / MicroTile;
        var run = ThreadRun.Of(blocksC * ((s + MicroTile - 1) / MicroTile), blocksPerThread);
        fixed (float* dHiddenBase = &dHidden[0])
        fixed (float* dLogitsBase = &dLogits[0])
        fixed (float* weightBase = &weight[0])
        fixed (int* rowsBase = &rows[0])
        fixed (int* allowedBase = &(r > 0 ? ref allowed[0] : ref rows[0]))
        {
            for (int j0 = 0; j0 < width; j0 += SumBlock)
            {
                int end = Math.Min(j0 + SumBlock, width);
                for (int block = (int)run.Start; block < run.End; block++)
                    BackwardMicroTile(dHiddenBase, dLogitsBase, weightBase, rowsBase, allowedBase,
                        block / blocksC * MicroTile, block % blocksC * MicroTile, j0, end, n, c, s, v, r);
            }
        }
    }

    /// <summary>Adds Σ over columns [j0, end) of dLogits[s, j]·W[u_j, c] to dHidden's 4×4 block at (selected row s0,
    /// channel c0), through pointers only.</summary>
    static unsafe void BackwardMicroTile(float* dHidden, float* dLogits, float* weight, int* rows, int* allowed,
        int s0, int c0, int j0, int end, int n, int c, int s, int v, int r)
    {
        int width = r > 0 ? r : v;
        float* d0 = dLogits + (long)Math.Min(s0, s - 1) * width, d1 = dLogits + (long)Math.Min(s0 + 1, s - 1) * width;
        float* d2 = dLogits + (long)Math.Min(s0 + 2, s - 1) * width, d3 = dLogits + (long)Math.Min(s0 + 3, s - 1) * width;
        // Channels past the edge are clamped on load and skipped on store.
        int k1 = Math.Min(c0 + 1, c - 1) - c0, k2 = Math.Min(c0 + 2, c - 1) - c0, k3 = Math.Min(c0 + 3, c - 1) - c0;
        float a00 = 0, a01 = 0, a02 = 0, a03 = 0, a10 = 0, a11 = 0, a12 = 0, a13 = 0;
        float a20 = 0, a21 = 0, a22 = 0, a23 = 0, a30 = 0, a31 = 0, a32 = 0, a33 = 0;
        bool vocabularyValid = true;
        for (int j = j0; j < end; j++)
        {
            int vocabularyRow = r > 0 ? allowed[j] : j;
            if (vocabularyRow < 0 || vocabularyRow >= v)
            {
                vocabularyValid = false;
                continue;
            }
            float* column = weight + (long)vocabularyRow * c + c0;
            float dv0 = d0[j], dv1 = d1[j], dv2 = d2[j], dv3 = d3[j];
            float wv = column[0];
            a00 = MathF.FusedMultiplyAdd(dv0, wv, a00); a10 = MathF.FusedMultiplyAdd(dv1, wv, a10);
            a20 = MathF.FusedMultiplyAdd(dv2, wv, a20); a30 = MathF.FusedMultiplyAdd(dv3, wv, a30);
            wv = column[k1];
            a01 = MathF.FusedMultiplyAdd(dv0, wv, a01); a11 = MathF.FusedMultiplyAdd(dv1, wv, a11);
            a21 = MathF.FusedMultiplyAdd(dv2, wv, a21); a31 = MathF.FusedMultiplyAdd(dv3, wv, a31);
            wv = column[k2];
            a02 = MathF.FusedMultiplyAdd(dv0, wv, a02); a12 = MathF.FusedMultiplyAdd(dv1, wv, a12);
            a22 = MathF.FusedMultiplyAdd(dv2, wv, a22); a32 = MathF.FusedMultiplyAdd(dv3, wv, a32);
            wv = column[k3];
            a03 = MathF.FusedMultiplyAdd(dv0, wv, a03); a13 = MathF.FusedMultiplyAdd(dv1, wv, a13);
            a23 = MathF.FusedMultiplyAdd(dv2, wv, a23); a33 = MathF.FusedMultiplyAdd(dv3, wv, a33);
        }
        AddHiddenRow(dHidden, rows, s0, c0, n, c, s, vocabularyValid, a00, a01, a02, a03);
        AddHiddenRow(dHidden, rows, s0 + 1, c0, n, c, s, vocabularyValid, a10, a11, a12, a13);
        AddHiddenRow(dHidden, rows, s0 + 2, c0, n, c, s, vocabularyValid, a20, a21, a22, a23);
        AddHiddenRow(dHidden, rows, s0 + 3, c0, n, c, s, vocabularyValid, a30, a31, a32, a33);
    }

    /// <summary>Adds up to four partial sums to the hidden row of selected row <paramref name="selected"/> (NaN when a
    /// column's id was invalid), skipping selections past the edge, rows outside [0, N) and channels past C.</summary>
    static unsafe void AddHiddenRow(float* dHidden, int* rows, int selected, int c0, int n, int c, int s, bool valid,
        float p0, float p1, float p2, float p3)
    {
        if (selected >= s)
            return;
        int row = rows[selected];
        if (row < 0 || row >= n)
            return;
        float* o = dHidden + (long)row * c + c0;
        o[0] += valid ? p0 : float.NaN;
        if (c0 + 1 < c) o[1] += valid ? p1 : float.NaN;
        if (c0 + 2 < c) o[2] += valid ? p2 : float.NaN;
        if (c0 + 3 < c) o[3] += valid ? p3 : float.NaN;
    }

    /// <summary>GPU-shaped logits: group (Tile, Tile) computes a Tile×Tile block of (selected rows, columns);
    /// shared memory holds 2·Tile² floats.</summary>
    internal static void LogitsTiledKernel(
        ArrayView<float> logits, // (S, width)
        ArrayView<float> hidden, // (N, C)
        ArrayView<int> rows,     // (S)
        ArrayView<float> weight, // (V, C)
        ArrayView<int> allowed,  // (R) or empty
        int n, int c, int s, int v, int r)
    {
        int width = r > 0 ? r : v;
        int tile = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var hiddenTile = shared.SubView(0, tile * tile);         // (Tile selected rows, Tile of C)
        var weightTile = shared.SubView(tile * tile, tile * tile); // (Tile columns, Tile of C)
        int tx = Group.IdxX, ty = Group.IdxY;
        int selected = Grid.IdxY * tile + ty;
        int column = Grid.IdxX * tile + tx;
        int loadRow = selected < s ? rows[selected] : -1;                      // hidden row loaded by this thread
        int loadColumn = Grid.IdxX * tile + ty;                                 // column whose W row this thread loads
        int loadVocabularyRow = loadColumn < width ? VocabularyRow(allowed, r, loadColumn) : -1;
        bool rowValid = loadRow >= 0 && loadRow < n;
        bool vocabularyValid = loadVocabularyRow >= 0 && loadVocabularyRow < v;
        float acc = 0;
        for (int c0 = 0; c0 < c; c0 += tile)
        {
            int channel = c0 + tx;
            hiddenTile[ty * tile + tx] = selected < s && channel < c ? (rowValid ? hidden[(long)loadRow * c + channel] : float.NaN) : 0f;
            weightTile[ty * tile + tx] = loadColumn < width && channel < c ? (vocabularyValid ? weight[(long)loadVocabularyRow * c + channel] : float.NaN) : 0f;
            Group.Barrier();
            for (int i = 0; i < tile; i++)
                acc += hiddenTile[ty * tile + i] * weightTile[tx * tile + i];
            Group.Barrier();
        }
        if (selected < s && column < width)
            logits[(long)selected * width + column] = acc;
    }

    /// <summary>GPU-shaped softmax and loss: one group per selected row; shared memory holds Group.DimX floats.</summary>
    internal static void LossGroupKernel(
        ArrayView<float> losses,  // (S)
        ArrayView<float> dLogits, // (S, width): logits in, dLogits out
        ArrayView<int> targets,   // (S)
        ArrayView<int> allowed,   // (R) or empty
        int s, int v, int r)
    {
        int selected = Grid.IdxX;
        int thread = Group.IdxX, threads = Group.DimX;
        var scratch = SharedMemory.GetDynamic<float>();
        int width = r > 0 ? r : v;
        long offset = (long)selected * width;
        int target = targets[selected];
        if (target < 0) // uniform across the group
        {
            if (thread == 0)
                losses[selected] = 0;
            for (int j = thread; j < width; j += threads)
                dLogits[offset + j] = 0;
            return;
        }
        float partialCount = 0;
        for (int i = thread; i < s; i += threads)
            partialCount += targets[i] >= 0 ? 1f : 0f;
        float count = GroupReduce.Sum(scratch, partialCount);
        float partialMax = float.NegativeInfinity;
        for (int j = thread; j < width; j += threads)
            partialMax = Math.Max(partialMax, dLogits[offset + j]);
        float max = GroupReduce.Max(scratch, partialMax);
        float partialSum = 0;
        for (int j = thread; j < width; j += threads)
            partialSum += XMath.Exp(dLogits[offset + j] - max);
        float logSumExp = max + XMath.Log(GroupReduce.Sum(scratch, partialSum));
        int targetColumn = TargetColumn(allowed, v, r, target);
        if (thread == 0)
            losses[selected] = targetColumn >= 0 ? logSumExp - dLogits[offset + targetColumn] : float.NaN;
        Group.Barrier(); // thread 0 read the target logit before anyone overwrites it
        float inverseCount = targetColumn >= 0 ? 1f / count : float.NaN;
        for (int j = thread; j < width; j += threads)
            dLogits[offset + j] = (XMath.Exp(dLogits[offset + j] - logSumExp) - (j == targetColumn ? 1f : 0f)) * inverseCount;
    }

    /// <summary>GPU-shaped backward: group (Tile, Tile) computes a Tile×Tile block of (selected rows, channels) of
    /// dLogits·W_allowed and scatters it to the selected rows; shared memory holds 2·Tile² floats.</summary>
    internal static void BackwardTiledKernel(
        ArrayView<float> dHidden, // (N, C)
        ArrayView<float> dLogits, // (S, width)
        ArrayView<float> weight,  // (V, C)
        ArrayView<int> rows,      // (S)
        ArrayView<int> allowed,   // (R) or empty
        int n, int c, int s, int v, int r)
    {
        int width = r > 0 ? r : v;
        int tile = Group.DimX;
        var shared = SharedMemory.GetDynamic<float>();
        var dLogitsTile = shared.SubView(0, tile * tile);        // (Tile selected rows, Tile columns)
        var weightTile = shared.SubView(tile * tile, tile * tile); // (Tile columns, Tile channels)
        int tx = Group.IdxX, ty = Group.IdxY;
        int selected = Grid.IdxY * tile + ty;
        int channel = Grid.IdxX * tile + tx;
        float acc = 0;
        for (int j0 = 0; j0 < width; j0 += tile)
        {
            int dLogitsColumn = j0 + tx, weightColumn = j0 + ty;
            dLogitsTile[ty * tile + tx] = selected < s && dLogitsColumn < width ? dLogits[(long)selected * width + dLogitsColumn] : 0f;
            float w = 0;
            if (weightColumn < width && channel < c)
            {
                int vocabularyRow = VocabularyRow(allowed, r, weightColumn);
                w = vocabularyRow >= 0 && vocabularyRow < v ? weight[(long)vocabularyRow * c + channel] : float.NaN;
            }
            weightTile[ty * tile + tx] = w;
            Group.Barrier();
            for (int i = 0; i < tile; i++)
                acc += dLogitsTile[ty * tile + i] * weightTile[i * tile + tx];
            Group.Barrier();
        }
        if (selected < s && channel < c)
        {
            int row = rows[selected];
            if (row >= 0 && row < n)
                dHidden[(long)row * c + channel] = acc;
        }
    }

    /// <summary>Adds a classifier head's bias (width) to every selected row of logits, a <see cref="ThreadRun"/> of
    /// elements per thread (both shapes: S·width is tiny next to the products around it).</summary>
    internal static void AddBiasKernel(
        ArrayView<float> logits, // (S, width)
        ArrayView<float> bias,   // (width)
        int s, int width, int perThread)
    {
        var run = ThreadRun.Of((long)s * width, perThread);
        for (long index = run.Start; index < run.End; index++)
            logits[index] += bias[index % width];
    }

    /// <summary>A classifier head's weight and bias gradients, ADDED into dWeight and dBias: one item per (class, channel)
    /// of dW, then one per class of db, each summing over the S selected rows in order (deterministic). Both shapes use
    /// it: R·(C + 1) threads over a handful of rows is far below the cost of the products around it.</summary>
    internal static void HeadGradientKernel(
        ArrayView<float> dWeight, // (R, C)
        ArrayView<float> dBias,   // (R) or empty
        ArrayView<float> dLogits, // (S, R)
        ArrayView<float> hidden,  // (N, C)
        ArrayView<int> rows,      // (S)
        int n, int c, int s, int r, int perThread)
    {
        int weights = r * c;
        var run = ThreadRun.Of(weights + r, perThread);
        for (int index = (int)run.Start; index < run.End; index++)
            HeadGradientElement(dWeight, dBias, dLogits, hidden, rows, n, c, s, r, index);
    }

    /// <summary>One element of <see cref="HeadGradientKernel"/>: dWeight[index] for index &lt; R·C, else dBias[index − R·C].</summary>
    static void HeadGradientElement(ArrayView<float> dWeight, ArrayView<float> dBias, ArrayView<float> dLogits, ArrayView<float> hidden,
        ArrayView<int> rows, int n, int c, int s, int r, int index)
    {
        int weights = r * c;
        if (index < weights)
        {
            int column = index / c, channel = index % c;
            float sum = 0;
            for (int i = 0; i < s; i++)
            {
                int row = rows[i];
                float h = row >= 0 && row < n ? hidden[(long)row * c + channel] : float.NaN;
                sum += dLogits[(long)i * r + column] * h;
            }
            dWeight[index] += sum;
        }
        else if (dBias.Length > 0)
        {
            int column = index - weights;
            float sum = 0;
            for (int i = 0; i < s; i++)
                sum += dLogits[(long)i * r + column];
            dBias[column] += sum;
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    // The products: micro-tile kernels on the CPU shape, shared-memory tiles on the GPU shape (the other stays null).
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int, int>? logitsMicroTile;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>? logitsTiled;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int> loss;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> mean;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int, int>? backwardMicroTile;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int>? backwardTiled;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int, int> addBias;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int> headGradient;

    internal CrossEntropy(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        if (cpu)
        {
            logitsMicroTile = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int, int>(
                LogitsMicroTileKernel);
            backwardMicroTile = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int, int>(
                BackwardMicroTileKernel);
        }
        else
        {
            logitsTiled = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>(
                LogitsTiledKernel);
            backwardTiled = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int>(
                BackwardTiledKernel);
        }
        loss = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int>(
            cpu ? LossRowKernel : LossGroupKernel);
        mean = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int>(MeanKernel);
        addBias = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int, int>(AddBiasKernel);
        headGradient = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>(HeadGradientKernel);
    }

    /// <summary>Logits at the selected rows only, for inference.</summary>
    /// <param name="logits">(S, V), or (S, R) when restricted; overwritten.</param>
    /// <param name="hidden">Final-normed activations (N, C).</param>
    /// <param name="rows">Selected hidden rows (S).</param>
    /// <param name="weight">Head weight (V, C).</param>
    /// <param name="allowed">Allowed vocabulary rows (R), or an empty view for the whole vocabulary.</param>
    /// <param name="n">Hidden rows N (B·T).</param>
    /// <param name="c">Channels C.</param>
    /// <param name="s">Selected rows S.</param>
    /// <param name="v">Vocabulary rows V of the weight.</param>
    /// <param name="r">Allowed rows R; 0 for the whole vocabulary.</param>
    /// <param name="bias">A classifier head's bias (V or R columns) added to every row, or an empty view for none.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Logits(ArrayView<float> logits, ArrayView<float> hidden, ArrayView<int> rows, ArrayView<float> weight, ArrayView<int> allowed,
        int n, int c, int s, int v, int r, ArrayView<float> bias = default)
    {
        const string op = "CrossEntropy.Logits";
        context.Enter(op);
        CheckDimensions(op, n, c, s, v, r);
        Check.Length(op, "logits", logits, (long)s * Width(v, r), r > 0 ? "S*R" : "S*V");
        CheckInputs(op, hidden, rows, weight, allowed, n, c, s, v, r);
        CheckBias(op, bias, v, r);
        LaunchLogits(logits, hidden, rows, weight, allowed, n, c, s, v, r, bias);
    }

    /// <summary>Per-row losses and their mean; leaves dLogits in the scratch for <see cref="Backward"/>.</summary>
    /// <param name="losses">Loss per selected row (S), overwritten; 0 where the target is −1.</param>
    /// <param name="meanLoss">(1) mean over the rows whose target is not −1 (0 if none), overwritten.</param>
    /// <param name="dLogits">Scratch (S, V) or (S, R), overwritten with (softmax − one-hot) / count.</param>
    /// <param name="hidden">Final-normed activations (N, C).</param>
    /// <param name="rows">Selected hidden rows (S), distinct.</param>
    /// <param name="targets">Target vocabulary id per selected row (S), −1 to ignore the row.</param>
    /// <param name="weight">Head weight (V, C).</param>
    /// <param name="allowed">Allowed vocabulary rows (R), or an empty view for the whole vocabulary.</param>
    /// <param name="n">Hidden rows N (B·T).</param>
    /// <param name="c">Channels C.</param>
    /// <param name="s">Selected rows S.</param>
    /// <param name="v">Vocabulary rows V of the weight.</param>
    /// <param name="r">Allowed rows R; 0 for the whole vocabulary.</param>
    /// <param name="bias">A classifier head's bias (V or R columns) added to every row, or an empty view for none.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> losses, ArrayView<float> meanLoss, ArrayView<float> dLogits, ArrayView<float> hidden,
        ArrayView<int> rows, ArrayView<int> targets, ArrayView<float> weight, ArrayView<int> allowed, int n, int c, int s, int v, int r,
        ArrayView<float> bias = default)
    {
        const string op = "CrossEntropy.Forward";
        context.Enter(op);
        CheckDimensions(op, n, c, s, v, r);
        Check.Length(op, "losses", losses, s, "S");
        Check.Length(op, "meanLoss", meanLoss, 1, "1");
        Check.Length(op, "dLogits", dLogits, (long)s * Width(v, r), r > 0 ? "S*R" : "S*V");
        CheckInputs(op, hidden, rows, weight, allowed, n, c, s, v, r);
        Check.Length(op, "targets", targets, s, "S");
        CheckBias(op, bias, v, r);
        LaunchLogits(dLogits, hidden, rows, weight, allowed, n, c, s, v, r, bias);
        var rowConfig = context.Shape == KernelShape.Cpu
            ? new KernelConfig(s, 1)
            : new KernelConfig(s, context.GroupSize, SharedMemoryConfig.RequestDynamic<float>(context.GroupSize));
        loss(rowConfig, losses, dLogits, targets, allowed, s, v, r);
        mean(new KernelConfig(1, 1), meanLoss, losses, targets, s);
    }

    /// <summary>dHidden = dLogits · W_allowed on the selected rows, zero elsewhere.</summary>
    /// <param name="dHidden">Gradient of the final-normed activations (N, C), overwritten.</param>
    /// <param name="dLogits">(S, V) or (S, R) as left by <see cref="Forward"/>.</param>
    /// <param name="weight">Head weight (V, C).</param>
    /// <param name="rows">Selected hidden rows (S), distinct.</param>
    /// <param name="allowed">Allowed vocabulary rows (R), or an empty view for the whole vocabulary.</param>
    /// <param name="n">Hidden rows N (B·T).</param>
    /// <param name="c">Channels C.</param>
    /// <param name="s">Selected rows S.</param>
    /// <param name="v">Vocabulary rows V of the weight.</param>
    /// <param name="r">Allowed rows R; 0 for the whole vocabulary.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dHidden, ArrayView<float> dLogits, ArrayView<float> weight, ArrayView<int> rows, ArrayView<int> allowed,
        int n, int c, int s, int v, int r)
    {
        const string op = "CrossEntropy.Backward";
        context.Enter(op);
        CheckDimensions(op, n, c, s, v, r);
        Check.Length(op, "dHidden", dHidden, (long)n * c, "N*C");
        Check.Length(op, "dLogits", dLogits, (long)s * Width(v, r), r > 0 ? "S*R" : "S*V");
        Check.Length(op, "weight", weight, (long)v * c, "V*C");
        Check.Length(op, "rows", rows, s, "S");
        Check.Length(op, "allowed", allowed, r, "R");
        dHidden.MemSetToZero(context.Accelerator.DefaultStream);
        if (backwardMicroTile is not null)
        {
            backwardMicroTile(context.RunConfig(MicroTileBlocks(s, c), out int perThread), dHidden, dLogits, weight, rows, allowed, n, c, s, v, r, perThread);
        }
        else
            backwardTiled!(ProductConfig(s, c), dHidden, dLogits, weight, rows, allowed, n, c, s, v, r);
    }

    /// <summary>A classifier head's gradients from the dLogits <see cref="Forward"/> left: ADDS
    /// <c>dWeight[j] += Σ_s dLogits[s, j] · hidden[rows[s]]</c> and <c>dBias[j] += Σ_s dLogits[s, j]</c>.</summary>
    /// <param name="dWeight">(R, C) gradient of the head's weight, accumulated into.</param>
    /// <param name="dBias">(R) gradient of its bias, accumulated into; an empty view for a head without one.</param>
    /// <param name="dLogits">(S, R) as left by <see cref="Forward"/> with the head as the weight (V = R, no allowed subset).</param>
    /// <param name="hidden">Final-normed activations (N, C).</param>
    /// <param name="rows">Selected hidden rows (S).</param>
    /// <param name="n">Hidden rows N.</param>
    /// <param name="c">Channels C.</param>
    /// <param name="s">Selected rows S.</param>
    /// <param name="r">Classes R (the head's rows).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void HeadGradient(ArrayView<float> dWeight, ArrayView<float> dBias, ArrayView<float> dLogits, ArrayView<float> hidden, ArrayView<int> rows,
        int n, int c, int s, int r)
    {
        const string op = "CrossEntropy.HeadGradient";
        context.Enter(op);
        Check.Positive(op, ("N", n), ("C", c), ("S", s), ("R", r));
        if ((long)r * (c + 1) > int.MaxValue || (long)s * r > int.MaxValue)
            throw new KernelShapeException($"{op}: R = {r} classes by C = {c} channels exceed the launch limit.");
        Check.Length(op, "dWeight", dWeight, (long)r * c, "R*C");
        if (dBias.Length != 0) Check.Length(op, "dBias", dBias, r, "R");
        Check.Length(op, "dLogits", dLogits, (long)s * r, "S*R");
        Check.Length(op, "hidden", hidden, (long)n * c, "N*C");
        Check.Length(op, "rows", rows, s, "S");
        headGradient(context.RunConfig(r * (c + 1), out int perThread), dWeight, dBias, dLogits, hidden, rows, n, c, s, r, perThread);
    }

    /// <summary>Validates a selection on the host: rows distinct and in [0, N); targets −1 or a vocabulary id in
    /// the allowed set; allowed ids distinct and in [0, V).</summary>
    /// <param name="rows">Selected hidden rows (S).</param>
    /// <param name="targets">Target ids (S), −1 to ignore.</param>
    /// <param name="allowed">Allowed vocabulary rows (R), empty for the whole vocabulary.</param>
    /// <param name="n">Hidden rows N.</param>
    /// <param name="v">Vocabulary rows V.</param>
    /// <exception cref="ArgumentException">An entry is out of range, repeated, or a target is not allowed; the message gives its index.</exception>
    public static void CheckSelection(ReadOnlySpan<int> rows, ReadOnlySpan<int> targets, ReadOnlySpan<int> allowed, int n, int v)
    {
        if (rows.Length != targets.Length)
            throw new ArgumentException($"CrossEntropy selection: {rows.Length} rows but {targets.Length} targets.", nameof(targets));
        var allowedIds = new HashSet<int>();
        for (int j = 0; j < allowed.Length; j++)
        {
            if (allowed[j] < 0 || allowed[j] >= v)
                throw new ArgumentException($"CrossEntropy selection: allowed[{j}] = {allowed[j]} is not a vocabulary row (V = {v}).", nameof(allowed));
            if (!allowedIds.Add(allowed[j]))
                throw new ArgumentException($"CrossEntropy selection: allowed[{j}] = {allowed[j]} is repeated.", nameof(allowed));
        }
        var seenRows = new HashSet<int>();
        for (int i = 0; i < rows.Length; i++)
        {
            if (rows[i] < 0 || rows[i] >= n)
                throw new ArgumentException($"CrossEntropy selection: rows[{i}] = {rows[i]} is outside the {n} hidden rows.", nameof(rows));
            if (!seenRows.Add(rows[i]))
                throw new ArgumentException($"CrossEntropy selection: rows[{i}] = {rows[i]} is selected twice.", nameof(rows));
            int target = targets[i];
            if (target == -1)
                continue;
            if (target < 0 || target >= v)
                throw new ArgumentException($"CrossEntropy selection: targets[{i}] = {target} is not a vocabulary id (V = {v}) nor −1.", nameof(targets));
            if (allowed.Length > 0 && !allowedIds.Contains(target))
                throw new ArgumentException($"CrossEntropy selection: targets[{i}] = {target} is not among the {allowed.Length} allowed ids.", nameof(targets));
        }
    }

    static int Width(int v, int r) => r > 0 ? r : v;

    static void CheckDimensions(string op, int n, int c, int s, int v, int r)
    {
        Check.Positive(op, ("N", n), ("C", c), ("S", s), ("V", v));
        if (r < 0)
            throw new KernelShapeException($"{op}: dimension R = {r} must not be negative (0 = the whole vocabulary).");
        if ((long)s * Width(v, r) > int.MaxValue || (long)s * c > int.MaxValue)
            throw new KernelShapeException($"{op}: S = {s} selected rows times V or R = {Width(v, r)} columns exceed the launch limit.");
    }

    /// <summary>Checks the tensors every launcher reads; returns the logits' width (V or R).</summary>
    static int CheckInputs(string op, ArrayView<float> hidden, ArrayView<int> rows, ArrayView<float> weight, ArrayView<int> allowed,
        int n, int c, int s, int v, int r)
    {
        Check.Length(op, "hidden", hidden, (long)n * c, "N*C");
        Check.Length(op, "rows", rows, s, "S");
        Check.Length(op, "weight", weight, (long)v * c, "V*C");
        Check.Length(op, "allowed", allowed, r, "R");
        return Width(v, r);
    }

    // An instance method: the PTX tests take every static void method with a view argument for a kernel.
    void CheckBias(string op, ArrayView<float> bias, int v, int r)
    {
        if (bias.Length != 0) Check.Length(op, "bias", bias, Width(v, r), r > 0 ? "R" : "V");
    }

    void LaunchLogits(ArrayView<float> output, ArrayView<float> hidden, ArrayView<int> rows, ArrayView<float> weight, ArrayView<int> allowed,
        int n, int c, int s, int v, int r, ArrayView<float> bias)
    {
        if (logitsMicroTile is not null)
        {
            logitsMicroTile(context.RunConfig(MicroTileBlocks(s, Width(v, r)), out int blocksPerThread), output, hidden, rows, weight, allowed, n, c, s, v, r, blocksPerThread);
        }
        else
            logitsTiled!(ProductConfig(s, Width(v, r)), output, hidden, rows, weight, allowed, n, c, s, v, r);
        if (bias.Length > 0)
            addBias(context.RunConfig((long)s * Width(v, r), out int perThread), output, bias, s, Width(v, r), perThread);
    }

    /// <summary>4×4 blocks covering a rows × cols output.</summary>
    static long MicroTileBlocks(int rows, int cols) => (long)((rows + MicroTile - 1) / MicroTile) * ((cols + MicroTile - 1) / MicroTile);

    /// <summary>Launch shape of a GPU-shaped tiled product with an (<paramref name="outputRows"/>, <paramref name="outputColumns"/>) result.</summary>
    KernelConfig ProductConfig(int outputRows, int outputColumns)
    {
        int tile = context.Tile;
        return new KernelConfig(
            new Index2D((outputColumns + tile - 1) / tile, (outputRows + tile - 1) / tile),
            new Index2D(tile, tile),
            SharedMemoryConfig.RequestDynamic<float>(2 * tile * tile));
    }

    #endregion
}
