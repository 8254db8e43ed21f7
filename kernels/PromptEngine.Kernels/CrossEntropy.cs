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
/// <para>CPU-shaped kernels: one thread per column of logits, per selected row, or per (selected row, 4 channels). GPU-shaped:
/// Tile×Tile shared-memory tiles for both products and one group per selected row for the softmax.</para>
/// </remarks>
public sealed class CrossEntropy
{
    /// <summary>Channels per thread of the CPU-shaped backward.</summary>
    const int ChannelBlock = 4;

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

    /// <summary>CPU-shaped logits: one thread per column, over every selected row, so each weight row is read
    /// from memory once while the S hidden rows stay in cache.</summary>
    internal static void LogitsColumnKernel(
        ArrayView<float> logits, // (S, width)
        ArrayView<float> hidden, // (N, C)
        ArrayView<int> rows,     // (S)
        ArrayView<float> weight, // (V, C)
        ArrayView<int> allowed,  // (R) or empty
        int n, int c, int s, int v, int r)
    {
        int width = r > 0 ? r : v;
        int column = Grid.GlobalIndex.X;
        if (column >= width)
            return;
        int vocabularyRow = VocabularyRow(allowed, r, column);
        bool vocabularyValid = vocabularyRow >= 0 && vocabularyRow < v;
        long w0 = (long)vocabularyRow * c;
        // Four selected rows at a time: four independent accumulators per weight load.
        for (int s0 = 0; s0 < s; s0 += ChannelBlock)
        {
            int r0 = rows[s0], r1 = rows[Math.Min(s0 + 1, s - 1)], r2 = rows[Math.Min(s0 + 2, s - 1)], r3 = rows[Math.Min(s0 + 3, s - 1)];
            bool valid = vocabularyValid && r0 >= 0 && r0 < n && r1 >= 0 && r1 < n && r2 >= 0 && r2 < n && r3 >= 0 && r3 < n;
            float a0 = float.NaN, a1 = float.NaN, a2 = float.NaN, a3 = float.NaN;
            if (valid)
            {
                a0 = a1 = a2 = a3 = 0;
                long h0 = (long)r0 * c, h1 = (long)r1 * c, h2 = (long)r2 * c, h3 = (long)r3 * c;
                for (int i = 0; i < c; i++)
                {
                    float w = weight[w0 + i];
                    a0 += hidden[h0 + i] * w;
                    a1 += hidden[h1 + i] * w;
                    a2 += hidden[h2 + i] * w;
                    a3 += hidden[h3 + i] * w;
                }
            }
            logits[(long)s0 * width + column] = a0;
            if (s0 + 1 < s) logits[(long)(s0 + 1) * width + column] = a1;
            if (s0 + 2 < s) logits[(long)(s0 + 2) * width + column] = a2;
            if (s0 + 3 < s) logits[(long)(s0 + 3) * width + column] = a3;
        }
    }

