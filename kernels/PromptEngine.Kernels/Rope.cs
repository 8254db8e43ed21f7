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
        long start = (long)Grid.GlobalIndex.X * chunk;
        long end = Math.Min(start + chunk, pairs);
        for (long pair = start; pair < end; pair++)
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
        int first = Grid.GlobalIndex.X * chunk;
        if (first >= rows)
            return;
        int last = Math.Min(first + chunk, rows);
        int half = headSize / 2;
        long rowLength = (long)heads * headSize;
        fixed (float* outputBase = &output[0])
        fixed (float* inputBase = &input[0])
        fixed (int* positionBase = &positions[0])
        {
            for (int row = first; row < last; row++)
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

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float, float, int> rotate;

    internal Rope(KernelContext context)
    {
        this.context = context;
        rotate = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float, float, int>(
            context.Shape == KernelShape.Cpu ? RotateRowsKernel : RotateKernel);
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
            int rowChunk = context.ElementChunk((long)b * t);
            rotate(context.FlatConfig(((long)b * t + rowChunk - 1) / rowChunk), output, input, positions, b * t, h, headSize, theta, direction, rowChunk);
            return;
        }
        long pairs = count / 2;
        rotate(context.ElementConfig(pairs, out int chunk), output, input, positions, b * t, h, headSize, theta, direction, chunk);
    }

    #endregion
}
