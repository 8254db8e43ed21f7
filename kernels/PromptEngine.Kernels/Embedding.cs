using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// Token embedding with the soft prompt concatenated inside the kernel. A per-position source map
/// (B·T) says where each output row comes from: a value s ≥ 0 is row s of the frozen token table (V, C);
/// a value s &lt; 0 is row p = −1 − s of the prompt bank (P, C). Prefix, suffix and interleaved placements,
/// and a different prompt per batch row drawn from a bank, are all just different maps.
/// Backward writes the prompt only: dPrompt (P, C) ACCUMULATES (+=) the gradient of every position that
/// used each prompt row; the table is never touched.
/// </summary>
/// <remarks>
/// The backward is deterministic without float atomics: one thread per (prompt row, channel) sums, in
/// position order, over the positions listed for that row by an inverse map (<see cref="PromptUses"/>, CSR:
/// offsets (P + 1) into positions (U)) built on the host together with the source map.
/// A source the kernel finds out of range yields NaN rather than an out-of-bounds read, so a bad map shows
/// up in the loss instead of crashing the device; <see cref="BuildPromptUses"/> validates maps on the host.
/// Both kernels are elementwise and barrier-free; each thread takes a contiguous chunk (long on the CPU, 1 on a GPU).
/// </remarks>
public sealed class Embedding
{
    /// <summary>Inverse of a source map: for prompt row p, the positions that use it are
    /// <c>Positions[Offsets[p] .. Offsets[p + 1])</c>, ascending.</summary>
    /// <param name="Offsets">(P + 1) start of each prompt row's list; the last entry is U.</param>
    /// <param name="Positions">(U) flattened positions b·T + t, grouped by prompt row.</param>
    public sealed record PromptUses(int[] Offsets, int[] Positions);

    #region Kernels

    /// <summary>Forward: out[r, c] = table[s, c] or prompt[−1−s, c] with s = sourceMap[r].</summary>
    internal static void ForwardKernel(
        ArrayView<float> output,  // (B*T, C)
        ArrayView<int> sourceMap, // (B*T)
        ArrayView<float> table,   // (V, C)
        ArrayView<float> prompt,  // (P, C) or empty
        int rows, int c, int vocab, int promptTableRows, int chunk)
    {
        long total = (long)rows * c;
        var run = ThreadRun.Of(total, chunk);
        for (long i = run.Start; i < run.End; i++)
        {
            int row = (int)(i / c);
            int channel = (int)(i - (long)row * c);
            int source = sourceMap[row];
            float value;
            if (source >= 0)
                value = source < vocab ? table[(long)source * c + channel] : float.NaN;
            else
            {
                int p = -1 - source;
                value = p < promptTableRows ? prompt[(long)p * c + channel] : float.NaN;
            }
            output[i] = value;
        }
    }

