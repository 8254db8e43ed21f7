using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>
/// The forward and the prompt-only backward of one model family as flat lists of kernel launches over
/// <see cref="PassDimensions"/> and the named views of a <see cref="MemoryPlan"/>. A family (<see cref="LlamaBlocks"/>,
/// <see cref="Gpt2Blocks"/>) writes its block's forward and backward in one file, on one screen; what every family
/// shares — loading a batch's maps, the attention (fused q/k/v, RoPE, the KV cache, the deep prefix) and its backward,
/// the model loop — is written once here.
/// </summary>
/// <remarks>
/// <para>An abstract class rather than an interface: the shared attention is code, not a contract, and a family is chosen
/// once, at construction, instead of branching on the family at every launch that differs. The forward saves exactly
/// what the backward needs; the backward runs the same list in reverse, computing data gradients through the frozen
/// blocks, and ends by accumulating into dPrompt.</para>
/// <para>Deep prompts (<see cref="EngineOptions.DeepVirtualTokens"/> = Pv &gt; 0, prefix tuning / P-tuning v2): each layer's
/// attention merges its Pv prefix keys and values in after the token attention (<see cref="AttentionPrefix"/>), every
/// query of every row attending to them as to past keys, and the backward accumulates their gradient over the batch
/// rows into dPrefix. As in Hugging Face PEFT's PREFIX_TUNING, the prefixes are past_key_values: the batch's positions
/// are moved up by Pv (a batch still numbers its rows from 0), and in generation they fill cache slots [0, Pv) of
/// every row, the tokens following from slot Pv.</para>
/// </remarks>
internal abstract class BlockProgram(KernelContext kernels, TransformerConfig config, EngineOptions options, DeviceWeights weights, MemoryPlan memory)
{
    protected readonly KernelContext kernels = kernels;
    protected readonly TransformerConfig config = config;
    protected readonly EngineOptions options = options;
    protected readonly DeviceWeights weights = weights;
    protected readonly MemoryPlan m = memory; // every tensor by name: m.Queries(s, N), m.DResidual(N), …

    /// <summary>The program of <paramref name="config"/>'s family.</summary>
    public static BlockProgram For(KernelContext kernels, TransformerConfig config, EngineOptions options, DeviceWeights weights, MemoryPlan memory) =>
        config.Family == ModelFamily.Gpt2 ? new Gpt2Blocks(kernels, config, options, weights, memory) : new LlamaBlocks(kernels, config, options, weights, memory);

    /// <summary>The sizes of the last <see cref="Forward"/>; <see cref="Backward"/> and the loss follow it.</summary>
    public PassDimensions Pass { get; private set; }

    /// <summary>Runs every row through every layer and differentiates everything below layer 0's attention, as the engine
    /// did before it skipped the work the loss does not need; for the tests that check the shortcuts change nothing.</summary>
    public bool EveryRowEverywhere { get; set; }

    #region Family

    /// <summary>residual[0]: the token and prompt rows of the loaded batch (and a family's position embedding).</summary>
    protected virtual void Embed(in PassDimensions d, ArrayView<int> map, ArrayView<int> positions) =>
        kernels.Embedding.Forward(m.Residual(0, d.N), map, weights.TokenEmbedding, m.Prompt, d.N, d.C, config.VocabSize, options.PromptTableRows);

    /// <summary>Block <paramref name="l"/>: residual[l] → residual[l+1], saving into per-layer slot <paramref name="s"/>.
    /// The forward runs it for every layer (<paramref name="nextSlot"/> ≥ 0: the slot of the next block, which a family
    /// may normalise into); with <see cref="EngineOptions.Recompute"/> the backward runs it again alone
    /// (<paramref name="nextSlot"/> = −1), from the saved block input, into slot 0 just before differentiating it.</summary>
    protected abstract void BlockForward(in PassDimensions d, int l, int s, int nextSlot);

    /// <summary>After the last block: the final norm of residual[L] into the final-norm rows, unless the last block did it.</summary>
    protected abstract void FinalNormForward(in PassDimensions d);

    /// <summary>dResidual[L] (in <paramref name="dOut"/>) from dFinalNorm (in <paramref name="dNorm"/>), over
    /// <paramref name="rows"/> rows: where <see cref="Readout.LossBackward"/> ends and <see cref="Backward"/> starts.</summary>
    public abstract void FinalNormBackward(ArrayView<float> dOut, ArrayView<float> dNorm, int rows);

