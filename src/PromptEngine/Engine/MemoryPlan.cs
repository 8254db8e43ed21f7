using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Training;

namespace PromptEngine.Engine;

/// <summary>
/// Every device tensor the engine uses besides the frozen weights, as named views of seven arenas planned once from the
/// model and the <see cref="EngineOptions"/>. A view takes the rows it covers (N = B·T positions, S scored rows, R = N or S
/// rows leaving a block) and knows its width, so the forward and backward name tensors, never offsets.
/// </summary>
/// <remarks>
/// Lifetimes: saved activations (per layer with <see cref="EngineOptions.Training"/>, one layer's worth otherwise or with
/// recomputation: the slot <c>s</c>); activation gradients and scratch; the batch's index maps (<see cref="BlockProgram.Load"/>); the
/// prompt and deep prefix with their gradients and AdamW moments. Allocated on first use only: the KV cache with its step
/// indices (<see cref="EnsureCache"/>) and a shared prompt's key/value gradients (<see cref="EnsureInjected"/>).
/// </remarks>
internal sealed class MemoryPlan : IDisposable
{
    readonly Arena<float> saved = new("activations");
    readonly Arena<float> scratch = new("gradients and scratch");
    readonly Arena<int> indices = new("indices");
    readonly Arena<float> promptArena = new("prompt and optimizer");
    readonly Arena<float> cacheArena = new("kv cache");
    readonly Arena<int> cacheIndices = new("kv cache indices");
    readonly Arena<float> injectArena = new("prompt key/value gradients");
    readonly EngineOptions options;
    readonly int C, Q, KV, I, H, V, preActivationWidth, cacheLength;

    // Saved activations; per layer slot unless noted.
    readonly int[] residual;      // (L+1) × (N, C): the residual stream entering each block, and leaving the last
    readonly int[] mid;           // (N, C) residual stream between attention and MLP
    readonly int[] rstd1, rstd2, mean1, mean2; // (N) norm statistics (means for LayerNorm only)
    readonly int[] q, k, v;       // (N, H*hs), (N, KV*hs), (N, KV*hs); q and k after RoPE
    readonly int[] attention;     // (N, H*hs) attention output
    readonly int[] lse;           // (B, H, T) attention log-sum-exp
    readonly int[] preActivation; // (N, I) GPT-2's up projection, or (N, 2I) Llama's gate then up per row
    readonly int finalNorm, finalRstd, finalMean; // (N, C), (N), (N)

    // Scratch and activation gradients.
    readonly int ln, projection, activated;             // (N, C), (N, C), (N, I)
    readonly int qkv;                                   // (N, (H+2KV)*hs): the fused q/k/v projection, then its gradient
    readonly int dResidual, dLn, dTemp;                 // (N, C)
    readonly int dAttention, dQ, dK, dV, delta;         // (N, H*hs), (N, H*hs), (N, KV*hs), (N, KV*hs), (B, H, T)
    readonly int dActivated, dPreActivation;            // (N, I), and (N, I) or (N, 2I) as preActivation
    readonly int losses, meanLoss, logits;              // (S), (1), (S, V or R): logits, then dLogits in place
    readonly int scoredAttention, scoredInput, dScored; // (S, H*hs), (S, C), (S, C): the last block at the scored rows only

    // Batch maps.
    readonly int sourceMap, keyMask, positionIds, lossPositions, targets, verbalizer, useOffsets, usePositions;
    readonly int scoredRows;      // (S) 0, 1, …, S−1: the loss's rows once the last block has compacted them
    readonly int deepPromptOfRow; // (B) which of the D deep prompts each row attends to
    readonly int headTargets;     // (S) class index of each scored position's target, −1 to ignore (a classifier head's targets)

    // The prompt and the deep prefix, each with its gradient and AdamW moments, and the optimizer's scratch.
    readonly int prompt, dPrompt, adamM, adamV;     // (P, C) ×4
    readonly int prefix, dPrefix, prefixM, prefixV; // (L, 2, D·Pv, KV*hs), then (L, 2, Pv, KV*hs) ×3: per layer its keys, then its values
    readonly int optimizerScratch;                  // (AdamWOptimizer.ScratchLength)
    readonly long prefixPart;                       // D·Pv·KV*hs: one layer's keys (or values) of the prefix