    /// <summary>Backward: dPrompt[p, c] += Σ dOut[pos, c] over the positions that use prompt row p, in order.</summary>
    internal static void BackwardKernel(
        ArrayView<float> dPrompt,    // (P, C)
        ArrayView<float> dOut,       // (B*T, C)
        ArrayView<int> useOffsets,   // (P + 1)
        ArrayView<int> usePositions, // (U)
        int promptTableRows, int c, int chunk)
    {
        long total = (long)promptTableRows * c;
        var run = ThreadRun.Of(total, chunk);
        for (long i = run.Start; i < run.End; i++)
        {
            int p = (int)(i / c);
            int channel = (int)(i - (long)p * c);
            float sum = 0;
            for (int u = useOffsets[p]; u < useOffsets[p + 1]; u++)
                sum += dOut[(long)usePositions[u] * c + channel];
            dPrompt[i] += sum;
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int, int, int> forward;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int> backward;

    internal Embedding(KernelContext context)
    {
        this.context = context;
        forward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<float>, int, int, int, int, int>(ForwardKernel);
        backward = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<int>, int, int, int>(BackwardKernel);
    }

    /// <summary>Validates a source map on the host and builds its inverse for <see cref="Backward"/>.</summary>
    /// <param name="sourceMap">(B·T) token row (≥ 0) or −1 − prompt row (&lt; 0) per position.</param>
    /// <param name="vocab">Rows V of the token table.</param>
    /// <param name="promptTableRows">Rows P of the prompt bank.</param>
    /// <exception cref="ArgumentException">An entry names a token ≥ V or a prompt row ≥ P; the message gives the position.</exception>
    public static PromptUses BuildPromptUses(ReadOnlySpan<int> sourceMap, int vocab, int promptTableRows)
    {
        var counts = new int[promptTableRows + 1];
        for (int position = 0; position < sourceMap.Length; position++)
        {
            int source = sourceMap[position];
            if (source >= vocab)
                throw new ArgumentException($"Embedding source map: position {position} names token {source}, but the table has {vocab} rows.", nameof(sourceMap));
            if (source < 0)
            {
                int p = -1 - source;
                if (p >= promptTableRows)
                    throw new ArgumentException($"Embedding source map: position {position} names prompt row {p} (value {source}), but the prompt bank has {promptTableRows} rows.", nameof(sourceMap));
                counts[p + 1]++;
            }
        }
        for (int p = 0; p < promptTableRows; p++)
            counts[p + 1] += counts[p];
        var positions = new int[counts[promptTableRows]];
        var next = counts[..promptTableRows];
        for (int position = 0; position < sourceMap.Length; position++)
            if (sourceMap[position] < 0)
                positions[next[-1 - sourceMap[position]]++] = position;
        return new PromptUses(counts, positions);
    }

    /// <summary>out[r] = table[s] or prompt[−1 − s] for s = sourceMap[r].</summary>
    /// <param name="output">Embeddings (B·T, C), overwritten.</param>
    /// <param name="sourceMap">Source per position (B·T).</param>
    /// <param name="table">Frozen token table (V, C).</param>
    /// <param name="prompt">Prompt bank (P, C); empty when no position uses a prompt.</param>
    /// <param name="rows">Positions B·T.</param>
    /// <param name="c">Channels.</param>
    /// <param name="vocab">Table rows V.</param>
    /// <param name="promptTableRows">Prompt rows P (may be 0).</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Forward(ArrayView<float> output, ArrayView<int> sourceMap, ArrayView<float> table, ArrayView<float> prompt,
        int rows, int c, int vocab, int promptTableRows)
    {
        const string op = "Embedding.Forward";
        context.Enter(op);
        Check.Positive(op, ("B*T", rows), ("C", c), ("V", vocab));
        if (promptTableRows < 0)
            throw new KernelShapeException($"{op}: dimension P = {promptTableRows} must not be negative.");
        Check.Length(op, "out", output, (long)rows * c, "B*T*C");
        Check.Length(op, "sourceMap", sourceMap, rows, "B*T");
        Check.Length(op, "table", table, (long)vocab * c, "V*C");
        Check.Length(op, "prompt", prompt, (long)promptTableRows * c, "P*C");
        long total = (long)rows * c;
        forward(context.RunConfig(total, out int chunk), output, sourceMap, table, prompt, rows, c, vocab, promptTableRows, chunk);
    }

    /// <summary>dPrompt += the gradient of every position that used each prompt row.</summary>
    /// <param name="dPrompt">Prompt gradient (P, C), accumulated into.</param>
    /// <param name="dOut">Gradient of the embeddings (B·T, C).</param>
    /// <param name="useOffsets">(P + 1) from <see cref="BuildPromptUses"/>.</param>
    /// <param name="usePositions">(U) from <see cref="BuildPromptUses"/>.</param>
    /// <param name="rows">Positions B·T.</param>
    /// <param name="c">Channels.</param>
    /// <param name="promptTableRows">Prompt rows P.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match the dimensions.</exception>
    public void Backward(ArrayView<float> dPrompt, ArrayView<float> dOut, ArrayView<int> useOffsets, ArrayView<int> usePositions,
        int rows, int c, int promptTableRows)
    {
        const string op = "Embedding.Backward";
        context.Enter(op);
        Check.Positive(op, ("B*T", rows), ("C", c), ("P", promptTableRows));
        Check.Length(op, "dPrompt", dPrompt, (long)promptTableRows * c, "P*C");
        Check.Length(op, "dOut", dOut, (long)rows * c, "B*T*C");
        Check.Length(op, "useOffsets", useOffsets, promptTableRows + 1, "P+1");
        if (usePositions.Length > rows)
            throw new KernelShapeException($"{op}: usePositions has {usePositions.Length} elements, more than the {rows} positions.");
        long total = (long)promptTableRows * c;
        backward(context.RunConfig(total, out int chunk), dPrompt, dOut, useOffsets, usePositions, promptTableRows, c, chunk);
    }

    #endregion
}