    /// <summary>Block <paramref name="l"/> reversed: dResidual[l+1] → dResidual[l] from slot <paramref name="s"/>.</summary>
    protected abstract void BlockBackward(in PassDimensions d, int l, int s, int injectedRows);

    #endregion

    /// <summary>The batch whose maps the index arena holds (the last <see cref="Load"/>).</summary>
    public Batch? Loaded { get; private set; }

    /// <summary>Positions of the loaded batch that read a prompt row (the length of <see cref="MemoryPlan.UsePositions"/>).</summary>
    public int PromptUseCount { get; private set; }

    /// <summary>Checks <paramref name="batch"/> against the plan and the model, and sends its index maps to the device:
    /// per call, the only host-to-device copy besides a step's indices.</summary>
    /// <exception cref="ArgumentException">The batch does not fit the engine or the model.</exception>
    public void Load(Batch batch)
    {
        if (batch.Rows > options.MaxRows || batch.Length > options.MaxLength)
            throw new ArgumentException($"batch {batch.Rows}×{batch.Length} exceeds the engine's {options.MaxRows}×{options.MaxLength}");
        if (batch.LossPositions.Length > m.MaxScored) throw new ArgumentException($"batch scores {batch.LossPositions.Length} positions, the engine was sized for {m.MaxScored}");
        if ((batch.Verbalizer?.Length ?? 0) > options.MaxVerbalizer) throw new ArgumentException($"verbalizer of {batch.Verbalizer!.Length} tokens exceeds the engine's {options.MaxVerbalizer}");
        batch.Validate(config.VocabSize, options.PromptTableRows, config.ContextLength - options.DeepVirtualTokens);
        int n = batch.Positions, s = batch.LossPositions.Length;
        m.SourceMap(n).CopyFromCPU(batch.SourceMap);
        m.KeyMask(n).CopyFromCPU(batch.KeyMask);
        // A deep prompt occupies positions [0, Pv) as past keys, so the batch's positions move up by Pv (HF's cache_position).
        m.PositionIds(n).CopyFromCPU(options.DeepVirtualTokens == 0 ? batch.PositionIds : batch.PositionIds.Select(p => p + options.DeepVirtualTokens).ToArray());
        if (s > 0)
        {
            m.LossPositions(s).CopyFromCPU(batch.LossPositions);
            m.Targets(s).CopyFromCPU(batch.Targets);
        }
        if (batch.Verbalizer is { Length: > 0 } words) m.Verbalizer(words.Length).CopyFromCPU(words);
        if (batch.DeepPromptOfRow is { } chosen)
        {
            if (options.DeepVirtualTokens == 0) throw new ArgumentException("batch: it chooses a deep prompt per row, but the engine holds none");
            foreach (var d in chosen)
                if (d >= options.DeepPrompts) throw new ArgumentException($"batch: deep prompt {d} chosen, the engine holds {options.DeepPrompts}");
        }
        if (options.DeepPrompts > 1) // with one deep prompt every row attends to it; nothing to send
            m.DeepPromptOfRow(batch.Rows).CopyFromCPU(batch.DeepPromptOfRow ?? new int[batch.Rows]);
        if (options.PromptTableRows > 0)
        {
            var uses = Embedding.BuildPromptUses(batch.SourceMap, config.VocabSize, options.PromptTableRows);
            m.UseOffsets.CopyFromCPU(uses.Offsets);
            if (uses.Positions.Length > 0) m.UsePositions(uses.Positions.Length).CopyFromCPU(uses.Positions);
            PromptUseCount = uses.Positions.Length;
        }
        Loaded = batch;
    }