    // KV cache (allocated by the first prefill).
    readonly int[] keyCache, valueCache; // per layer (B, Tmax, KV*hs), B = MaxRows, Tmax = MaxLength; keys after RoPE
    readonly int generationLogits;       // (B, V) logits of each row's newest position
    readonly int stepIndices;            // (5, B): tokens, position ids, cache slots written, attended lengths, logit rows
    readonly int injected;               // (L, 2, Tmax, KV*hs) dLoss/d(keys, values) of a prompt-only row (PromptBackward)

    /// <summary>Plans every arena (allocates nothing).</summary>
    public MemoryPlan(TransformerConfig config, EngineOptions options)
    {
        this.options = options;
        int L = config.NumLayers;
        (C, H, I, V) = (config.HiddenSize, config.NumHeads, config.IntermediateSize, config.VocabSize);
        (Q, KV) = (config.NumHeads * config.HeadDim, config.NumKvHeads * config.HeadDim);
        bool gpt2 = config.Family == ModelFamily.Gpt2;
        preActivationWidth = gpt2 ? I : 2 * I;
        int maxN = options.MaxRows * options.MaxLength;
        MaxScored = options.MaxLossPositions ?? maxN;
        int maxS = MaxScored, maxWidth = config.VocabSize;
        int savedLayers = options.Training && !options.Recompute ? L : 1;
        long headsRows = (long)options.MaxRows * config.NumHeads * options.MaxLength;
        long training = options.Training ? 1 : 0;

        residual = Enumerable.Range(0, L + 1).Select(l => saved.Reserve($"residual[{l}] (N, C)", (long)maxN * C)).ToArray();
        int[] PerLayer(string name, long length, bool present = true) =>
            Enumerable.Range(0, savedLayers).Select(l => saved.Reserve($"{name}[{l}]", present ? length : 0)).ToArray();
        mid = PerLayer("mid (N, C)", (long)maxN * C);
        rstd1 = PerLayer("rstd1 (N)", maxN);
        rstd2 = PerLayer("rstd2 (N)", maxN);
        mean1 = PerLayer("mean1 (N)", maxN, gpt2);
        mean2 = PerLayer("mean2 (N)", maxN, gpt2);
        q = PerLayer("q (N, H*hs)", (long)maxN * Q);
        k = PerLayer("k (N, KV*hs)", (long)maxN * KV);
        v = PerLayer("v (N, KV*hs)", (long)maxN * KV);
        attention = PerLayer("attention (N, H*hs)", (long)maxN * Q);
        lse = PerLayer("lse (B, H, T)", headsRows);
        preActivation = PerLayer(gpt2 ? "up (N, I)" : "gate and up (N, 2I)", (long)maxN * preActivationWidth);
        finalNorm = saved.Reserve("final norm (N, C)", (long)maxN * C);
        finalRstd = saved.Reserve("final rstd (N)", maxN);
        finalMean = saved.Reserve("final mean (N)", gpt2 ? maxN : 0);

        ln = scratch.Reserve("ln (N, C)", (long)maxN * C);
        projection = scratch.Reserve("projection (N, C)", (long)maxN * C);
        activated = scratch.Reserve("activated (N, I)", (long)maxN * I);
        qkv = scratch.Reserve("qkv / dQkv (N, (H+2KV)*hs)", (long)maxN * (Q + 2 * KV));
        dResidual = scratch.Reserve("dResidual (N, C)", (long)maxN * C);
        dLn = scratch.Reserve("dLn (N, C)", (long)maxN * C);
        dTemp = scratch.Reserve("dTemp (N, C): LayerNorm's input gradient before its residual add", gpt2 ? (long)maxN * C : 0);
        dAttention = scratch.Reserve("dAttention (N, H*hs)", training * maxN * Q);
        dQ = scratch.Reserve("dQ (N, H*hs)", training * maxN * Q);
        dK = scratch.Reserve("dK (N, KV*hs)", training * maxN * KV);
        dV = scratch.Reserve("dV (N, KV*hs)", training * maxN * KV);
        delta = scratch.Reserve("delta (B, H, T)", training * headsRows);
        dActivated = scratch.Reserve("dActivated (N, I)", training * maxN * I);
        dPreActivation = scratch.Reserve(gpt2 ? "dUp (N, I)" : "dGate and dUp (N, 2I)", training * maxN * preActivationWidth);
        losses = scratch.Reserve("losses (S)", maxS);
        meanLoss = scratch.Reserve("mean loss (1)", 1);
        logits = scratch.Reserve("logits / dLogits (S, V)", (long)maxS * maxWidth);
        scoredAttention = scratch.Reserve("scored rows' attention (S, H*hs)", (long)maxS * Q);
        scoredInput = scratch.Reserve("scored rows' block input (S, C)", (long)maxS * C);
        dScored = scratch.Reserve("dScored: the scored rows' residual gradient (S, C)", training * maxS * C);

        sourceMap = indices.Reserve("source map (N)", maxN);
        keyMask = indices.Reserve("key mask (N)", maxN);
        positionIds = indices.Reserve("position ids (N)", maxN);
        lossPositions = indices.Reserve("loss positions (S)", maxS);
        targets = indices.Reserve("targets (S)", maxS);
        verbalizer = indices.Reserve("verbalizer (R)", options.MaxVerbalizer);
        useOffsets = indices.Reserve("prompt use offsets (P+1)", options.PromptTableRows + 1);
        usePositions = indices.Reserve("prompt use positions (N)", maxN);
        scoredRows = indices.Reserve("scored rows 0..S-1 (S)", maxS);
        deepPromptOfRow = indices.Reserve("deep prompt of each row (B)", options.DeepPrompts > 1 ? options.MaxRows : 0);
        headTargets = indices.Reserve("head targets (S)", maxS);

        long promptLength = (long)options.PromptTableRows * C;
        long prefixLength = TransformerEngine.PrefixLengthOf(config, options.DeepVirtualTokens);
        prefixPart = (long)options.DeepPrompts * options.DeepVirtualTokens * KV;
        prompt = promptArena.Reserve("prompt (P, C)", promptLength);
        prefix = promptArena.Reserve("prefix (L, 2, D·Pv, KV*hs)", prefixLength * options.DeepPrompts);
        dPrompt = promptArena.Reserve("dPrompt (P, C)", training * promptLength);
        dPrefix = promptArena.Reserve("dPrefix (L, 2, Pv, KV*hs)", training * prefixLength);
        adamM = promptArena.Reserve("AdamW m (P, C)", training * promptLength);
        prefixM = promptArena.Reserve("AdamW m of the prefix", training * prefixLength);
        adamV = promptArena.Reserve("AdamW v (P, C)", training * promptLength);
        prefixV = promptArena.Reserve("AdamW v of the prefix", training * prefixLength);
        optimizerScratch = promptArena.Reserve("optimizer scratch: sum of squares, clip scale, norm partials (66)", AdamWOptimizer.ScratchLength);

        cacheLength = options.MaxLength;
        long layerCache = (long)options.MaxRows * options.MaxLength * KV;
        keyCache = Enumerable.Range(0, L).Select(l => cacheArena.Reserve($"key cache[{l}] (B, Tmax, KV*hs)", layerCache)).ToArray();
        valueCache = Enumerable.Range(0, L).Select(l => cacheArena.Reserve($"value cache[{l}] (B, Tmax, KV*hs)", layerCache)).ToArray();
        generationLogits = cacheArena.Reserve("generation logits (B, V)", (long)options.MaxRows * config.VocabSize);
        stepIndices = cacheIndices.Reserve("step indices (5, B)", 5L * options.MaxRows);
        injected = injectArena.Reserve("dKeys, dValues (L, 2, Tmax, KV*hs)", 2L * L * options.MaxLength * KV);
    }

