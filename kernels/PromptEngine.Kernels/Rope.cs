using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Rotary position embedding, Hugging Face "rotate_half" convention: channel i of a head is paired with
/// channel i + hs/2 (not with its neighbour, as in Meta's original). For i &lt; hs/2, with
/// <c>f = θ^(−2i/hs)</c> and <c>a = pos·f</c>: <c>out[i] = x[i]·cos a − x[i+hs/2]·sin a</c>,
/// <c>out[i+hs/2] = x[i+hs/2]·cos a + x[i]·sin a</c>. The backward is the inverse rotation (angle −a).
/// Tensors (B, T, H, hs), positions (B, T) int, so padding and prompt placements choose their own ids.
/// Call it once for q and once for k (different H under GQA).
/// <para>Fused with the q/k/v split (<see cref="ForwardFromQkv"/>, <see cref="BackwardToQkv"/>): the engine computes q, k
/// and v as one Linear over the concatenated weight, whose output row is [q (H·hs) | k (KV·hs) | v (KV·hs)]; one launch
/// then rotates q and k and copies v out of that row into the separate (B, T, H, hs) tensors attention reads, and the
/// backward rotates dq and dk back and copies dv into one (B, T, (H + 2·KV)·hs) gradient for one data-gradient Linear.
/// With rotation off (GPT-2) it is the plain split and concatenation.</para>
/// </summary>
/// <remarks>
/// The frequency and the angle are computed in float32 exactly as HF does (inv_freq = 1/θ^(2i/hs), then
/// pos·inv_freq), so results match PyTorch's rounding rather than an exact double angle.
/// Each thread reads both channels of a pair before writing them, so the output may alias the input (in place).
/// GPU-shaped: one thread per rotated pair. CPU-shaped: runs of rows per thread, each pair's angle computed once per
/// row for all heads (a sixth of the Pow/Cos/Sin work for stories15M's six heads).
/// </remarks>
public sealed class Rope
{
    #region Kernels

    /// <summary>Rotates each pair by +angle (forward) or −angle (backward, <paramref name="direction"/> = −1).</summary>
    internal static void RotateKernel(
        ArrayView<float> output,    // (B, T, H, hs)
        ArrayView<float> input,     // (B, T, H, hs)
        ArrayView<int> positions,   // (B, T)
        int rows, int heads, int headSize, float theta, float direction, int chunk)
    {
        int half = headSize / 2;
        long pairs = (long)rows * heads * half;
        var run = ThreadRun.Of(pairs, chunk);
        for (long pair = run.Start; pair < run.End; pair++)
        {
            long rowHead = pair / half;
            int i = (int)(pair - rowHead * half);
            int row = (int)(rowHead / heads);
            float inverseFrequency = 1f / XMath.Pow(theta, (2 * i) / (float)headSize);
            float angle = positions[row] * inverseFrequency;
            float cos = XMath.Cos(angle);
            float sin = direction * XMath.Sin(angle);
            long first = rowHead * headSize + i;
            float x1 = input[first];
            float x2 = input[first + half];
            output[first] = x1 * cos - x2 * sin;
            output[first + half] = x2 * cos + x1 * sin;
        }
    }

