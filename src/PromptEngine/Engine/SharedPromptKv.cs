using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>
/// Exact prompt-KV reuse. With a prompt placed as a prefix and causal attention, the prompt positions' hidden states —
/// and so every layer's keys and values there — never depend on the input. They can be computed once and given to the
/// rows as a deep prefix (<see cref="EngineOptions.DeepVirtualTokens"/>): the rows then attend to them exactly as to their own
/// prompt positions (positions, RoPE angles and the causal mask all agree), without running P positions per row.
/// </summary>
/// <remarks>
/// <para>Inference: <see cref="TransformerEngine.PromptKeysAndValues"/> once per prompt, then <see cref="TransformerEngine.SetPrefix"/>
/// on an engine built with DeepVirtualTokens = P; every request and every generation step reuses them (prefill copies them
/// into each row's cache slots [0, P)).</para>
/// <para>Training (<see cref="LossAndPromptGradient"/>): one prompt-only forward per batch, the rows against its keys
/// and values, their dPrefix (summed over the rows) fed back as the gradient of the prompt-only row's keys and values,
/// and one prompt-only backward into dPrompt. Requires that no prompt position is scored (prompt slots are never
/// predicted in PEFT's layout; a classification row scores its last position only) and one prompt for the whole batch
/// (a mixed-prompt batch would group its rows by prompt and run this per group).</para>
/// </remarks>
public static class SharedPromptKv
{
    /// <summary>The loss of <paramref name="rows"/> with the prompt rows <paramref name="promptTableRows"/> of
    /// <paramref name="promptEngine"/>'s bank in front of each of them, computing the prompt positions once: ADDS
    /// dLoss/dPrompt into <paramref name="promptEngine"/>'s prompt gradient (step its optimizer as usual).</summary>
    /// <param name="promptEngine">A training engine holding the prompt bank; its MaxLength must hold P.</param>
    /// <param name="rowsEngine">A training engine with PromptTableRows = 0 and DeepVirtualTokens = P, sized for the rows; its prefix
    /// is overwritten by every call.</param>
    /// <param name="promptTableRows">The P prompt-bank rows placed in front of every row.</param>
    /// <param name="rows">The rows without their prompt, numbered from 0 (the rows engine moves them to P, P+1, …).</param>
    /// <returns>The mean loss over the rows' scored positions.</returns>
    /// <exception cref="ArgumentException">The engines do not fit each other or the prompt.</exception>
    public static float LossAndPromptGradient(TransformerEngine promptEngine, TransformerEngine rowsEngine, IReadOnlyList<int> promptTableRows, Batch rows)
    {
        if (rowsEngine.DeepVirtualTokens != promptTableRows.Count)
            throw new ArgumentException($"shared prompt KV: the rows engine has {rowsEngine.DeepVirtualTokens} prefix tokens for a prompt of {promptTableRows.Count} rows");
        if (rowsEngine.Config.NumLayers != promptEngine.Config.NumLayers || rowsEngine.Config.HiddenSize != promptEngine.Config.HiddenSize)
            throw new ArgumentException("shared prompt KV: the two engines hold different models");
        var keysAndValues = promptEngine.PromptForward(promptTableRows);
        rowsEngine.SetPrefix(keysAndValues); // also clears its dPrefix
        var loss = rowsEngine.LossAndPromptGradient(rows);
        promptEngine.PromptBackward(rowsEngine.GetPrefixGradient());
        return loss;
    }
}

/// <summary>The engine's side of prompt-KV reuse: a prompt's keys and values computed alone, and, in training, the backward
/// of that prompt-only row from the gradient its keys and values received elsewhere (see <see cref="SharedPromptKv"/>).</summary>
internal sealed class PromptKv(KernelContext kernels, TransformerConfig config, EngineOptions options, MemoryPlan memory, BlockProgram program, KvCache cache)
{
    /// <summary>See <see cref="TransformerEngine.PromptKeysAndValues"/>.</summary>
    public float[] KeysAndValues(IReadOnlyList<int> promptTableRows)
    {
        if (options.DeepVirtualTokens > 0) throw new InvalidOperationException("prompt KV: the engine has a deep prefix of its own; use an engine without one");
        int P = promptTableRows.Count;
        if (P == 0 || P > options.MaxLength) throw new ArgumentException($"prompt KV: {P} prompt rows; between 1 and the engine's length {options.MaxLength}");
        foreach (var row in promptTableRows)
            if (row < 0 || row >= options.PromptTableRows) throw new ArgumentException($"prompt KV: prompt row {row} is outside the bank of {options.PromptTableRows} rows");
        cache.Prefill(BatchBuilder.Build([promptTableRows.Select(Slot.Prompt).ToList()]));
        cache.Clear();
        return cache.FirstRow(P); // row 0 of the cache starts with its P slots
    }

    /// <summary>See <see cref="TransformerEngine.PromptForward"/>.</summary>
    public float[] Forward(IReadOnlyList<int> promptTableRows)
    {
        if (!options.Training || options.Recompute || options.DeepVirtualTokens > 0)
            throw new InvalidOperationException("prompt forward: needs a training engine without recomputation or a deep prefix");
        int P = promptTableRows.Count;
        if (P == 0 || P > options.MaxLength) throw new ArgumentException($"prompt forward: {P} prompt rows; between 1 and the engine's length {options.MaxLength}");
        program.Load(BatchBuilder.Build([promptTableRows.Select(Slot.Prompt).ToList()]));
        program.Forward(training: true);
        long part = (long)P * config.NumKvHeads * config.HeadDim;
        var result = new float[2 * config.NumLayers * part];
        for (var l = 0; l < config.NumLayers; l++)
        {
            memory.Keys(l, P).ToHost().CopyTo(result, 2 * l * part);
            memory.Values(l, P).ToHost().CopyTo(result, (2 * l + 1) * part);
        }
        return result;
    }

    /// <summary>See <see cref="TransformerEngine.PromptBackward"/>.</summary>
    public void Backward(ReadOnlySpan<float> dKeysAndValues)
    {
        if (program.Loaded is not { Rows: 1 } batch || !options.Training) throw new InvalidOperationException("prompt backward: call PromptForward first");
        int P = batch.Length;
        long part = (long)P * config.NumKvHeads * config.HeadDim;
        if (dKeysAndValues.Length != 2 * config.NumLayers * part)
            throw new ArgumentException($"prompt backward: {dKeysAndValues.Length} values given, (L, 2, P, KV·hs) = {2 * config.NumLayers * part}");
        memory.EnsureInjected(kernels.Accelerator);
        memory.UploadInjected(dKeysAndValues);
        memory.DResidual(P).MemSetToZero(); // no loss at the prompt positions themselves
        program.Backward(injectedRows: P);
    }
}