    /// <summary>Most scored positions S of a batch.</summary>
    public int MaxScored { get; }

    /// <summary>Allocates the arenas every engine uses (not the KV cache nor the prompt key/value gradients).</summary>
    public void Allocate(Accelerator accelerator)
    {
        saved.Allocate(accelerator);
        scratch.Allocate(accelerator);
        indices.Allocate(accelerator);
        indices[scoredRows].CopyFromCPU(Enumerable.Range(0, MaxScored).ToArray());
        promptArena.Allocate(accelerator);
    }

    /// <summary>Whether <see cref="EnsureCache"/> has allocated the KV cache.</summary>
    public bool CacheAllocated { get; private set; }

    /// <summary>Whether <see cref="EnsureInjected"/> has allocated the prompt key/value gradients.</summary>
    public bool InjectedAllocated { get; private set; }

    /// <summary>Allocates the KV cache and its step indices, once.</summary>
    public void EnsureCache(Accelerator accelerator)
    {
        if (CacheAllocated) return;
        cacheArena.Allocate(accelerator);
        cacheIndices.Allocate(accelerator);
        CacheAllocated = true;
    }

    /// <summary>Allocates the prompt key/value gradients, once.</summary>
    public void EnsureInjected(Accelerator accelerator)
    {
        if (InjectedAllocated) return;
        injectArena.Allocate(accelerator);
        InjectedAllocated = true;
    }