    /// <summary>CPU-shaped softmax and loss: one thread per selected row; dLogits overwrites the row's logits.</summary>
    internal static void LossRowKernel(
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
        long offset = (long)selected * width;
        int target = targets[selected];
        if (target < 0)
        {
            losses[selected] = 0;
            for (int j = 0; j < width; j++)
                dLogits[offset + j] = 0;
            return;
        }
        int count = 0;
        for (int i = 0; i < s; i++)
            count += targets[i] >= 0 ? 1 : 0;
        float max = float.NegativeInfinity;
        for (int j = 0; j < width; j++)
            max = Math.Max(max, dLogits[offset + j]);
        // Compensated (Kahan) sum: a plain float sum over a 32,000-word vocabulary drifts by ~1e-5 relative,
        // which the TorchSharp oracle saw on stories15M's loss (5e-5 against float64).
        float sum = 0, compensation = 0;
        for (int j = 0; j < width; j++)
        {
            float term = XMath.Exp(dLogits[offset + j] - max) - compensation;
            float next = sum + term;
            compensation = (next - sum) - term;
            sum = next;
        }
        float logSumExp = max + XMath.Log(sum);
        int targetColumn = TargetColumn(allowed, v, r, target);
        losses[selected] = targetColumn >= 0 ? logSumExp - dLogits[offset + targetColumn] : float.NaN;
        float inverseCount = targetColumn >= 0 ? 1f / count : float.NaN;
        for (int j = 0; j < width; j++)
            dLogits[offset + j] = (XMath.Exp(dLogits[offset + j] - logSumExp) - (j == targetColumn ? 1f : 0f)) * inverseCount;
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

    /// <summary>CPU-shaped backward: one thread per (selected row, 4 consecutive channels) reducing over the
    /// columns in 4 registers; writes only the selected rows of dHidden (the launcher zeroes the rest first).</summary>
    internal static void BackwardChannelsKernel(
        ArrayView<float> dHidden, // (N, C)
        ArrayView<float> dLogits, // (S, width)
        ArrayView<float> weight,  // (V, C)
        ArrayView<int> rows,      // (S)
        ArrayView<int> allowed,   // (R) or empty
        int n, int c, int s, int v, int r)
    {
        int blocks = (c + ChannelBlock - 1) / ChannelBlock;
        int index = Grid.GlobalIndex.X;
        if (index >= s * blocks)
            return;
        int width = r > 0 ? r : v;
        int selected = index / blocks;
        int c0 = index % blocks * ChannelBlock;
        int row = rows[selected];
        if (row < 0 || row >= n)
            return;
        // Channels past the edge are clamped on load and skipped on store.
        int c1 = Math.Min(c0 + 1, c - 1), c2 = Math.Min(c0 + 2, c - 1), c3 = Math.Min(c0 + 3, c - 1);
        long offset = (long)selected * width;
        // Blocked sum: partial sums over SumBlock columns are added to the totals, so rounding grows with
        // width/SumBlock + SumBlock terms rather than with the whole vocabulary (32,000 for stories15M).
        float a0 = 0, a1 = 0, a2 = 0, a3 = 0;
        for (int j0 = 0; j0 < width; j0 += SumBlock)
        {
            float p0 = 0, p1 = 0, p2 = 0, p3 = 0;
            int end = Math.Min(j0 + SumBlock, width);
            for (int j = j0; j < end; j++)
            {
                int vocabularyRow = VocabularyRow(allowed, r, j);
                float g = dLogits[offset + j];
                if (vocabularyRow < 0 || vocabularyRow >= v)
                {
                    p0 = p1 = p2 = p3 = float.NaN;
                    continue;
                }
                long w = (long)vocabularyRow * c;
                p0 += g * weight[w + c0];
                p1 += g * weight[w + c1];
                p2 += g * weight[w + c2];
                p3 += g * weight[w + c3];
            }
            a0 += p0; a1 += p1; a2 += p2; a3 += p3;
        }
        long output = (long)row * c + c0;
        dHidden[output] = a0;
        if (c0 + 1 < c) dHidden[output + 1] = a1;
        if (c0 + 2 < c) dHidden[output + 2] = a2;
        if (c0 + 3 < c) dHidden[output + 3] = a3;
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
        float max = GroupReduceMax.Max(scratch, partialMax);
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

    /// <summary>Adds a classifier head's bias (width) to every selected row of logits; one thread per element
    /// (both shapes: S·width is tiny next to the products around it).</summary>
    internal static void AddBiasKernel(
        ArrayView<float> logits, // (S, width)
        ArrayView<float> bias,   // (width)
        int s, int width)
    {
        int index = Grid.GlobalIndex.X;
        if (index >= s * width)
            return;
        logits[index] += bias[index % width];
    }

    /// <summary>A classifier head's weight and bias gradients, ADDED into dWeight and dBias: one thread per (class, channel)
    /// of dW, then one per class of db, each summing over the S selected rows in order (deterministic). Both shapes use
    /// it: R·(C + 1) threads over a handful of rows is far below the cost of the products around it.</summary>
    internal static void HeadGradientKernel(
        ArrayView<float> dWeight, // (R, C)
        ArrayView<float> dBias,   // (R) or empty
        ArrayView<float> dLogits, // (S, R)
        ArrayView<float> hidden,  // (N, C)
        ArrayView<int> rows,      // (S)
        int n, int c, int s, int r)
    {
        int index = Grid.GlobalIndex.X;
        int weights = r * c;
        if (index >= weights + r)
            return;
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
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int> logits;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int> loss;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int> mean;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int> backward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, int, int> addBias;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int> headGradient;

    internal CrossEntropy(KernelContext context)
    {
        this.context = context;
        var accelerator = context.Accelerator;
        bool cpu = context.Shape == KernelShape.Cpu;
        logits = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, int, int, int, int, int>(
            cpu ? LogitsColumnKernel : LogitsTiledKernel);
        loss = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int>(
            cpu ? LossRowKernel : LossGroupKernel);
        mean = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int>(MeanKernel);
        backward = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int, int, int>(
            cpu ? BackwardChannelsKernel : BackwardTiledKernel);
        addBias = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, int, int>(AddBiasKernel);
        headGradient = accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, int>(HeadGradientKernel);
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
        var config = context.Shape == KernelShape.Cpu
            ? new KernelConfig(s * ((c + ChannelBlock - 1) / ChannelBlock), 1)
            : ProductConfig(s, c);
        backward(config, dHidden, dLogits, weight, rows, allowed, n, c, s, v, r);
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
        headGradient(ElementConfig(r * (c + 1)), dWeight, dBias, dLogits, hidden, rows, n, c, s, r);
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
        var config = context.Shape == KernelShape.Cpu ? new KernelConfig(Width(v, r), 1) : ProductConfig(s, Width(v, r));
        logits(config, output, hidden, rows, weight, allowed, n, c, s, v, r);
        if (bias.Length > 0) addBias(ElementConfig(s * Width(v, r)), output, bias, s, Width(v, r));
    }

    /// <summary>One thread per element: groups of one on the CPU (a thread per group is the CPU accelerator's shape), of
    /// <see cref="KernelContext.GroupSize"/> on a GPU.</summary>
    KernelConfig ElementConfig(int count) => context.Shape == KernelShape.Cpu
        ? new KernelConfig(count, 1)
        : new KernelConfig((count + context.GroupSize - 1) / context.GroupSize, context.GroupSize);

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