    /// <summary>The forward over the loaded batch (<see cref="Loaded"/>), or, decoding, over one new position
    /// of each of <paramref name="decodeRows"/> cached rows; <paramref name="training"/> saves every layer's activations.</summary>
    public void Forward(bool training, CacheMode mode = CacheMode.None, int decodeRows = 0)
    {
        var batch = Loaded!;
        bool decoding = mode == CacheMode.Decode;
        // Decoding runs one position per cached row; its token and position id come with the step, not a batch.
        var d = Pass = PassDimensions.Of(config, options, decoding ? decodeRows : batch.Rows, decoding ? 1 : batch.Length, mode,
            ScoredRowsOnly(mode, batch) ? batch.LossPositions.Length : 0);
        var map = decoding ? m.StepIndices(0, d.B) : m.SourceMap(d.N);
        var positions = decoding ? m.StepIndices(1, d.B) : m.PositionIds(d.N);
        Embed(d, map, positions);
        // Inference, and training with recomputation, reuse one layer's worth of saved tensors.
        int Slot(int layer) => training && !options.Recompute ? layer : 0;
        for (int l = 0; l < d.L; l++)
            BlockForward(d, l, Slot(l), nextSlot: Slot(l + 1));
        FinalNormForward(d);
    }

    /// <summary>Whether this forward runs the last block after its attention, the final norm and the loss at the scored
    /// rows only. Nothing after the last block's attention mixes rows, and the loss reads only the scored rows, so
    /// the other rows' work there changes nothing (a classifier scores one row of T; the last block's output projection
    /// and MLP are then about 1/L of the FLOPs saved). Keys and values of the last block are still computed for every
    /// row, since the scored rows attend to them. The generation paths keep every row: the KV cache and the decode
    /// logits need them.</summary>
    bool ScoredRowsOnly(CacheMode mode, Batch batch) =>
        !EveryRowEverywhere && mode == CacheMode.None && batch.LossPositions.Length > 0 && batch.LossPositions.Length < batch.Positions;

    /// <summary>The backward of the last <see cref="Forward"/> from the output gradient <see cref="Readout.LossBackward"/> left (or,
    /// for a prompt-only row, the keys' and values' gradients of <paramref name="injectedRows"/> rows), ending at dPrompt.</summary>
    public void Backward(int injectedRows = 0)
    {
        var d = Pass;
        for (int l = d.L - 1; l >= 0; l--)
        {
            // With recomputation the block's activations are rebuilt from its saved input, into slot 0.
            int s = options.Recompute ? 0 : l;
            if (options.Recompute) BlockForward(d, l, 0, nextSlot: -1);
            BlockBackward(d, l, s, injectedRows);
        }
        // Embedding, reversed: only the prompt rows receive gradient (positions and tokens are frozen).
        if (options.PromptTableRows > 0)
            kernels.Embedding.Backward(m.DPrompt, m.DResidual(d.N), m.UseOffsets, m.UsePositions(PromptUseCount), d.N, d.C, options.PromptTableRows);
    }

    /// <summary>The attention half up to the attention output (saved in slot <paramref name="s"/>), from the normed input
    /// <paramref name="normed"/> (N, C): q/k/v in one projection, RoPE where the family rotates, the KV cache in the
    /// generation paths, the token attention and a deep prompt's prefix attention.</summary>
    protected void Attention(in PassDimensions d, int l, int s, ArrayView<float> normed, bool rotate)
    {
        var w = weights.Block(l);
        var (q, k, v, att) = (m.Queries(s, d.N), m.Keys(s, d.N), m.Values(s, d.N), m.AttentionOut(s, d.N));
        var positions = d.Decoding ? m.StepIndices(1, d.B) : m.PositionIds(d.N);
        var fused = m.Qkv(d.N);
        kernels.Linear.Forward(fused, normed, w.Qkv, w.QkvBias, d.N, d.C, d.Q + 2 * d.KV);
        kernels.Rope.ForwardFromQkv(q, k, v, fused, positions, d.B, d.T, d.H, d.KVH, d.hs, d.Theta, rotate);
        if (d.Mode != CacheMode.None)
        {
            var (kCache, vCache) = (m.KeyCache(l, d.B), m.ValueCache(l, d.B));
            kernels.AttentionDecode.Append(new(kCache, vCache), new(k, v), m.StepIndices(2, d.B), d.B, d.T, d.Tmax, d.KVH, d.hs);
            if (d.Decoding) kernels.AttentionDecode.Forward(att, q, new(kCache, vCache), m.StepIndices(3, d.B), new(d.B, d.Tmax, d.H, d.KVH, d.hs));
        }
        if (d.Decoding) return;
        kernels.Attention.Forward(att, m.Lse(s, d.B, d.T), q, new(k, v), m.KeyMask(d.N), new(d.B, d.T, d.H, d.KVH, d.hs));
        if (d.Pv > 0) // deep prompt: every query also attends to the layer's prefix keys
            kernels.AttentionPrefix.Forward(att, m.Lse(s, d.B, d.T), q, new(m.PrefixSlice(l, false), m.PrefixSlice(l, true)),
                new(d.B, d.T, d.H, d.KVH, d.hs, d.Pv), m.DeepPromptOfRow(d.B));
    }