    /// <summary>CPU-shaped: each thread rotates a run of <paramref name="chunk"/> rows (b, t), computing each channel
    /// pair's angle once per row and applying it to every head, so the transcendental work is shared by the H heads.</summary>
    internal static unsafe void RotateRowsKernel(
        ArrayView<float> output,    // (B, T, H, hs)
        ArrayView<float> input,     // (B, T, H, hs)
        ArrayView<int> positions,   // (B, T)
        int rows, int heads, int headSize, float theta, float direction, int chunk)
    {
        var run = ThreadRun.Of(rows, chunk);
        int half = headSize / 2;
        long rowLength = (long)heads * headSize;
        fixed (float* outputBase = &output[0])
        fixed (float* inputBase = &input[0])
        fixed (int* positionBase = &positions[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
            {
                float position = positionBase[row];
                float* x = inputBase + row * rowLength, y = outputBase + row * rowLength;
                for (int i = 0; i < half; i++)
                {
                    float inverseFrequency = 1f / XMath.Pow(theta, (2 * i) / (float)headSize);
                    float angle = position * inverseFrequency;
                    float cos = XMath.Cos(angle);
                    float sin = direction * XMath.Sin(angle);
                    for (int head = 0; head < heads; head++)
                    {
                        long at = (long)head * headSize + i;
                        float x1 = x[at], x2 = x[at + half];
                        y[at] = x1 * cos - x2 * sin;
                        y[at + half] = x2 * cos + x1 * sin;
                    }
                }
            }
        }
    }

    /// <summary>The q/k/v split's tensors, one kernel argument for both shapes' kernels (public because ILGPU's runtime
    /// assembly must see every kernel parameter type).</summary>
    /// <param name="Qkv">The fused rows (B, T, (H + 2·KV)·hs).</param>
    /// <param name="Q">(B, T, H, hs).</param>
    /// <param name="K">(B, T, KV, hs).</param>
    /// <param name="V">(B, T, KV, hs).</param>
    /// <param name="Positions">(B, T), or empty when nothing rotates.</param>
    public readonly record struct QkvTensors(ArrayView<float> Qkv, ArrayView<float> Q, ArrayView<float> K, ArrayView<float> V, ArrayView<int> Positions);

    /// <summary>CPU-shaped q/k/v split or merge: each thread takes a run of <paramref name="chunk"/> rows. With
    /// <paramref name="merge"/> = 0 it reads the fused row and writes q, k, v (rotating q and k by +angle when
    /// <paramref name="rotate"/> is 1); with 1 it reads dq, dk, dv and writes the fused gradient row (rotating by −angle).
    /// Each pair's angle is computed once per row for all H + KV heads, with <see cref="RotateRowsKernel"/>'s arithmetic.</summary>
    internal static unsafe void QkvRowsKernel(QkvTensors tensors,
        int rows, int heads, int kvHeads, int headSize, float theta, int rotate, int merge, int chunk)
    {
        ArrayView<float> qkv = tensors.Qkv, q = tensors.Q, k = tensors.K, v = tensors.V;
        ArrayView<int> positions = tensors.Positions;
        var run = ThreadRun.Of(rows, chunk);
        int half = headSize / 2;
        long qWidth = (long)heads * headSize, kvWidth = (long)kvHeads * headSize, width = qWidth + 2 * kvWidth;
        fixed (float* qkvBase = &qkv[0])
        fixed (float* qBase = &q[0])
        fixed (float* kBase = &k[0])
        fixed (float* vBase = &v[0])
        {
            for (int row = (int)run.Start; row < run.End; row++)
            {
                float* fused = qkvBase + row * width, qRow = qBase + row * qWidth, kRow = kBase + row * kvWidth, vRow = vBase + row * kvWidth;
                // Merge reads the separate tensors and writes the fused row; split the other way round.
                float* qFrom = merge != 0 ? qRow : fused, qTo = merge != 0 ? fused : qRow;
                float* kFrom = merge != 0 ? kRow : fused + qWidth, kTo = merge != 0 ? fused + qWidth : kRow;
                float* vFrom = merge != 0 ? vRow : fused + qWidth + kvWidth, vTo = merge != 0 ? fused + qWidth + kvWidth : vRow;
                if (rotate != 0)
                {
                    float position = positions[row]; // once per row: the view is empty when nothing rotates
                    for (int i = 0; i < half; i++)
                    {
                        float inverseFrequency = 1f / XMath.Pow(theta, (2 * i) / (float)headSize);
                        float angle = position * inverseFrequency;
                        float cos = XMath.Cos(angle);
                        float sin = (merge != 0 ? -1f : 1f) * XMath.Sin(angle);
                        for (int head = 0; head < heads; head++)
                            RotatePair(qFrom, qTo, (long)head * headSize + i, half, cos, sin);
                        for (int head = 0; head < kvHeads; head++)
                            RotatePair(kFrom, kTo, (long)head * headSize + i, half, cos, sin);
                    }
                }
                else
                {
                    for (long i = 0; i < qWidth; i++) qTo[i] = qFrom[i];
                    for (long i = 0; i < kvWidth; i++) kTo[i] = kFrom[i];
                }
                for (long i = 0; i < kvWidth; i++) vTo[i] = vFrom[i];
            }
        }
    }

    /// <summary>Channels at and at + half of one head, rotated by the angle whose cosine and sine are given.</summary>
    static unsafe void RotatePair(float* from, float* to, long at, int half, float cos, float sin)
    {
        float x1 = from[at], x2 = from[at + half];
        to[at] = x1 * cos - x2 * sin;
        to[at + half] = x2 * cos + x1 * sin;
    }

    /// <summary>GPU-shaped q/k/v split or merge (see <see cref="QkvRowsKernel"/>): one thread per work item of a row, the
    /// row's q pairs (H·hs/2), then its k pairs (KV·hs/2), then its v elements (KV·hs).</summary>
    internal static void QkvKernel(QkvTensors tensors,
        int rows, int heads, int kvHeads, int headSize, float theta, int rotate, int merge, int chunk)
    {
        ArrayView<float> qkv = tensors.Qkv, q = tensors.Q, k = tensors.K, v = tensors.V;
        ArrayView<int> positions = tensors.Positions;
        int half = headSize / 2;
        long qPairs = (long)heads * half, kPairs = (long)kvHeads * half;
        long qWidth = (long)heads * headSize, kvWidth = (long)kvHeads * headSize, width = qWidth + 2 * kvWidth;
        long perRow = qPairs + kPairs + kvWidth;
        long items = rows * perRow;
        var run = ThreadRun.Of(items, chunk);
        for (long item = run.Start; item < run.End; item++)
        {
            long row = item / perRow, at = item - row * perRow;
            if (at >= qPairs + kPairs)
            {
                long channel = at - qPairs - kPairs, fusedValue = row * width + qWidth + kvWidth + channel, value = row * kvWidth + channel;
                if (merge != 0) qkv[fusedValue] = v[value];
                else v[value] = qkv[fusedValue];
                continue;
            }
            bool isQuery = at < qPairs;
            long pair = isQuery ? at : at - qPairs;
            long head = pair / half;
            int i = (int)(pair - head * half);
            long fusedAt = row * width + (isQuery ? 0 : qWidth) + head * headSize + i;
            long separateAt = row * (isQuery ? qWidth : kvWidth) + head * headSize + i;
            var separate = isQuery ? q : k;
            float x1 = merge != 0 ? separate[separateAt] : qkv[fusedAt];
            float x2 = merge != 0 ? separate[separateAt + half] : qkv[fusedAt + half];
            float y1 = x1, y2 = x2;
            if (rotate != 0)
            {
                float inverseFrequency = 1f / XMath.Pow(theta, (2 * i) / (float)headSize);
                float angle = positions[(int)row] * inverseFrequency;
                float cos = XMath.Cos(angle);
                float sin = (merge != 0 ? -1f : 1f) * XMath.Sin(angle);
                y1 = x1 * cos - x2 * sin;
                y2 = x2 * cos + x1 * sin;
            }
            if (merge != 0)
            {
                qkv[fusedAt] = y1;
                qkv[fusedAt + half] = y2;
            }
            else
            {
                separate[separateAt] = y1;
                separate[separateAt + half] = y2;
            }
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float, float, int> rotate;
    readonly Action<KernelConfig, QkvTensors, int, int, int, int, float, int, int, int> qkvSplit;

    internal Rope(KernelContext context)
    {
        this.context = context;
        rotate = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float, float, int>(
            context.Shape == KernelShape.Cpu ? RotateRowsKernel : RotateKernel);
        qkvSplit = context.Accelerator.LoadStreamKernel<QkvTensors, int, int, int, int, float, int, int, int>(context.Shape == KernelShape.Cpu ? QkvRowsKernel : QkvKernel);
    }

    /// <summary>Splits the fused projection output into q, k and v, rotating q and k for each position's id when
    /// <paramref name="rotate"/> (Llama; GPT-2 has no rotation and gets the plain split).</summary>
    /// <param name="q">(B, T, H, hs), overwritten.</param>
    /// <param name="k">(B, T, KV, hs), overwritten.</param>
    /// <param name="v">(B, T, KV, hs), overwritten.</param>
    /// <param name="qkv">The fused q/k/v projection (B, T, (H + 2·KV)·hs): each row q, then k, then v.</param>
    /// <param name="positions">Position id per token (B, T); read only when rotating.</param>
    /// <param name="b">Batch.</param>
    /// <param name="t">Sequence length.</param>
    /// <param name="heads">Query heads H.</param>
    /// <param name="kvHeads">Key/value heads KV.</param>
    /// <param name="headSize">hs, even.</param>
    /// <param name="theta">RoPE base θ.</param>
    /// <param name="rotate">Apply RoPE to q and k.</param>
    /// <exception cref="KernelShapeException">A length or dimension does not match, or hs is odd.</exception>
    public void ForwardFromQkv(ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<float> qkv, ArrayView<int> positions,
        int b, int t, int heads, int kvHeads, int headSize, float theta, bool rotate) =>
        LaunchQkv("Rope.ForwardFromQkv", qkv, q, k, v, positions, b, t, heads, kvHeads, headSize, theta, rotate, merge: false);

    /// <summary>dQkv = [rotate⁻¹(dq) | rotate⁻¹(dk) | dv] per row: the gradient of <see cref="ForwardFromQkv"/>, for one
    /// data-gradient Linear over the fused weight.</summary>
    /// <param name="dQkv">(B, T, (H + 2·KV)·hs), overwritten.</param>
    /// <param name="dq">(B, T, H, hs).</param>
    /// <param name="dk">(B, T, KV, hs).</param>
    /// <param name="dv">(B, T, KV, hs).</param>
    /// <param name="positions">Position id per token (B, T); read only when rotating.</param>
    /// <param name="b">Batch.</param>
    /// <param name="t">Sequence length.</param>
    /// <param name="heads">Query heads H.</param>
    /// <param name="kvHeads">Key/value heads KV.</param>
    /// <param name="headSize">hs, even.</param>
    /// <param name="theta">RoPE base θ.</param>
    /// <param name="rotate">Rotate dq and dk back (the forward applied RoPE).</param>
    /// <exception cref="KernelShapeException">A length or dimension does not match, or hs is odd.</exception>
    public void BackwardToQkv(ArrayView<float> dQkv, ArrayView<float> dq, ArrayView<float> dk, ArrayView<float> dv, ArrayView<int> positions,
        int b, int t, int heads, int kvHeads, int headSize, float theta, bool rotate) =>
        LaunchQkv("Rope.BackwardToQkv", dQkv, dq, dk, dv, positions, b, t, heads, kvHeads, headSize, theta, rotate, merge: true);

    void LaunchQkv(string op, ArrayView<float> qkv, ArrayView<float> q, ArrayView<float> k, ArrayView<float> v, ArrayView<int> positions,
        int b, int t, int heads, int kvHeads, int headSize, float theta, bool rotate, bool merge)
    {
        context.Enter(op);
        Check.Positive(op, ("B", b), ("T", t), ("H", heads), ("KV", kvHeads), ("hs", headSize));
        if (headSize % 2 != 0)
            throw new KernelShapeException($"{op}: head size hs = {headSize} must be even.");
        if (rotate && !(theta > 1f))
            throw new KernelShapeException($"{op}: theta = {theta} must be greater than 1.");
        long rows = (long)b * t;
        string d = merge ? "d" : "";
        Check.Length(op, d + "qkv", qkv, rows * (heads + 2L * kvHeads) * headSize, "B*T*(H+2*KV)*hs");
        Check.Length(op, d + "q", q, rows * heads * headSize, "B*T*H*hs");
        Check.Length(op, d + "k", k, rows * kvHeads * headSize, "B*T*KV*hs");
        Check.Length(op, d + "v", v, rows * kvHeads * headSize, "B*T*KV*hs");
        if (rotate)
            Check.Length(op, "positions", positions, rows, "B*T");
        var positionView = rotate ? positions : default; // read only when rotating
        if (context.Shape == KernelShape.Cpu)
        {
            qkvSplit(context.RunConfig(rows, out int rowChunk), new QkvTensors(qkv, q, k, v, positionView), b * t, heads, kvHeads, headSize, theta,
                rotate ? 1 : 0, merge ? 1 : 0, rowChunk);
            return;
        }
        long items = rows * ((heads + kvHeads) * (long)(headSize / 2) + (long)kvHeads * headSize);
        qkvSplit(context.RunConfig(items, out int chunk), new QkvTensors(qkv, q, k, v, positionView), b * t, heads, kvHeads, headSize, theta,
            rotate ? 1 : 0, merge ? 1 : 0, chunk);
    }

    /// <summary>Applies the rotation for each position's id.</summary>
    /// <param name="output">(B, T, H, hs), overwritten; may be the same view as <paramref name="input"/>.</param>
    /// <param name="input">q or k (B, T, H, hs).</param>
    /// <param name="positions">Position id per token (B, T).</param>
    /// <param name="b">Batch.</param>
    /// <param name="t">Sequence length.</param>
    /// <param name="h">Heads of this tensor.</param>
    /// <param name="headSize">hs, even.</param>
    /// <param name="theta">RoPE base θ (10000 for LLaMA 2).</param>
    /// <exception cref="KernelShapeException">A length or dimension does not match, or hs is odd.</exception>
    public void Forward(ArrayView<float> output, ArrayView<float> input, ArrayView<int> positions, int b, int t, int h, int headSize, float theta) =>
        Launch("Rope.Forward", "out", "inp", output, input, positions, b, t, h, headSize, theta, 1f);

    /// <summary>dX = the inverse rotation of dOut.</summary>
    /// <param name="dX">(B, T, H, hs), overwritten; may be the same view as <paramref name="dOut"/>.</param>
    /// <param name="dOut">(B, T, H, hs).</param>
    /// <param name="positions">Position id per token (B, T).</param>
    /// <param name="b">Batch.</param>
    /// <param name="t">Sequence length.</param>
    /// <param name="h">Heads of this tensor.</param>
    /// <param name="headSize">hs, even.</param>
    /// <param name="theta">RoPE base θ.</param>
    /// <exception cref="KernelShapeException">A length or dimension does not match, or hs is odd.</exception>
    public void Backward(ArrayView<float> dX, ArrayView<float> dOut, ArrayView<int> positions, int b, int t, int h, int headSize, float theta) =>
        Launch("Rope.Backward", "dX", "dOut", dX, dOut, positions, b, t, h, headSize, theta, -1f);

    void Launch(string op, string outputName, string inputName, ArrayView<float> output, ArrayView<float> input, ArrayView<int> positions,
        int b, int t, int h, int headSize, float theta, float direction)
    {
        context.Enter(op);
        Check.Positive(op, ("B", b), ("T", t), ("H", h), ("hs", headSize));
        if (headSize % 2 != 0)
            throw new KernelShapeException($"{op}: head size hs = {headSize} must be even.");
        if (!(theta > 1f))
            throw new KernelShapeException($"{op}: theta = {theta} must be greater than 1.");
        long count = (long)b * t * h * headSize;
        Check.Length(op, outputName, output, count, "B*T*H*hs");
        Check.Length(op, inputName, input, count, "B*T*H*hs");
        Check.Length(op, "positions", positions, (long)b * t, "B*T");
        if (context.Shape == KernelShape.Cpu)
        {
            rotate(context.RunConfig((long)b * t, out int rowChunk), output, input, positions, b * t, h, headSize, theta, direction, rowChunk);
            return;
        }
        long pairs = count / 2;
        rotate(context.RunConfig(pairs, out int chunk), output, input, positions, b * t, h, headSize, theta, direction, chunk);
    }

    #endregion
}