    /// <summary>Bytes of the arenas allocated at construction (saved, scratch, indices, prompt).</summary>
    public long ConstructionBytes => saved.Bytes + scratch.Bytes + indices.Bytes + promptArena.Bytes;

    /// <summary>Device memory by arena, beside <paramref name="weightBytes"/> (the prompt key/value gradients, once
    /// allocated, count as scratch).</summary>
    public MemoryReport Report(long weightBytes) =>
        new(weightBytes, saved.Bytes, scratch.Bytes + (InjectedAllocated ? injectArena.Bytes : 0), indices.Bytes, promptArena.Bytes,
            CacheAllocated ? cacheArena.Bytes + cacheIndices.Bytes : 0);

    /// <summary>A training engine's trainable parameters: the prompt (P, C), then the deep prefix (L, 2, Pv, KV·hs), those
    /// that exist, each over its own named values, gradient and moments.</summary>
    public TrainableParameter[] PromptParameters()
    {
        var result = new List<TrainableParameter>();
        if (promptArena[prompt].Length > 0)
            result.Add(new("prompt (P, C)", ParameterGroup.Prompt, promptArena[prompt], promptArena[dPrompt], promptArena[adamM], promptArena[adamV]));
        if (promptArena[dPrefix].Length > 0)
            result.Add(new("prefix (L, 2, Pv, KV*hs)", ParameterGroup.Prompt, promptArena[prefix], promptArena[dPrefix], promptArena[prefixM], promptArena[prefixV]));
        return [.. result];
    }

    static ArrayView<T> Slice<T>(Arena<T> arena, int handle, long length) where T : unmanaged =>
        length == 0 ? default : arena[handle].SubView(0, length);

    // Saved activations: layer slot s, the rows covered.
    public ArrayView<float> Residual(int layer, int rows) => Slice(saved, residual[layer], (long)rows * C);
    public ArrayView<float> Mid(int s, int rows) => Slice(saved, mid[s], (long)rows * C);
    public ArrayView<float> Rstd1(int s, int rows) => Slice(saved, rstd1[s], rows);
    public ArrayView<float> Rstd2(int s, int rows) => Slice(saved, rstd2[s], rows);
    public ArrayView<float> Mean1(int s, int rows) => Slice(saved, mean1[s], rows);
    public ArrayView<float> Mean2(int s, int rows) => Slice(saved, mean2[s], rows);
    public ArrayView<float> Queries(int s, int rows) => Slice(saved, q[s], (long)rows * Q);
    public ArrayView<float> Keys(int s, int rows) => Slice(saved, k[s], (long)rows * KV);
    public ArrayView<float> Values(int s, int rows) => Slice(saved, v[s], (long)rows * KV);
    public ArrayView<float> AttentionOut(int s, int rows) => Slice(saved, attention[s], (long)rows * Q);
    public ArrayView<float> Lse(int s, int B, int T) => Slice(saved, lse[s], (long)B * H * T);
    public ArrayView<float> PreActivation(int s, int rows) => Slice(saved, preActivation[s], (long)rows * preActivationWidth);
    public ArrayView<float> FinalNorm(int rows) => Slice(saved, finalNorm, (long)rows * C);
    public ArrayView<float> FinalRstd(int rows) => Slice(saved, finalRstd, rows);
    public ArrayView<float> FinalMean(int rows) => Slice(saved, finalMean, rows);