    /// <summary>The attention output and the block input at the rows the rest of block <paramref name="l"/> runs on: all
    /// N, or, in the compacted last block, the S scored rows gathered (from here on rows do not mix).</summary>
    protected (ArrayView<float> Attention, ArrayView<float> Input) RowsAfterAttention(in PassDimensions d, int l, int s)
    {
        var (att, x) = (m.AttentionOut(s, d.N), m.Residual(l, d.N));
        if (!d.Compacted(l)) return (att, x);
        var (attRows, xRows, rows) = (m.ScoredAttention(d.Scored), m.ScoredInput(d.Scored), m.LossPositions(d.Scored));
        kernels.RowGather.Forward(attRows, att, rows, d.N, d.Scored, d.Q);
        kernels.RowGather.Forward(xRows, x, rows, d.N, d.Scored, d.C);
        return (attRows, xRows);
    }

    /// <summary>The attention half reversed, from its output gradient <paramref name="dOut"/> (R, C) to dLn (N, C), the
    /// gradient of the normed block input: the output projection (scattered back to N rows in the compacted block), the
    /// attention, the deep prefix (into dPrefix), a shared prompt's injected key/value gradients, RoPE and the q/k/v
    /// projection. Returns false, having stopped after the prefix, when nothing below layer 0's attention is trained.</summary>
    protected bool AttentionBackward(in PassDimensions d, int l, int s, ArrayView<float> dOut, int injectedRows, bool rotate)
    {
        var w = weights.Block(l);
        int R = d.RowsAfterAttention(l);
        var dAtt = m.DAttention(d.N);
        var (dq, dk, dv) = (m.DQueries(d.N), m.DKeys(d.N), m.DValues(d.N));
        var (q, k, v) = (m.Queries(s, d.N), m.Keys(s, d.N), m.Values(s, d.N));
        var (lse, delta) = (m.Lse(s, d.B, d.T), m.Delta(d.B, d.T));
        if (d.Compacted(l))
        {
            // dAttention is zero at the rows the forward dropped.
            var dAttRows = m.ScoredAttention(R);
            kernels.Linear.Backward(dAttRows, dOut, w.AttentionOutput, R, d.Q, d.C);
            dAtt.MemSetToZero();
            kernels.RowGather.Backward(dAtt, dAttRows, m.LossPositions(R), d.N, R, d.Q);
        }
        else kernels.Linear.Backward(dAtt, dOut, w.AttentionOutput, d.N, d.Q, d.C);
        kernels.Attention.Backward(dq, new(dk, dv), delta, dAtt, q, new(k, v), m.KeyMask(d.N), m.AttentionOut(s, d.N), lse, new(d.B, d.T, d.H, d.KVH, d.hs));
        if (d.Pv > 0)
            kernels.AttentionPrefix.Backward(dq, new(m.DPrefixSlice(l, false), m.DPrefixSlice(l, true)), dAtt, q,
                new(m.PrefixSlice(l, false), m.PrefixSlice(l, true)), lse, delta, new(d.B, d.T, d.H, d.KVH, d.hs, d.Pv));
        if (l == 0 && options.PromptTableRows == 0 && !EveryRowEverywhere)
            return false; // a deep prompt's gradient entered at the prefix keys and values; nothing below layer 0's attention is trained
        if (injectedRows > 0) // PromptBackward: the keys and values also reach other rows (shared prompt KV)
        {
            long part = (long)injectedRows * d.KV;
            kernels.Residual.Forward(dk, dk, m.Injected(l, false, injectedRows), part);
            kernels.Residual.Forward(dv, dv, m.Injected(l, true, injectedRows), part);
        }
        var dQkv = m.Qkv(d.N);
        kernels.Rope.BackwardToQkv(dQkv, dq, dk, dv, m.PositionIds(d.N), d.B, d.T, d.H, d.KVH, d.hs, d.Theta, rotate);
        kernels.Linear.Backward(m.DLn(d.N), dQkv, w.Qkv, d.N, d.C, d.Q + 2 * d.KV);
        return true;
    }
}
