using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>
/// Cached generation: every layer's rotated keys and values, (B, Tmax, KV·hs) each for B = MaxRows and Tmax = MaxLength,
/// with the step's logits (B, V) and index maps, in arenas of the <see cref="MemoryPlan"/> allocated on the first
/// <see cref="Prefill"/> only, so a training engine that never generates does not pay for them.
/// </summary>
/// <remarks>
/// <see cref="Prefill"/> runs the ordinary forward over each row's prompt rows and tokens and appends each layer's K and
/// V to the cache as it goes; <see cref="DecodeStep"/> then runs the same list of launches for one new token per row
/// (N = B), attending with <see cref="AttentionDecode"/> to the row's cached positions. Per step B·5 ints go to the
/// device and the (B, V) logits come back. A deep prompt's Pv keys and values fill cache slots [0, Pv) of every row, as
/// Hugging Face PEFT's past_key_values; the tokens follow from slot Pv.
/// </remarks>
internal sealed class KvCache(KernelContext kernels, TransformerConfig config, EngineOptions options, MemoryPlan memory, BlockProgram program,
    Readout readout)
{
    /// <summary>Valid cached positions of each row of the last <see cref="Prefill"/>, advanced by every
    /// <see cref="DecodeStep"/>; empty before the first prefill (and after <see cref="Clear"/>).</summary>
    public int[] Lengths { get; private set; } = [];

    /// <summary>Forgets the cached rows (the cache's contents stay until overwritten).</summary>
    public void Clear() => Lengths = [];

    /// <summary>See <see cref="TransformerEngine.Prefill"/>.</summary>
    public float[] Prefill(Batch batch)
    {
        int B = batch.Rows, T = batch.Length;
        if (B > options.MaxRows || T > options.MaxLength)
            throw new ArgumentException($"prefill: batch {B}×{T} exceeds the engine's {options.MaxRows}×{options.MaxLength}");
        batch.Validate(config.VocabSize, options.PromptTableRows, config.ContextLength - options.DeepVirtualTokens);
        var lengths = new int[B];
        for (var b = 0; b < B; b++)
        {
            while (lengths[b] < T && batch.KeyMask[b * T + lengths[b]] == 1) lengths[b]++;
            if (lengths[b] == 0) throw new ArgumentException($"prefill: row {b} is empty; it needs at least one token or prompt row");
            for (var i = 0; i < T; i++)
            {
                if (i >= lengths[b] && batch.KeyMask[b * T + i] == 1)
                    throw new ArgumentException($"prefill: row {b} has padding at position {lengths[b]} before a real position {i}; rows must be right-padded");
                if (i < lengths[b] && batch.PositionIds[b * T + i] != i)
                    throw new ArgumentException($"prefill: row {b}, position {i} has position id {batch.PositionIds[b * T + i]}; cached rows count positions from 0");
            }
        }
        memory.EnsureCache(kernels.Accelerator);
        program.Load(batch with { LossPositions = [], Targets = [], Verbalizer = null });
        int Pv = options.DeepVirtualTokens;
        if (Pv + T > options.MaxLength)
            throw new ArgumentException($"prefill: {Pv} prefix tokens + length {T} exceed the engine's cache of {options.MaxLength} positions");
        var step = new int[5 * B];
        for (var b = 0; b < B; b++)
        {
            step[2 * B + b] = Pv; // each row fills from its start, after the deep prefix's slots
            step[4 * B + b] = b * T + lengths[b] - 1;
        }
        memory.UploadStep(step, B);
        if (Pv > 0) // a deep prompt's keys and values sit in the cache like past positions (as PEFT's past_key_values)
        {
            for (var l = 0; l < config.NumLayers; l++)
                kernels.AttentionPrefix.FillCache(new(memory.KeyCache(l, B), memory.ValueCache(l, B)), new(memory.PrefixSlice(l, false), memory.PrefixSlice(l, true)),
                    B, options.MaxLength, config.NumKvHeads, config.HeadDim, Pv, memory.DeepPromptOfRow(B));
        }
        program.Forward(training: false, CacheMode.Fill);
        for (var b = 0; b < B; b++) lengths[b] += Pv;
        Lengths = lengths;
        return readout.GenerationLogits(B * T, B);
    }

    /// <summary>See <see cref="TransformerEngine.DecodeStep"/>.</summary>
    public float[] DecodeStep(ReadOnlySpan<int> tokens)
    {
        int B = Lengths.Length;
        if (B == 0) throw new InvalidOperationException("decode: nothing is cached; call Prefill first");
        if (tokens.Length != B) throw new ArgumentException($"decode: {tokens.Length} tokens given for {B} cached rows");
        var step = new int[5 * B];
        for (var b = 0; b < B; b++)
        {
            int token = tokens[b], length = Lengths[b];
            if (token >= config.VocabSize) throw new ArgumentException($"decode: row {b}: token {token} is outside the vocabulary of {config.VocabSize}");
            if (token >= 0 && length >= options.MaxLength)
                throw new ArgumentException($"decode: row {b}: the cache is full ({options.MaxLength} positions, EngineOptions.MaxLength)");
            bool active = token >= 0;
            step[b] = active ? token : 0;
            step[B + b] = active ? length : 0;          // position id: RoPE angle or learned-position row
            step[2 * B + b] = active ? length : -1;     // cache slot written
            step[3 * B + b] = active ? length + 1 : length; // keys attended: the cached ones and, if active, its own
            step[4 * B + b] = b;                        // logit row
        }
        memory.UploadStep(step, B);
        program.Forward(training: false, CacheMode.Decode, decodeRows: B);
        for (var b = 0; b < B; b++)
            if (tokens[b] >= 0) Lengths[b]++;
        return readout.GenerationLogits(B, B);
    }

    /// <summary>Row 0's first <paramref name="positions"/> cached keys and values of every layer, (L, 2, P, KV·hs).</summary>
    public float[] FirstRow(int positions)
    {
        long part = (long)positions * config.NumKvHeads * config.HeadDim;
        var result = new float[2 * config.NumLayers * part];
        for (var l = 0; l < config.NumLayers; l++)
        {
            memory.KeyCache(l, 1).SubView(0, part).ToHost().CopyTo(result, 2 * l * part);
            memory.ValueCache(l, 1).SubView(0, part).ToHost().CopyTo(result, (2 * l + 1) * part);
        }
        return result;
    }
}