    // Scratch and activation gradients: the rows covered.
    public ArrayView<float> Ln(int rows) => Slice(scratch, ln, (long)rows * C);
    public ArrayView<float> Projection(int rows) => Slice(scratch, projection, (long)rows * C);
    public ArrayView<float> Activated(int rows) => Slice(scratch, activated, (long)rows * I);
    public ArrayView<float> Qkv(int rows) => Slice(scratch, qkv, (long)rows * (Q + 2 * KV));
    public ArrayView<float> DResidual(int rows) => Slice(scratch, dResidual, (long)rows * C);
    public ArrayView<float> DLn(int rows) => Slice(scratch, dLn, (long)rows * C);
    public ArrayView<float> DTemp(int rows) => Slice(scratch, dTemp, (long)rows * C);
    public ArrayView<float> DAttention(int rows) => Slice(scratch, dAttention, (long)rows * Q);
    public ArrayView<float> DQueries(int rows) => Slice(scratch, dQ, (long)rows * Q);
    public ArrayView<float> DKeys(int rows) => Slice(scratch, dK, (long)rows * KV);
    public ArrayView<float> DValues(int rows) => Slice(scratch, dV, (long)rows * KV);
    public ArrayView<float> Delta(int B, int T) => Slice(scratch, delta, (long)B * H * T);
    public ArrayView<float> DActivated(int rows) => Slice(scratch, dActivated, (long)rows * I);
    public ArrayView<float> DPreActivation(int rows) => Slice(scratch, dPreActivation, (long)rows * preActivationWidth);
    public ArrayView<float> Losses(int scored) => Slice(scratch, losses, scored);
    public ArrayView<float> MeanLoss => scratch[meanLoss];
    public ArrayView<float> Logits(int scored, int width) => Slice(scratch, logits, (long)scored * width);
    public ArrayView<float> ScoredAttention(int scored) => Slice(scratch, scoredAttention, (long)scored * Q);
    public ArrayView<float> ScoredInput(int scored) => Slice(scratch, scoredInput, (long)scored * C);
    public ArrayView<float> DScored(int scored) => Slice(scratch, dScored, (long)scored * C);

    // Batch maps.
    public ArrayView<int> SourceMap(int n) => Slice(indices, sourceMap, n);
    public ArrayView<int> KeyMask(int n) => Slice(indices, keyMask, n);
    public ArrayView<int> PositionIds(int n) => Slice(indices, positionIds, n);
    public ArrayView<int> LossPositions(int scored) => Slice(indices, lossPositions, scored);
    public ArrayView<int> Targets(int scored) => Slice(indices, targets, scored);
    public ArrayView<int> Verbalizer(int words) => Slice(indices, verbalizer, words);
    public ArrayView<int> UseOffsets => indices[useOffsets];
    public ArrayView<int> UsePositions(int uses) => Slice(indices, usePositions, uses);
    public ArrayView<int> ScoredRows(int scored) => Slice(indices, scoredRows, scored);
    public ArrayView<int> HeadTargets(int scored) => Slice(indices, headTargets, scored);

    /// <summary>Each row's choice among several deep prompts, or empty (one deep prompt, every row's).</summary>
    public ArrayView<int> DeepPromptOfRow(int rows) => options.DeepPrompts > 1 ? Slice(indices, deepPromptOfRow, rows) : default;

    // The prompt and the deep prefix (whole tensors; Prefix holds all D deep prompts).
    public ArrayView<float> Prompt => promptArena[prompt];
    public ArrayView<float> DPrompt => promptArena[dPrompt];
    public ArrayView<float> Prefix => promptArena[prefix];
    public ArrayView<float> DPrefix => promptArena[dPrefix];
    public ArrayView<float> OptimizerScratch => promptArena[optimizerScratch];

    /// <summary>The prefix arena's layout of <paramref name="prompts"/>, D deep prompts of (L, 2, Pv, KV·hs) each: per layer,
    /// its keys (D·Pv, KV·hs), then its values, prompt d at rows d·Pv….</summary>
    /// <exception cref="ArgumentException">A prompt of the wrong length.</exception>
    public float[] DeepPromptBank(IReadOnlyList<float[]> prompts)
    {
        int D = prompts.Count;
        long length = promptArena[prefix].Length / D, part = prefixPart / D;
        var bank = new float[D * length];
        for (var d = 0; d < D; d++)
        {
            if (prompts[d].Length != length)
                throw new ArgumentException($"deep prompt {d}: {prompts[d].Length} values given, a deep prompt holds L·2·Pv·KV·hs = {length}");
            for (long slice = 0; slice < length / part; slice++)
                Array.Copy(prompts[d], slice * part, bank, (slice * D + d) * part, part);
        }
        return bank;
    }

    /// <summary>Layer <paramref name="layer"/>'s prefix keys (D·Pv, KV, hs), or its values when <paramref name="values"/>: the
    /// D deep prompts of a bank lie stacked in each layer's keys and values.</summary>
    public ArrayView<float> PrefixSlice(int layer, bool values) => promptArena[prefix].SubView(LayerPart(layer, values), prefixPart);

    /// <summary>dPrefix's keys (Pv, KV, hs) of <paramref name="layer"/>, or its values (D = 1 whenever there is a gradient).</summary>
    public ArrayView<float> DPrefixSlice(int layer, bool values) => promptArena[dPrefix].SubView(LayerPart(layer, values), prefixPart);

    long LayerPart(int layer, bool values) => (2L * layer + (values ? 1 : 0)) * prefixPart;

    // KV cache: B cached rows of Tmax positions per layer.
    public ArrayView<float> KeyCache(int layer, int rows) => Slice(cacheArena, keyCache[layer], (long)rows * cacheLength * KV);
    public ArrayView<float> ValueCache(int layer, int rows) => Slice(cacheArena, valueCache[layer], (long)rows * cacheLength * KV);
    public ArrayView<float> GenerationLogits(int rows) => cacheArena[generationLogits].SubView(0, (long)rows * V);

    /// <summary>Row <paramref name="row"/> (B) of the (5, B) step indices.</summary>
    public ArrayView<int> StepIndices(int row, int b) => cacheIndices[stepIndices].SubView((long)row * b, b);

    /// <summary>Sends a step's (5, B) indices.</summary>
    public void UploadStep(int[] step, int b) => cacheIndices[stepIndices].SubView(0, 5L * b).CopyFromCPU(step);

    /// <summary>The prompt-only row's dKeys (P, KV, hs) of <paramref name="layer"/>, or its dValues, as
    /// <see cref="UploadInjected"/> laid them out.</summary>
    public ArrayView<float> Injected(int layer, bool values, int rows)
    {
        long part = (long)rows * KV;
        return injectArena[injected].SubView((2 * layer + (values ? 1 : 0)) * part, part);
    }

    /// <summary>Sends dLoss/d(keys, values) (L, 2, P, KV·hs) of a prompt-only row.</summary>
    public void UploadInjected(ReadOnlySpan<float> values) => injectArena[injected].SubView(0, values.Length).CopyFromCPU(values.ToArray());

    /// <inheritdoc/>
    public void Dispose()
    {
        saved.Dispose();
        scratch.Dispose();
        indices.Dispose();
        promptArena.Dispose();
        cacheArena.Dispose();
        cacheIndices.Dispose();
        injectArena.Dispose();
    }
}
