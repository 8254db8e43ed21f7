using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Training;

namespace PromptEngine.Engine;

/// <summary>Sizes the engine's arenas once.</summary>
/// <param name="MaxRows">Largest batch B.</param>
/// <param name="MaxLength">Longest row T (prompt slots included).</param>
/// <param name="PromptRows">Rows P of the prompt bank (all prompts of the bank, stacked); 0 for none.</param>
/// <param name="Training">Save what backward needs for every layer; false keeps one layer's worth (inference).</param>
/// <param name="MaxLossPositions">Most scored positions S per batch; B·T by default.</param>
/// <param name="MaxVerbalizer">Most vocabulary rows a verbalizer restricts the softmax to.</param>
/// <param name="PrefixTokens">Deep-prompt virtual tokens Pv (prefix tuning / P-tuning v2): every layer gets Pv trainable key
/// and value vectors per kv head that all queries attend to, as Hugging Face PEFT's PREFIX_TUNING past_key_values.
/// Batches then number their positions from Pv (HF's cache_position); 0 for none.</param>
/// <param name="Recompute">Activation recomputation (training): keep only each block's input (the residual stream) and
/// re-run the block's forward in the backward, just before differentiating it; the per-layer activations shrink to one
/// layer's worth at the cost of a second forward through every block. Results are bit-identical to the normal path.</param>
/// <param name="DeepPrompts">Deep prompts of Pv virtual tokens held at once, D (inference): each batch row attends to its
/// own (<see cref="Batch.DeepPromptOfRow"/>), so rows of different tasks share one batch. Training holds one.</param>
/// <param name="WeightFormat">How the frozen block projections are stored on the device: float32, or half / bfloat16 for
/// half the memory (widened as read, accumulated in float32; see <see cref="DeviceWeights"/>).</param>
public sealed record EngineOptions(int MaxRows, int MaxLength, int PromptRows, bool Training = true, int? MaxLossPositions = null, int MaxVerbalizer = 16,
    int PrefixTokens = 0, bool Recompute = false, WeightFormat WeightFormat = WeightFormat.F32, int DeepPrompts = 1);

/// <summary>Device memory by arena, in bytes. There is no weight-gradient or weight-optimizer arena:
/// the frozen weights get neither.</summary>
/// <param name="KvCache">The generation arena (every layer's K and V cache, the step's logits and indices); 0 until the
/// first <see cref="TransformerEngine.Prefill"/> allocates it.</param>
/// <summary>The device (or, on the CPU accelerator, the process) could not give the engine the memory it plans for:
/// the message says how many bytes were asked for and for which batch shape, so that a smaller batch or length can be chosen.</summary>
public sealed class DeviceMemoryException(string message, long requestedBytes, Exception inner) : PromptEngineException(message, inner)
{
    /// <summary>Bytes the engine asked for at construction.</summary>
    public long RequestedBytes { get; } = requestedBytes;

    internal static DeviceMemoryException For(KernelContext kernels, long bytes, EngineOptions options, Exception inner) =>
        new(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"not enough memory on {kernels.Accelerator.Name}: the engine needs {bytes:N0} bytes ({bytes / (1024.0 * 1024 * 1024):F2} GiB) for batches of {options.MaxRows} rows × {options.MaxLength} positions"),
            bytes, inner);
}

public sealed record MemoryReport(long FrozenWeights, long Activations, long GradientsAndScratch, long Indices, long PromptAndOptimizer, long KvCache = 0)
{
    /// <summary>Everything the engine holds.</summary>
    public long Total => FrozenWeights + Activations + GradientsAndScratch + Indices + PromptAndOptimizer + KvCache;
}

/// <summary>
/// The transformer forward pass and the prompt-only backward pass, as flat lists of kernel launches.
/// The forward saves exactly what the backward needs; the backward runs the same list in reverse,
/// computing data gradients through the frozen blocks, and ends by accumulating into dPrompt.
/// </summary>
/// <remarks>
/// <para>Memory lives in arenas allocated once: frozen weights (<see cref="DeviceWeights"/>); saved
/// activations; gradients and scratch; the batch's index maps; the prompt and deep prefix with their gradients and
/// AdamW moments. Per call only the batch's index maps are copied to the device, and one float (the mean loss) comes
/// back. Two more are allocated on first use only: the keys' and values' gradients of a shared prompt
/// (<see cref="PromptBackward"/>), and generation's.</para>
/// <para>Generation's arenas hold the KV cache and its index maps: every layer's rotated keys and values, (B, Tmax, KV, hs) each for
/// B = MaxRows and Tmax = MaxLength, with the step's logits (B, V) and index maps. It is planned with the others
/// but allocated on the first <see cref="Prefill"/> only, once, so a training engine that never generates does
/// not pay for it. <see cref="Prefill"/> runs the ordinary forward over each row's prompt rows and tokens and
/// appends each layer's K and V to the cache as it goes; <see cref="DecodeStep"/> then runs the same list of
/// launches for one new token per row (N = B), attending with <see cref="AttentionDecode"/> to the row's cached
/// positions. Per step B·5 ints go to the device and the (B, V) logits come back.</para>
/// <para>Deep prompts (<see cref="EngineOptions.PrefixTokens"/> = Pv &gt; 0, prefix tuning / P-tuning v2) add a trainable
/// prefix (L, 2, Pv, KV·hs) to the prompt arena, a second <see cref="TrainableParameter"/> beside the prompt's (the optimizer
/// clips the two as one vector, <see cref="Trainables"/>). Each
/// layer's attention merges its Pv keys and values in after the token attention (<see cref="AttentionPrefix"/>), every
/// query of every row attending to them as to past keys, and the backward accumulates their gradient over the batch
/// rows into dPrefix. As in Hugging Face PEFT's PREFIX_TUNING, the prefixes are past_key_values: the batch's positions
/// are moved up by Pv (a batch still numbers its rows from 0), and in generation they fill cache slots [0, Pv) of
/// every row, the tokens following from slot Pv.</para>
/// </remarks>
public sealed class TransformerEngine : IDisposable
{
    readonly KernelContext kernels;
    readonly TransformerConfig config;
    readonly DeviceWeights weights;
    readonly long weightBytes;
    readonly EngineOptions options;
    readonly Arena<float> saved = new("activations");
    readonly Arena<float> scratch = new("gradients and scratch");
    readonly Arena<int> indices = new("indices");
    readonly Arena<float> promptArena = new("prompt and optimizer");
    readonly Arena<float> cacheArena = new("kv cache");
    readonly Arena<int> cacheIndices = new("kv cache indices");
    readonly Arena<float> injectArena = new("prompt key/value gradients"); // allocated by the first PromptBackward
    readonly int maxN, maxS, maxWidth, savedLayers;

    // Saved activations (handles into `saved`); per layer unless noted.
    readonly int[] residual;   // (L+1) × (N, C): the residual stream entering each block, and leaving the last
    readonly int[] mid;        // (N, C) residual stream between attention and MLP
    readonly int[] rstd1, rstd2, mean1, mean2; // (N) norm statistics (means for LayerNorm only)
    readonly int[] q, k, v;    // (N, H*hs), (N, KV*hs), (N, KV*hs); q and k after RoPE
    readonly int[] attention;  // (N, H*hs) attention output
    readonly int[] lse;        // (B, H, T) attention log-sum-exp
    readonly int[] preActivation; // (N, I) GPT-2's up projection, or (N, 2I) Llama's gate then up per row
    readonly int finalNorm, finalRstd, finalMean; // (N, C), (N), (N)

    // Scratch and activation gradients (handles into `scratch`).
    readonly int ln, projection, activated;             // (N, C), (N, C), (N, I)
    readonly int qkv;                                   // (N, (H+2KV)*hs): the fused q/k/v projection, then its gradient
    readonly int dResidual, dLn, dTemp;                 // (N, C)
    readonly int dAttention, dQ, dK, dV, delta;         // (N, H*hs), (N, H*hs), (N, KV*hs), (N, KV*hs), (B, H, T)
    readonly int dActivated, dPreActivation;            // (N, I), and (N, I) or (N, 2I) as preActivation
    readonly int losses, meanLoss, logits;              // (S), (1), (S, V or R): logits, then dLogits in place
    readonly int scoredAttention, scoredInput, dScored; // (S, H*hs), (S, C), (S, C): the last block at the scored rows only

    // Batch maps (handles into `indices`).
    readonly int sourceMap, keyMask, positionIds, lossPositions, targets, verbalizer, useOffsets, usePositions;
    readonly int scoredRows; // (S) 0, 1, …, S−1: the loss's rows once the last block has compacted them
    readonly int deepPromptOfRow; // (B) which of the D deep prompts each row attends to
    readonly int headTargets; // (S) class index of each scored position's target, −1 to ignore (a classifier head's targets)
    ClassifierHead? head;     // when attached, replaces the LM head's verbalizer rows in the loss and the logits

    // Prompt arena: the prompt and the deep prefix, each with its gradient and AdamW moments, and the optimizer's scratch.
    readonly int prompt, dPrompt, adamM, adamV;     // (P, C) ×4
    readonly int prefix, dPrefix, prefixM, prefixV; // (L, 2, Pv, KV*hs) ×4: per layer its keys, then its values
    readonly int optimizerScratch;                  // (AdamWOptimizer.ScratchLength)
    TrainableParameter[] trainables = [];           // the prompt and the prefix (those that exist) of a training engine
    AdamWOptimizer? optimizer;

    // KV cache arena (allocated by the first Prefill).
    readonly int[] keyCache, valueCache; // per layer (B, Tmax, KV*hs), B = MaxRows, Tmax = MaxLength; keys after RoPE
    readonly int generationLogits;       // (B, V) logits of each row's newest position
    readonly int stepIndices;            // (5, B): tokens, position ids, cache slots written, attended lengths, logit rows
    bool cacheAllocated;
    readonly int injected;   // (L, 2, Tmax, KV*hs) dLoss/d(keys, values) of a prompt-only row (PromptBackward)
    bool injectAllocated;
    int[] cacheLengths = [];             // host copy: valid cached positions per row of the last Prefill

    /// <summary>Which way <see cref="Forward"/> uses the KV cache.</summary>
    enum CacheMode
    {
        /// <summary>Training and scoring: no cache.</summary>
        None,
        /// <summary>Prefill: the ordinary forward over the batch, appending every layer's K and V to the cache.</summary>
        Fill,
        /// <summary>One new token per row (T = 1), attending to the cache.</summary>
        Decode,
    }

    Batch? current;
    // The current forward ran the last block after its attention, the final norm and the loss at the scored rows only
    // (see ScoredRowsOnly); the backward and the loss follow it.
    bool scoredOnly;
    int promptUseCount; // positions of the current batch that read a prompt row (length of usePositions)
    int decodeRows;

    /// <summary>The model's configuration.</summary>
    public TransformerConfig Config => config;

    /// <summary>Builds the engine: uploads the frozen weights once (block projections in
    /// <see cref="EngineOptions.WeightFormat"/>) and plans every arena for <paramref name="options"/>.</summary>
    public TransformerEngine(KernelContext kernels, ModelFolder model, EngineOptions options)
        : this(kernels, model.Config, () => DeviceWeights.Upload(kernels, model, options.WeightFormat), options)
    {
    }

    /// <summary>Builds the engine on weights already on the device (e.g. <see cref="DeviceWeights.Generate"/>), which
    /// it then owns and disposes; their format is the one that counts, whatever <paramref name="options"/> says.</summary>
    public TransformerEngine(KernelContext kernels, DeviceWeights weights, EngineOptions options)
        : this(kernels, weights.Config, () => weights, options with { WeightFormat = weights.Format }, given: weights)
    {
    }

    /// <summary>The device memory an engine for <paramref name="config"/> and <paramref name="options"/> takes, by arena,
    /// computed from the same plan the constructor allocates, without a device (the KV cache is not counted: it is
    /// allocated by the first <see cref="Prefill"/> only).</summary>
    public static MemoryReport PlanMemory(TransformerConfig config, EngineOptions options)
    {
        using var plan = new TransformerEngine(null, config, null, options);
        return plan.Memory;
    }

    /// <summary>Plans every arena; with a <paramref name="kernels"/> context, also places the weights
    /// (<paramref name="placeWeights"/>) and allocates the arenas; without one, only plans (<see cref="PlanMemory"/>).
    /// Weights <paramref name="given"/> by the caller are disposed when the options are refused, as the engine owns them.</summary>
    TransformerEngine(KernelContext? kernels, TransformerConfig modelConfig, Func<DeviceWeights>? placeWeights, EngineOptions options, DeviceWeights? given = null)
    {
        try { CheckOptions(modelConfig, options); }
        catch
        {
            given?.Dispose();
            throw;
        }
        this.kernels = kernels!;
        this.options = options;
        config = modelConfig;
        int L = config.NumLayers, C = config.HiddenSize, Q = config.NumHeads * config.HeadDim, KV = config.NumKvHeads * config.HeadDim, I = config.IntermediateSize;
        maxN = options.MaxRows * options.MaxLength;
        maxS = options.MaxLossPositions ?? maxN;
        maxWidth = config.VocabSize;
        savedLayers = options.Training && !options.Recompute ? L : 1;
        long headsRows = (long)options.MaxRows * config.NumHeads * options.MaxLength;
        bool gpt2 = config.Family == ModelFamily.Gpt2;

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
        preActivation = PerLayer(gpt2 ? "up (N, I)" : "gate and up (N, 2I)", (long)maxN * (gpt2 ? I : 2 * I));
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
        dAttention = scratch.Reserve("dAttention (N, H*hs)", options.Training ? (long)maxN * Q : 0);
        dQ = scratch.Reserve("dQ (N, H*hs)", options.Training ? (long)maxN * Q : 0);
        dK = scratch.Reserve("dK (N, KV*hs)", options.Training ? (long)maxN * KV : 0);
        dV = scratch.Reserve("dV (N, KV*hs)", options.Training ? (long)maxN * KV : 0);
        delta = scratch.Reserve("delta (B, H, T)", options.Training ? headsRows : 0);
        dActivated = scratch.Reserve("dActivated (N, I)", options.Training ? (long)maxN * I : 0);
        dPreActivation = scratch.Reserve(gpt2 ? "dUp (N, I)" : "dGate and dUp (N, 2I)", options.Training ? (long)maxN * (gpt2 ? I : 2 * I) : 0);
        losses = scratch.Reserve("losses (S)", maxS);
        meanLoss = scratch.Reserve("mean loss (1)", 1);
        logits = scratch.Reserve("logits / dLogits (S, V)", (long)maxS * maxWidth);
        scoredAttention = scratch.Reserve("scored rows' attention (S, H*hs)", (long)maxS * Q);
        scoredInput = scratch.Reserve("scored rows' block input (S, C)", (long)maxS * C);
        dScored = scratch.Reserve("dScored: the scored rows' residual gradient (S, C)", options.Training ? (long)maxS * C : 0);

        sourceMap = indices.Reserve("source map (N)", maxN);
        keyMask = indices.Reserve("key mask (N)", maxN);
        positionIds = indices.Reserve("position ids (N)", maxN);
        lossPositions = indices.Reserve("loss positions (S)", maxS);
        targets = indices.Reserve("targets (S)", maxS);
        verbalizer = indices.Reserve("verbalizer (R)", options.MaxVerbalizer);
        useOffsets = indices.Reserve("prompt use offsets (P+1)", options.PromptRows + 1);
        usePositions = indices.Reserve("prompt use positions (N)", maxN);
        scoredRows = indices.Reserve("scored rows 0..S-1 (S)", maxS);
        deepPromptOfRow = indices.Reserve("deep prompt of each row (B)", options.DeepPrompts > 1 ? options.MaxRows : 0);
        headTargets = indices.Reserve("head targets (S)", maxS);

        long promptLength = (long)options.PromptRows * C;
        long prefixLength = PrefixLengthOf(config, options.PrefixTokens);
        long trainable = options.Training ? 1 : 0;
        prompt = promptArena.Reserve("prompt (P, C)", promptLength);
        prefix = promptArena.Reserve("prefix (L, 2, D·Pv, KV*hs)", prefixLength * options.DeepPrompts);
        dPrompt = promptArena.Reserve("dPrompt (P, C)", trainable * promptLength);
        dPrefix = promptArena.Reserve("dPrefix (L, 2, Pv, KV*hs)", trainable * prefixLength);
        adamM = promptArena.Reserve("AdamW m (P, C)", trainable * promptLength);
        prefixM = promptArena.Reserve("AdamW m of the prefix", trainable * prefixLength);
        adamV = promptArena.Reserve("AdamW v (P, C)", trainable * promptLength);
        prefixV = promptArena.Reserve("AdamW v of the prefix", trainable * prefixLength);
        optimizerScratch = promptArena.Reserve("optimizer scratch: sum of squares, clip scale, norm partials (66)", AdamWOptimizer.ScratchLength);

        long cacheLength = (long)options.MaxRows * options.MaxLength * KV;
        keyCache = Enumerable.Range(0, L).Select(l => cacheArena.Reserve($"key cache[{l}] (B, Tmax, KV*hs)", cacheLength)).ToArray();
        valueCache = Enumerable.Range(0, L).Select(l => cacheArena.Reserve($"value cache[{l}] (B, Tmax, KV*hs)", cacheLength)).ToArray();
        generationLogits = cacheArena.Reserve("generation logits (B, V)", (long)options.MaxRows * config.VocabSize);
        stepIndices = cacheIndices.Reserve("step indices (5, B)", 5L * options.MaxRows);
        injected = injectArena.Reserve("dKeys, dValues (L, 2, Tmax, KV*hs)", 2L * L * options.MaxLength * KV);

        if (kernels is null || placeWeights is null)
        {
            weights = null!;
            weightBytes = DeviceWeights.PlannedBytes(config, options.WeightFormat);
            return;
        }
        try
        {
            weights = placeWeights();
        }
        catch (Exception e) when (e is OutOfMemoryException or ILGPU.Runtime.AcceleratorException)
        {
            throw DeviceMemoryException.For(kernels, PlannedBytes(), options, e);
        }
        weightBytes = weights.Bytes;
        try
        {
            saved.Allocate(kernels.Accelerator);
            scratch.Allocate(kernels.Accelerator);
            indices.Allocate(kernels.Accelerator);
            indices[scoredRows].CopyFromCPU(Enumerable.Range(0, maxS).ToArray());
            promptArena.Allocate(kernels.Accelerator);
            if (options.Training)
            {
                var moved = new List<TrainableParameter>();
                if (promptLength > 0)
                    moved.Add(new("prompt (P, C)", ParameterGroup.Prompt, promptArena[prompt], promptArena[dPrompt], promptArena[adamM], promptArena[adamV]));
                if (prefixLength > 0)
                    moved.Add(new("prefix (L, 2, Pv, KV*hs)", ParameterGroup.Prompt, promptArena[prefix], promptArena[dPrefix], promptArena[prefixM], promptArena[prefixV]));
                trainables = [.. moved];
                trainables.ResetOptimizer();
                optimizer = new AdamWOptimizer(kernels, promptArena[optimizerScratch]);
            }
        }
        catch (Exception e) when (e is OutOfMemoryException or ILGPU.Runtime.AcceleratorException)
        {
            Dispose();
            throw DeviceMemoryException.For(kernels, PlannedBytes(), options, e);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    static void CheckOptions(TransformerConfig config, EngineOptions options)
    {
        if (options.MaxRows <= 0 || options.MaxLength <= 0) throw new ArgumentException($"engine: batch {options.MaxRows}×{options.MaxLength} must be positive");
        if (options.MaxLength > config.MaxPositions)
            throw new ArgumentException($"engine: sequence length {options.MaxLength} exceeds the model's {config.MaxPositions} positions");
        if (options.MaxLength > config.ContextLength)
            throw new SlidingWindowException(config, options.MaxLength);
        if (options.PrefixTokens < 0) throw new ArgumentException($"engine: {options.PrefixTokens} prefix tokens");
        if (options.DeepPrompts < 1) throw new ArgumentException($"engine: {options.DeepPrompts} deep prompts; at least 1");
        if (options.DeepPrompts > 1 && options.Training)
            throw new ArgumentException($"engine: training holds one deep prompt, not {options.DeepPrompts}; several are for inference (EngineOptions.Training = false)");
        // Each batch checks its own Pv + positions against the model (Load); the cache's Pv + tokens against MaxLength (Prefill).
        if (options.PrefixTokens >= config.ContextLength)
            throw new ArgumentException($"engine: {options.PrefixTokens} prefix tokens leave no room in the model's {config.ContextLength} positions");
    }

    /// <summary>Bytes the engine asks the device for at construction: the weights and every arena planned for the options
    /// (the KV cache and the prompt-only gradients come later, when first used).</summary>
    long PlannedBytes() =>
        DeviceWeights.PlannedBytes(config, options.WeightFormat) + saved.Bytes + scratch.Bytes + indices.Bytes + promptArena.Bytes;

    /// <summary>Device memory by arena (the key/value gradients of <see cref="PromptBackward"/>, once allocated, count as scratch).</summary>
    public MemoryReport Memory => new(weightBytes, saved.Bytes, scratch.Bytes + (injectAllocated ? injectArena.Bytes : 0), indices.Bytes, promptArena.Bytes,
        cacheAllocated ? cacheArena.Bytes + cacheIndices.Bytes : 0);

    /// <summary>Rows P of the prompt bank.</summary>
    public int PromptRows => options.PromptRows;

    /// <summary>The sizes the engine was built for (largest batch B and row length T, which are also the KV cache's rows and capacity).</summary>
    public EngineOptions Options => options;

    /// <summary>Valid cached positions of each row of the last <see cref="Prefill"/>, advanced by every <see cref="DecodeStep"/>;
    /// empty before the first prefill.</summary>
    public IReadOnlyList<int> CacheLengths => cacheLengths;

    /// <summary>Replaces the prompt bank (P, C) with <paramref name="values"/> and resets its gradient and AdamW state.</summary>
    public void SetPrompt(ReadOnlySpan<float> values)
    {
        var length = (long)options.PromptRows * config.HiddenSize;
        if (values.Length != length) throw new ArgumentException($"prompt: {values.Length} values given, the bank holds P·C = {options.PromptRows}·{config.HiddenSize} = {length}");
        if (length == 0) return;
        promptArena[prompt].CopyFromCPU(values.ToArray());
        trainables.ResetOptimizer();
    }

    /// <summary>Elements of the deep prefix (L, 2, Pv, KV·hs) for <paramref name="prefixTokens"/> = Pv.</summary>
    public static long PrefixLengthOf(TransformerConfig config, int prefixTokens) =>
        (long)config.NumLayers * 2 * prefixTokens * config.NumKvHeads * config.HeadDim;

    /// <summary>Deep-prompt virtual tokens Pv (0: no prefix).</summary>
    public int PrefixTokens => options.PrefixTokens;

    /// <summary>Elements of the deep prefix, L·2·Pv·KV·hs.</summary>
    public long PrefixLength => PrefixLengthOf(config, options.PrefixTokens);

    /// <summary>What a training engine's optimizer moves: the prompt (P, C), then the deep prefix (L, 2, Pv, KV·hs), those
    /// the engine has, one <see cref="ParameterGroup.Prompt"/> group; empty for an inference engine.</summary>
    public IReadOnlyList<TrainableParameter> Trainables => trainables;

    /// <summary>A training engine's optimizer, its scratch planned in the prompt arena; it steps the engine's
    /// <see cref="Trainables"/> and any other module on the same kernel context (a prefix projection, a classifier head).</summary>
    internal AdamWOptimizer Optimizer => optimizer ?? throw new InvalidOperationException("engine: built for inference (EngineOptions.Training = false)");

    /// <summary>Replaces the deep prefix (L, 2, Pv, KV·hs) — per layer Pv keys then Pv values, each (KV, hs), keys as
    /// attention uses them (no RoPE is applied) — and resets the gradient and AdamW state.</summary>
    public void SetPrefix(ReadOnlySpan<float> values)
    {
        if (options.DeepPrompts > 1)
            throw new InvalidOperationException($"prefix: the engine holds {options.DeepPrompts} deep prompts; give them all with SetDeepPrompts");
        if (values.Length != PrefixLength)
            throw new ArgumentException($"prefix: {values.Length} values given, the engine's deep prefix holds L·2·Pv·KV·hs = {PrefixLength}");
        if (PrefixLength == 0) return;
        promptArena[prefix].CopyFromCPU(values.ToArray());
        trainables.ResetOptimizer();
    }

    /// <summary>Replaces the engine's D deep prompts (<see cref="EngineOptions.DeepPrompts"/>), each (L, 2, Pv, KV·hs) as
    /// <see cref="SetPrefix"/> takes one; batch rows choose among them by index (<see cref="Batch.DeepPromptOfRow"/>).</summary>
    /// <exception cref="ArgumentException">Not D prompts, or one of the wrong length.</exception>
    public void SetDeepPrompts(IReadOnlyList<float[]> prompts)
    {
        int D = options.DeepPrompts;
        if (prompts.Count != D) throw new ArgumentException($"deep prompts: {prompts.Count} given, the engine holds D = {D}");
        if (PrefixLength == 0) return;
        // Engine layout of the bank: per layer, its keys (D·Pv, KV·hs), then its values, prompt d at rows d·Pv…
        long part = (long)options.PrefixTokens * config.NumKvHeads * config.HeadDim;
        var bank = new float[D * PrefixLength];
        for (var d = 0; d < D; d++)
        {
            if (prompts[d].Length != PrefixLength)
                throw new ArgumentException($"deep prompt {d}: {prompts[d].Length} values given, a deep prompt holds L·2·Pv·KV·hs = {PrefixLength}");
            for (var slice = 0; slice < 2 * config.NumLayers; slice++)
                Array.Copy(prompts[d], slice * part, bank, (slice * D + d) * part, part);
        }
        promptArena[prefix].CopyFromCPU(bank);
    }

    /// <summary>The deep prefix (L, 2, Pv, KV·hs), copied to the host (with several deep prompts: all of them, per layer
    /// and keys/values stacked as <see cref="SetDeepPrompts"/> lays them out).</summary>
    public float[] GetPrefix() => PrefixLength == 0 ? [] : ToHost(promptArena[prefix]);

    /// <summary>dLoss/dPrefix (L, 2, Pv, KV·hs) accumulated since the last <see cref="ZeroPromptGradient"/>, copied to the host.</summary>
    public float[] GetPrefixGradient() => PrefixLength == 0 || !options.Training ? [] : ToHost(promptArena[dPrefix]);

    /// <summary>The kernel context the engine launches on; the prefix projection runs on the same one.</summary>
    internal KernelContext Kernels => kernels;

    /// <summary>The deep prefix (L, 2, Pv, KV·hs) on the device, for <see cref="Prompts.PrefixProjection"/> to write its
    /// output into (unlike <see cref="SetPrefix"/>, writing here leaves the gradient and optimizer state alone).</summary>
    internal ArrayView<float> PrefixView => promptArena[prefix];

    /// <summary>dPrefix (L, 2, Pv, KV·hs) on the device, for <see cref="Prompts.PrefixProjection"/> to differentiate
    /// through; empty for an inference engine.</summary>
    internal ArrayView<float> PrefixGradientView => promptArena[dPrefix];

    /// <summary>Layer <paramref name="layer"/>'s prefix keys (Pv, KV, hs) in the arena handle <paramref name="handle"/>,
    /// or its values when <paramref name="values"/>.</summary>
    ArrayView<float> PrefixSlice(int handle, int layer, bool values)
    {
        // The D deep prompts of a bank lie stacked in each layer's keys and values (D = 1 whenever there is a gradient).
        long part = (long)options.DeepPrompts * options.PrefixTokens * config.NumKvHeads * config.HeadDim;
        return promptArena[handle].SubView((2L * layer + (values ? 1 : 0)) * part, part);
    }

    /// <summary>The prompt bank (P, C), copied to the host.</summary>
    public float[] GetPrompt() => options.PromptRows == 0 ? [] : ToHost(promptArena[prompt]);

    /// <summary>dLoss/dPrompt (P, C) accumulated since the last <see cref="ZeroPromptGradient"/>, copied to the host.</summary>
    public float[] GetPromptGradient() => options.PromptRows == 0 || !options.Training ? [] : ToHost(promptArena[dPrompt]);

    /// <summary>Clears dPrompt and dPrefix (start of a step; several batches between clears accumulate).</summary>
    public void ZeroPromptGradient()
    {
        trainables.ZeroGradient();
    }

    /// <summary>Forward, loss and backward: returns the mean loss over the batch's scored positions and
    /// ADDS dLoss/dPrompt into the prompt gradient.</summary>
    public float LossAndPromptGradient(Batch batch)
    {
        if (!options.Training) throw new InvalidOperationException("engine: built for inference (EngineOptions.Training = false)");
        Load(batch);
        Forward(training: true);
        var loss = LossForward();
        LossBackward();
        Backward();
        return loss;
    }

    /// <summary>Forward and loss only (evaluation); saves nothing beyond one layer.</summary>
    public float Loss(Batch batch)
    {
        Load(batch);
        Forward(training: false);
        return LossForward();
    }

    /// <summary>The final norm's output (S, C) at the batch's scored positions, in their order: the features a classifier head
    /// reads. Lets rows of one batch go through different heads (several tasks in one batch), each applied by the caller.</summary>
    public float[] ScoredHiddenStates(Batch batch)
    {
        Load(batch);
        Forward(training: false);
        int s = current!.LossPositions.Length, C = config.HiddenSize;
        if (s == 0) throw new ArgumentException("batch has no scored positions: no hidden states to return");
        var (n, rows) = LossRows();
        if (scoredOnly) return ToHost(View(saved, finalNorm, (long)s * C)); // the forward kept only those rows, in order
        var gathered = View(scratch, scoredInput, (long)s * C);
        kernels.RowGather.Forward(gathered, View(saved, finalNorm, (long)n * C), rows, n, s, C);
        return ToHost(gathered);
    }

    /// <summary>Logits (S, V), or (S, R) over the batch's verbalizer, at the batch's scored positions only; with a
    /// <see cref="Head"/>, the head's (S, R) logits (one column per class, the verbalizer's order).</summary>
    public float[] Logits(Batch batch)
    {
        Load(batch);
        Forward(training: false);
        var (s, r) = (current!.LossPositions.Length, current.Verbalizer?.Length ?? 0);
        var (n, rows) = LossRows();
        if (head is not null)
        {
            HeadTargets(current); // checks the batch against the head
            var headLogits = View(scratch, logits, (long)s * head.Classes);
            kernels.CrossEntropy.Logits(headLogits, View(saved, finalNorm, (long)n * config.HiddenSize), rows,
                head.WeightView, default, n, config.HiddenSize, s, head.Classes, 0, head.BiasView);
            return ToHost(headLogits);
        }
        var view = View(scratch, logits, (long)s * (r > 0 ? r : config.VocabSize));
        kernels.CrossEntropy.Logits(view, View(saved, finalNorm, (long)n * config.HiddenSize), rows,
            weights.LmHead, View(indices, verbalizer, r), n, config.HiddenSize, s, config.VocabSize, r);
        return ToHost(view);
    }

    /// <summary>The classifier head attached with <see cref="AttachHead"/>, or null: the LM head (restricted to a batch's
    /// verbalizer) scores the answer position.</summary>
    public ClassifierHead? Head => head;

    /// <summary>Attaches a linear classifier head (or detaches it with null): from now on the loss and <see cref="Logits"/>
    /// score a batch's answer positions with it instead of the LM head's verbalizer rows, and a training engine's backward
    /// ADDS the head's gradient into it (clear it with <see cref="ClassifierHead.ZeroGradient"/>). The head is not owned:
    /// dispose it yourself. Batches must then carry a verbalizer of the head's R words, in its label order.</summary>
    /// <exception cref="ArgumentException">The head runs on another kernel context or reads another width.</exception>
    public void AttachHead(ClassifierHead? head)
    {
        if (head is not null)
        {
            if (!ReferenceEquals(head.Kernels, kernels))
                throw new ArgumentException("classifier head: it lives on another kernel context; build it on the engine's", nameof(head));
            if (head.Width != config.HiddenSize)
                throw new ArgumentException($"classifier head: it reads width {head.Width}, the model's hidden size is {config.HiddenSize}", nameof(head));
            if (head.Classes > maxWidth)
                throw new ArgumentException($"classifier head: {head.Classes} classes exceed the engine's logits scratch of {maxWidth} columns", nameof(head));
        }
        this.head = head;
    }

    /// <summary>The LM head's rows of <paramref name="tokenIds"/> (count, C), copied to the host (a head's initial weight).</summary>
    /// <exception cref="ArgumentException">An id outside the vocabulary.</exception>
    internal float[] LmHeadRows(IReadOnlyList<int> tokenIds)
    {
        int C = config.HiddenSize;
        var result = new float[(long)tokenIds.Count * C];
        for (var i = 0; i < tokenIds.Count; i++)
        {
            if (tokenIds[i] < 0 || tokenIds[i] >= config.VocabSize)
                throw new ArgumentException($"LM head rows: token {tokenIds[i]} is outside the vocabulary of {config.VocabSize}");
            ToHost(weights.LmHead.SubView((long)tokenIds[i] * C, C)).CopyTo(result, (long)i * C);
        }
        return result;
    }

    /// <summary>Each scored position's target as a class index (its column in the batch's verbalizer), −1 kept.</summary>
    int[] HeadTargets(Batch batch)
    {
        if (batch.Verbalizer is not { } words || words.Length != head!.Classes)
            throw new ArgumentException($"classifier head of {head!.Classes} classes: the batch needs a verbalizer of {head.Classes} label words (has {batch.Verbalizer?.Length ?? 0})");
        return batch.Targets.Select(t => t < 0 ? -1 : Array.IndexOf(words, t)).ToArray();
    }

    /// <summary>Starts cached generation: runs the forward over <paramref name="batch"/> (each row its prompt rows and
    /// tokens, right-padded as <see cref="BatchBuilder"/> builds them), writes every layer's K and V of every row into
    /// the KV cache, and returns the logits (B, V) at each row's last real position. Replaces whatever was cached.</summary>
    /// <param name="batch">Rows whose key mask is 1 on a prefix of the row (its length) and 0 after, with position ids
    /// 0, 1, … on that prefix, so the cache slot of a position is its position id (plus Pv with a deep prompt, whose
    /// prefixes fill slots [0, Pv)). Loss positions are ignored.</param>
    /// <exception cref="ArgumentException">The batch does not fit the engine, names a token or prompt row out of range,
    /// or a row is empty, has a hole in its key mask or positions that do not count from 0.</exception>
    public float[] Prefill(Batch batch)
    {
        int B = batch.Rows, T = batch.Length;
        if (B > options.MaxRows || T > options.MaxLength)
            throw new ArgumentException($"prefill: batch {B}×{T} exceeds the engine's {options.MaxRows}×{options.MaxLength}");
        batch.Validate(config.VocabSize, options.PromptRows, config.ContextLength - options.PrefixTokens);
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
        EnsureCache();
        Load(batch with { LossPositions = [], Targets = [], Verbalizer = null });
        decodeRows = B;
        int Pv = options.PrefixTokens;
        if (Pv + T > options.MaxLength)
            throw new ArgumentException($"prefill: {Pv} prefix tokens + length {T} exceed the engine's cache of {options.MaxLength} positions");
        var step = new int[5 * B];
        for (var b = 0; b < B; b++)
        {
            step[2 * B + b] = Pv; // each row fills from its start, after the deep prefix's slots
            step[4 * B + b] = b * T + lengths[b] - 1;
        }
        UploadStep(step, B);
        if (Pv > 0) // a deep prompt's keys and values sit in the cache like past positions (as PEFT's past_key_values)
        {
            long cache = (long)B * options.MaxLength * config.NumKvHeads * config.HeadDim;
            for (var l = 0; l < config.NumLayers; l++)
                kernels.AttentionPrefix.FillCache(new(View(cacheArena, keyCache[l], cache), View(cacheArena, valueCache[l], cache)),
                    new(PrefixSlice(prefix, l, false), PrefixSlice(prefix, l, true)), B, options.MaxLength, config.NumKvHeads, config.HeadDim, Pv, DeepPromptOfRow(B));
        }
        Forward(training: false, CacheMode.Fill);
        for (var b = 0; b < B; b++) lengths[b] += Pv;
        cacheLengths = lengths;
        return GenerationLogits(B * T, B);
    }

    /// <summary>One generation step: embeds <paramref name="tokens"/>[b] at position <see cref="CacheLengths"/>[b] of each
    /// cached row, runs every block for that one position against the row's cached keys and values (appending its
    /// own), and returns the logits (B, V) of the new positions. A negative token leaves its row idle: nothing is
    /// written to its cache, its length stays, and its logits row is meaningless (finished rows in a batch).</summary>
    /// <param name="tokens">(B) the next token of each row of the last <see cref="Prefill"/>, or −1 for an idle row.</param>
    /// <exception cref="InvalidOperationException">Nothing was prefilled.</exception>
    /// <exception cref="ArgumentException">Wrong count, a token outside the vocabulary, or a row whose cache is full
    /// (<see cref="EngineOptions.MaxLength"/> positions).</exception>
    public float[] DecodeStep(ReadOnlySpan<int> tokens)
    {
        int B = cacheLengths.Length;
        if (B == 0) throw new InvalidOperationException("decode: nothing is cached; call Prefill first");
        if (tokens.Length != B) throw new ArgumentException($"decode: {tokens.Length} tokens given for {B} cached rows");
        var step = new int[5 * B];
        for (var b = 0; b < B; b++)
        {
            int token = tokens[b], length = cacheLengths[b];
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
        decodeRows = B;
        UploadStep(step, B);
        Forward(training: false, CacheMode.Decode);
        for (var b = 0; b < B; b++)
            if (tokens[b] >= 0) cacheLengths[b]++;
        return GenerationLogits(B, B);
    }

    /// <summary>Exact prompt-KV reuse: runs the prompt-bank rows <paramref name="promptRows"/> alone, as a prefix at
    /// positions 0..P−1, and returns the keys (rotated) and values every layer computes there, in the deep-prefix layout
    /// (L, 2, P, KV·hs). With prefix placement and causal attention those positions never see the input, so an engine
    /// built with <see cref="EngineOptions.PrefixTokens"/> = P holding this as its prefix (<see cref="SetPrefix"/>)
    /// computes for any input exactly what this engine computes with the prompt in front of it, without recomputing
    /// the P prompt positions per row, per request or per generation step. Uses (and clears) the KV cache.</summary>
    /// <exception cref="ArgumentException">No rows, a row outside the bank, more rows than the engine's length.</exception>
    /// <exception cref="InvalidOperationException">This engine has a deep prefix of its own.</exception>
    public float[] PromptKeysAndValues(IReadOnlyList<int> promptRows)
    {
        if (options.PrefixTokens > 0) throw new InvalidOperationException("prompt KV: the engine has a deep prefix of its own; use an engine without one");
        int P = promptRows.Count;
        if (P == 0 || P > options.MaxLength) throw new ArgumentException($"prompt KV: {P} prompt rows; between 1 and the engine's length {options.MaxLength}");
        foreach (var row in promptRows)
            if (row < 0 || row >= options.PromptRows) throw new ArgumentException($"prompt KV: prompt row {row} is outside the bank of {options.PromptRows} rows");
        Prefill(BatchBuilder.Build([promptRows.Select(Slot.Prompt).ToList()]));
        cacheLengths = [];
        long part = (long)P * config.NumKvHeads * config.HeadDim; // row 0 of the cache starts with its P slots
        var result = new float[2 * config.NumLayers * part];
        for (var l = 0; l < config.NumLayers; l++)
        {
            ToHost(cacheArena[keyCache[l]].SubView(0, part)).CopyTo(result, 2 * l * part);
            ToHost(cacheArena[valueCache[l]].SubView(0, part)).CopyTo(result, (2 * l + 1) * part);
        }
        return result;
    }

    /// <summary>Shared prompt KV in training, first half: the training forward of the prompt rows alone (one row, positions
    /// 0..P−1), saving what <see cref="PromptBackward"/> needs, and their keys and values in the deep-prefix layout
    /// (L, 2, P, KV·hs). Give them to an engine with <see cref="EngineOptions.PrefixTokens"/> = P
    /// (<see cref="SetPrefix"/>) to train every row of a batch against one computation of the prompt.</summary>
    /// <exception cref="InvalidOperationException">An inference engine, a recomputing one, or one with a deep prefix.</exception>
    /// <exception cref="ArgumentException">No rows, or a row outside the bank.</exception>
    public float[] PromptForward(IReadOnlyList<int> promptRows)
    {
        if (!options.Training || options.Recompute || options.PrefixTokens > 0)
            throw new InvalidOperationException("prompt forward: needs a training engine without recomputation or a deep prefix");
        int P = promptRows.Count;
        if (P == 0 || P > options.MaxLength) throw new ArgumentException($"prompt forward: {P} prompt rows; between 1 and the engine's length {options.MaxLength}");
        Load(BatchBuilder.Build([promptRows.Select(Slot.Prompt).ToList()]));
        Forward(training: true);
        long part = (long)P * config.NumKvHeads * config.HeadDim;
        var result = new float[2 * config.NumLayers * part];
        for (var l = 0; l < config.NumLayers; l++)
        {
            ToHost(View(saved, k[l], part)).CopyTo(result, 2 * l * part);
            ToHost(View(saved, v[l], part)).CopyTo(result, (2 * l + 1) * part);
        }
        return result;
    }

    /// <summary>Shared prompt KV in training, second half: the backward of the last <see cref="PromptForward"/> when its
    /// only loss is through its keys and values, <paramref name="dKeysAndValues"/> (L, 2, P, KV·hs) — the dPrefix that the
    /// rows attending to them accumulated (<see cref="GetPrefixGradient"/>). ADDS dLoss/dPrompt into the prompt gradient,
    /// exactly what running every row with the prompt in front would have added.</summary>
    /// <exception cref="InvalidOperationException">No <see cref="PromptForward"/> before.</exception>
    /// <exception cref="ArgumentException">A gradient of the wrong length.</exception>
    public void PromptBackward(ReadOnlySpan<float> dKeysAndValues)
    {
        if (current is not { Rows: 1 } batch || !options.Training) throw new InvalidOperationException("prompt backward: call PromptForward first");
        int P = batch.Length;
        long part = (long)P * config.NumKvHeads * config.HeadDim;
        if (dKeysAndValues.Length != 2 * config.NumLayers * part)
            throw new ArgumentException($"prompt backward: {dKeysAndValues.Length} values given, (L, 2, P, KV·hs) = {2 * config.NumLayers * part}");
        if (!injectAllocated)
        {
            injectArena.Allocate(kernels.Accelerator);
            injectAllocated = true;
        }
        injectArena[injected].SubView(0, dKeysAndValues.Length).CopyFromCPU(dKeysAndValues.ToArray());
        View(scratch, dResidual, (long)P * config.HiddenSize).MemSetToZero(); // no loss at the prompt positions themselves
        Backward(injectedRows: P);
    }

    void EnsureCache()
    {
        if (cacheAllocated) return;
        cacheArena.Allocate(kernels.Accelerator);
        cacheIndices.Allocate(kernels.Accelerator);
        cacheAllocated = true;
    }

    /// <summary>Each row's choice among several deep prompts, or empty (one deep prompt, every row's).</summary>
    ArrayView<int> DeepPromptOfRow(int rows) => options.DeepPrompts > 1 ? View(indices, deepPromptOfRow, rows) : default;

    /// <summary>Row <paramref name="row"/> (B) of the (5, B) step indices.</summary>
    ArrayView<int> StepIndices(int row, int b) => cacheIndices[stepIndices].SubView((long)row * b, b);

    void UploadStep(int[] step, int b) => cacheIndices[stepIndices].SubView(0, 5L * b).CopyFromCPU(step);

    /// <summary>(B, V) logits of the final-norm rows listed in the step's logit rows, copied to the host.</summary>
    float[] GenerationLogits(int n, int b)
    {
        var view = cacheArena[generationLogits].SubView(0, (long)b * config.VocabSize);
        kernels.CrossEntropy.Logits(view, View(saved, finalNorm, (long)n * config.HiddenSize), StepIndices(4, b),
            weights.LmHead, default, n, config.HiddenSize, b, config.VocabSize, 0);
        return ToHost(view);
    }

    /// <summary>One AdamW step on <see cref="Trainables"/> (the prompt and the deep prefix, clipped as one vector) from the
    /// accumulated gradient, after dividing it by <paramref name="accumulatedBatches"/> and clipping its norm to
    /// <paramref name="maxGradNorm"/> (≤ 0: no clipping); see <see cref="AdamWOptimizer.Step(IReadOnlyList{TrainableParameter}, AdamWSettings, int)"/>.
    /// Returns the gradient norm before clipping.</summary>
    /// <exception cref="NonFiniteGradientException">The gradient holds NaN or ∞; the prompt and the optimizer
    /// state are left untouched, so the last good state can be saved.</exception>
    /// <exception cref="NonFinitePromptException">The step itself (a learning rate or weight decay too large for float)
    /// made the prompt NaN, ∞ or too large to square in float; the engine's prompt is then unusable, so the caller must
    /// not save it and should go back to its last saved state.</exception>
    public float OptimizerStep(float learningRate, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0f,
        float maxGradNorm = 0f, int accumulatedBatches = 1)
    {
        if (optimizer is null || trainables.Length == 0) throw new InvalidOperationException("engine: no trainable prompt");
        return optimizer.Step(trainables, new AdamWSettings(learningRate, beta1, beta2, eps, weightDecay, maxGradNorm), accumulatedBatches);
    }

    /// <summary>The AdamW state of <see cref="Trainables"/>: first and second moments (P·C prompt values, then the deep
    /// prefix's) and the number of steps taken.</summary>
    public (float[] M, float[] V, int Step) GetOptimizerState() => trainables.GetOptimizerState();

    static T[] ToHost<T>(ArrayView<T> view) where T : unmanaged
    {
        var result = new T[view.Length];
        view.CopyToCPU(result);
        return result;
    }

    static ArrayView<T> View<T>(Arena<T> arena, int handle, long length) where T : unmanaged =>
        length == 0 ? default : arena[handle].SubView(0, length);

    void Load(Batch batch)
    {
        if (batch.Rows > options.MaxRows || batch.Length > options.MaxLength)
            throw new ArgumentException($"batch {batch.Rows}×{batch.Length} exceeds the engine's {options.MaxRows}×{options.MaxLength}");
        if (batch.LossPositions.Length > maxS) throw new ArgumentException($"batch scores {batch.LossPositions.Length} positions, the engine was sized for {maxS}");
        if ((batch.Verbalizer?.Length ?? 0) > options.MaxVerbalizer) throw new ArgumentException($"verbalizer of {batch.Verbalizer!.Length} tokens exceeds the engine's {options.MaxVerbalizer}");
        batch.Validate(config.VocabSize, options.PromptRows, config.ContextLength - options.PrefixTokens);
        int n = batch.Positions, s = batch.LossPositions.Length;
        View(indices, sourceMap, n).CopyFromCPU(batch.SourceMap);
        View(indices, keyMask, n).CopyFromCPU(batch.KeyMask);
        // A deep prompt occupies positions [0, Pv) as past keys, so the batch's positions move up by Pv (HF's cache_position).
        View(indices, positionIds, n).CopyFromCPU(options.PrefixTokens == 0 ? batch.PositionIds : batch.PositionIds.Select(p => p + options.PrefixTokens).ToArray());
        if (s > 0)
        {
            View(indices, lossPositions, s).CopyFromCPU(batch.LossPositions);
            View(indices, targets, s).CopyFromCPU(batch.Targets);
        }
        if (batch.Verbalizer is { Length: > 0 } words) View(indices, verbalizer, words.Length).CopyFromCPU(words);
        if (batch.DeepPromptOfRow is { } chosen)
        {
            if (options.PrefixTokens == 0) throw new ArgumentException("batch: it chooses a deep prompt per row, but the engine holds none");
            foreach (var d in chosen)
                if (d >= options.DeepPrompts) throw new ArgumentException($"batch: deep prompt {d} chosen, the engine holds {options.DeepPrompts}");
        }
        if (options.DeepPrompts > 1) // with one deep prompt every row attends to it; nothing to send
            View(indices, deepPromptOfRow, batch.Rows).CopyFromCPU(batch.DeepPromptOfRow ?? new int[batch.Rows]);
        if (options.PromptRows > 0)
        {
            var uses = Embedding.BuildPromptUses(batch.SourceMap, config.VocabSize, options.PromptRows);
            indices[useOffsets].CopyFromCPU(uses.Offsets);
            if (uses.Positions.Length > 0) View(indices, usePositions, uses.Positions.Length).CopyFromCPU(uses.Positions);
            promptUseCount = uses.Positions.Length;
        }
        current = batch;
    }

    void Forward(bool training, CacheMode cacheMode = CacheMode.None)
    {
        bool decoding = cacheMode == CacheMode.Decode;
        // Decoding runs one position per cached row; its token and position id come with the step, not a batch.
        int B = decoding ? decodeRows : current!.Rows, T = decoding ? 1 : current!.Length, N = B * T;
        int C = config.HiddenSize;
        float eps = (float)config.NormEps;
        bool gpt2 = config.Family == ModelFamily.Gpt2;
        long nc = (long)N * C;
        var map = decoding ? StepIndices(0, B) : View(indices, sourceMap, N);
        var positions = decoding ? StepIndices(1, B) : View(indices, positionIds, N);
        var promptBank = options.PromptRows > 0 ? promptArena[prompt] : default;
        scoredOnly = ScoredRowsOnly(cacheMode);

        // Embedding: token rows and prompt rows in one kernel; GPT-2 adds learned positions.
        var x0 = View(saved, residual[0], nc);
        kernels.Embedding.Forward(x0, map, weights.TokenEmbedding, promptBank, N, C, config.VocabSize, options.PromptRows);
        if (gpt2) kernels.PositionEmbedding.Forward(x0, positions, weights.PositionEmbedding, N, C, config.MaxPositions);

        // Inference, and training with recomputation, reuse one layer's worth of saved tensors.
        int Slot(int layer) => training && !options.Recompute ? layer : 0;
        for (int l = 0; l < config.NumLayers; l++)
            BlockForward(l, Slot(l), cacheMode, nextSlot: Slot(l + 1));

        int R = scoredOnly ? current!.LossPositions.Length : N; // rows leaving the last block
        long rc = (long)R * C;
        var xL = View(saved, residual[config.NumLayers], rc);
        // (Llama's last block ended with the final norm, fused with its residual add.)
        if (gpt2) kernels.LayerNorm.Forward(View(saved, finalNorm, rc), xL, weights.FinalNorm, weights.FinalNormBias, View(saved, finalMean, R), View(saved, finalRstd, R), R, C, eps);
    }

    /// <summary>Whether this forward runs the last block after its attention, the final norm and the loss at the scored
    /// rows only. Nothing after the last block's attention mixes rows, and the loss reads only the scored rows, so
    /// the other rows' work there changes nothing (a classifier scores one row of T; the last block's output projection
    /// and MLP are then about 1/L of the FLOPs saved). Keys and values of the last block are still computed for every
    /// row, since the scored rows attend to them. The generation paths keep every row: the KV cache and the decode
    /// logits need them.</summary>
    bool ScoredRowsOnly(CacheMode cacheMode) =>
        !EveryRowEverywhere && cacheMode == CacheMode.None && current!.LossPositions.Length > 0 && current.LossPositions.Length < current.Positions;

    /// <summary>Runs every row through every layer and differentiates everything below layer 0's attention, as the engine
    /// did before it skipped the work the loss does not need; for the tests that check the shortcuts change nothing.</summary>
    internal bool EveryRowEverywhere { get; set; }

    /// <summary>Block <paramref name="l"/>: residual[l] → residual[l+1], saving into per-layer slot <paramref name="s"/>.
    /// The forward runs it for every layer; with <see cref="EngineOptions.Recompute"/> the backward runs it again, from
    /// the saved block input, into slot 0 just before differentiating the block. When the forward keeps only the scored
    /// rows (<see cref="ScoredRowsOnly"/>), the last block gathers them after its attention and residual[L] holds them
    /// compacted, (S, C).
    /// <para>In the forward's chain of blocks (<paramref name="nextSlot"/> ≥ 0) a Llama block ends with the next norm fused
    /// into its residual add: the next block's attention norm (its output in the ln scratch, its rstd in slot
    /// <paramref name="nextSlot"/>) or, after the last block, the final norm; a chained block after the first therefore
    /// finds its input already normalised. Re-run alone (recomputation), a block norms its own input and ends with the add.</para></summary>
    void BlockForward(int l, int s, CacheMode cacheMode, int nextSlot = -1)
    {
        bool decoding = cacheMode == CacheMode.Decode;
        int B = decoding ? decodeRows : current!.Rows, T = decoding ? 1 : current!.Length, N = B * T;
        int Tmax = options.MaxLength;
        int C = config.HiddenSize, H = config.NumHeads, KVH = config.NumKvHeads, hs = config.HeadDim, I = config.IntermediateSize;
        int Q = H * hs, KV = KVH * hs;
        float eps = (float)config.NormEps, theta = (float)config.RopeTheta;
        bool gpt2 = config.Family == ModelFamily.Gpt2;
        long nc = (long)N * C;
        var mask = View(indices, keyMask, N);
        var positions = decoding ? StepIndices(1, B) : View(indices, positionIds, N);
        var w = weights.Block(l);
        var x = View(saved, residual[l], nc);
        var (lq, lk, lv) = (View(saved, q[s], (long)N * Q), View(saved, k[s], (long)N * KV), View(saved, v[s], (long)N * KV));
        var att = View(saved, attention[s], (long)N * Q);

        bool chained = nextSlot >= 0 && !gpt2;

        // Attention half: h = x + Wo · attention(rope(Wq·norm(x)), rope(Wk·norm(x)), Wv·norm(x))
        var lnOut = View(scratch, ln, nc);
        var r1 = View(saved, rstd1[s], N);
        if (gpt2) kernels.LayerNorm.Forward(lnOut, x, w.AttentionNorm, w.AttentionNormBias, View(saved, mean1[s], N), r1, N, C, eps);
        else if (!(chained && l > 0)) kernels.RmsNorm.Forward(lnOut, x, w.AttentionNorm, r1, N, C, eps);
        var fused = View(scratch, qkv, (long)N * (Q + 2 * KV));
        kernels.Linear.Forward(fused, lnOut, w.Qkv, w.QkvBias, N, C, Q + 2 * KV);
        kernels.Rope.ForwardFromQkv(lq, lk, lv, fused, positions, B, T, H, KVH, hs, theta, rotate: !gpt2);
        if (cacheMode != CacheMode.None)
        {
            var (kCache, vCache) = (View(cacheArena, keyCache[l], (long)B * Tmax * KV), View(cacheArena, valueCache[l], (long)B * Tmax * KV));
            kernels.AttentionDecode.Append(new(kCache, vCache), new(lk, lv), StepIndices(2, B), B, T, Tmax, KVH, hs);
            if (decoding) kernels.AttentionDecode.Forward(att, lq, new(kCache, vCache), StepIndices(3, B), new(B, Tmax, H, KVH, hs));
        }
        if (!decoding) kernels.Attention.Forward(att, View(saved, lse[s], (long)B * H * T), lq, new(lk, lv), mask, new(B, T, H, KVH, hs));
        if (!decoding && options.PrefixTokens > 0) // deep prompt: every query also attends to the layer's prefix keys
            kernels.AttentionPrefix.Forward(att, View(saved, lse[s], (long)B * H * T), lq, new(PrefixSlice(prefix, l, false), PrefixSlice(prefix, l, true)),
                new(B, T, H, KVH, hs, options.PrefixTokens), DeepPromptOfRow(B));

        // From here on rows do not mix: the last block of a scored-rows-only forward continues with those R = S rows.
        bool compact = scoredOnly && l == config.NumLayers - 1;
        int R = compact ? current!.LossPositions.Length : N;
        long rc = (long)R * C;
        var (attRows, xRows) = (att, x);
        if (compact)
        {
            var rows = View(indices, lossPositions, R);
            attRows = View(scratch, scoredAttention, (long)R * Q);
            xRows = View(scratch, scoredInput, rc);
            kernels.RowGather.Forward(attRows, att, rows, N, R, Q);
            kernels.RowGather.Forward(xRows, x, rows, N, R, C);
        }
        var proj = View(scratch, projection, rc);
        var h = View(saved, mid[s], rc);
        kernels.Linear.Forward(proj, attRows, w.AttentionOutput, w.AttentionOutputBias, R, Q, C);

        // MLP half: x' = h + Wdown · act(norm(h))
        var hNorm = View(scratch, ln, rc);
        var r2 = View(saved, rstd2[s], R);
        var act = View(scratch, activated, (long)R * I);
        if (gpt2)
        {
            var u = View(saved, preActivation[s], (long)R * I);
            kernels.Residual.Forward(h, xRows, proj, rc);
            kernels.LayerNorm.Forward(hNorm, h, w.MlpNorm, w.MlpNormBias, View(saved, mean2[s], R), r2, R, C, eps);
            kernels.Linear.Forward(u, hNorm, w.MlpUp, w.MlpUpBias, R, C, I);
            kernels.Gelu.Forward(act, u, (long)R * I);
        }
        else
        {
            var gateUp = View(saved, preActivation[s], 2L * R * I);
            kernels.ResidualRmsNorm.Forward(h, hNorm, r2, xRows, proj, w.MlpNorm, R, C, eps);
            kernels.Linear.Forward(gateUp, hNorm, w.MlpGateUp, default, R, C, 2 * I);
            kernels.SwiGlu.Forward(act, gateUp, R, I);
        }
        kernels.Linear.Forward(proj, act, w.MlpDown, w.MlpDownBias, R, I, C);
        var output = View(saved, residual[l + 1], rc);
        if (!chained) kernels.Residual.Forward(output, h, proj, rc);
        else if (l + 1 < config.NumLayers)
            kernels.ResidualRmsNorm.Forward(output, lnOut, View(saved, rstd1[nextSlot], N), h, proj, weights.Block(l + 1).AttentionNorm, N, C, eps);
        else
            kernels.ResidualRmsNorm.Forward(output, View(saved, finalNorm, rc), View(saved, finalRstd, R), h, proj, weights.FinalNorm, R, C, eps);
    }

    /// <summary>The final norm's rows the loss reads (all B·T, or the S scored ones compacted) and, for each scored
    /// position, its row there.</summary>
    (int Rows, ArrayView<int> Positions) LossRows()
    {
        int s = current!.LossPositions.Length;
        return scoredOnly ? (s, View(indices, scoredRows, s)) : (current.Positions, View(indices, lossPositions, s));
    }

    float LossForward()
    {
        var batch = current!;
        int s = batch.LossPositions.Length, r = batch.Verbalizer?.Length ?? 0, C = config.HiddenSize;
        if (s == 0) throw new ArgumentException("batch has no scored positions: nothing to take a loss over");
        var (n, rows) = LossRows();
        if (head is not null)
        {
            // The head's rows are the classes: the same fused loss with W = head (R, C), V = R and class-index targets.
            var classTargets = HeadTargets(batch);
            View(indices, headTargets, s).CopyFromCPU(classTargets);
            kernels.CrossEntropy.Forward(View(scratch, losses, s), scratch[meanLoss], View(scratch, logits, (long)s * head.Classes),
                View(saved, finalNorm, (long)n * C), rows, View(indices, headTargets, s), head.WeightView,
                default, n, C, s, head.Classes, 0, head.BiasView);
            return ToHost(scratch[meanLoss])[0];
        }
        kernels.CrossEntropy.Forward(View(scratch, losses, s), scratch[meanLoss], View(scratch, logits, (long)s * (r > 0 ? r : config.VocabSize)),
            View(saved, finalNorm, (long)n * C), rows, View(indices, targets, s), weights.LmHead,
            View(indices, verbalizer, r), n, C, s, config.VocabSize, r);
        return ToHost(scratch[meanLoss])[0]; // the one host read of a step
    }

    void LossBackward()
    {
        var batch = current!;
        int s = batch.LossPositions.Length, r = batch.Verbalizer?.Length ?? 0, C = config.HiddenSize;
        var (n, rows) = LossRows();
        long rc = (long)n * C;
        var dNorm = View(scratch, dLn, rc);
        if (head is not null)
        {
            // dHidden through the head, then the head's own gradient (a small trainable module: allowed, and accumulated).
            var dHeadLogits = View(scratch, logits, (long)s * head.Classes);
            kernels.CrossEntropy.Backward(dNorm, dHeadLogits, head.WeightView, rows, default, n, C, s, head.Classes, 0);
            kernels.CrossEntropy.HeadGradient(head.WeightGradientView, head.BiasGradientView, dHeadLogits, View(saved, finalNorm, rc),
                rows, n, C, s, head.Classes);
        }
        else
            kernels.CrossEntropy.Backward(dNorm, View(scratch, logits, (long)s * (r > 0 ? r : config.VocabSize)), weights.LmHead,
                rows, View(indices, verbalizer, r), n, C, s, config.VocabSize, r);
        var xL = View(saved, residual[config.NumLayers], rc);
        var dOut = View(scratch, scoredOnly ? dScored : dResidual, rc); // the last block's output gradient
        if (config.Family == ModelFamily.Gpt2)
            kernels.LayerNorm.Backward(dOut, dNorm, xL, weights.FinalNorm, View(saved, finalMean, n), View(saved, finalRstd, n), n, C);
        else
            kernels.RmsNorm.Backward(dOut, dNorm, xL, weights.FinalNorm, View(saved, finalRstd, n), n, C);
    }

    void Backward(int injectedRows = 0)
    {
        var batch = current!;
        int B = batch.Rows, T = batch.Length, N = batch.Positions;
        int C = config.HiddenSize, H = config.NumHeads, KVH = config.NumKvHeads, hs = config.HeadDim, I = config.IntermediateSize;
        int Q = H * hs, KV = KVH * hs;
        float theta = (float)config.RopeTheta;
        bool gpt2 = config.Family == ModelFamily.Gpt2;
        long nc = (long)N * C;
        var mask = View(indices, keyMask, N);
        var positions = View(indices, positionIds, N);
        var dRes = View(scratch, dResidual, nc);   // gradient of the residual stream, carried down through the blocks
        var dAtt = View(scratch, dAttention, (long)N * Q);
        var (dq, dk, dv) = (View(scratch, dQ, (long)N * Q), View(scratch, dK, (long)N * KV), View(scratch, dV, (long)N * KV));

        for (int l = config.NumLayers - 1; l >= 0; l--)
        {
            // With recomputation the block's activations are rebuilt from its saved input, into slot 0.
            int s = options.Recompute ? 0 : l;
            if (options.Recompute) BlockForward(l, 0, CacheMode.None);
            var w = weights.Block(l);
            var x = View(saved, residual[l], nc);

            // The MLP half and the output projection run on the rows the forward kept: all N, or, in the last block of a
            // scored-rows-only forward, the S scored rows, whose output gradient the loss left compacted in dScored.
            bool compact = scoredOnly && l == config.NumLayers - 1;
            int R = compact ? batch.LossPositions.Length : N;
            long rc = (long)R * C;
            var dOut = compact ? View(scratch, dScored, rc) : dRes;
            var dNorm = View(scratch, dLn, rc);
            var dAct = View(scratch, dActivated, (long)R * I);
            var h = View(saved, mid[s], rc);

            // MLP half, reversed: dh = dx' + norm'(Wdownᵀ-path)
            kernels.Linear.Backward(dAct, dOut, w.MlpDown, R, I, C);
            if (gpt2)
            {
                var (u, dU) = (View(saved, preActivation[s], (long)R * I), View(scratch, dPreActivation, (long)R * I));
                kernels.Gelu.Backward(dU, dAct, u, (long)R * I);
                kernels.Linear.Backward(dNorm, dU, w.MlpUp, R, C, I);
                var dTmp = View(scratch, dTemp, rc);
                kernels.LayerNorm.Backward(dTmp, dNorm, h, w.MlpNorm, View(saved, mean2[s], R), View(saved, rstd2[s], R), R, C);
                kernels.Residual.Forward(dOut, dOut, dTmp, rc);
            }
            else
            {
                var (gateUp, dGateUp) = (View(saved, preActivation[s], 2L * R * I), View(scratch, dPreActivation, 2L * R * I));
                kernels.SwiGlu.Backward(dGateUp, dAct, gateUp, R, I);
                kernels.Linear.Backward(dNorm, dGateUp, w.MlpGateUp, R, C, 2 * I);
                kernels.RmsNorm.Backward(dOut, dNorm, h, w.MlpNorm, View(saved, rstd2[s], R), R, C, accumulate: true);
            }

            // Attention half, reversed: dx = dh + norm'(Wqkvᵀ [dq | dk | dv])
            var (lq, lk, lv) = (View(saved, q[s], (long)N * Q), View(saved, k[s], (long)N * KV), View(saved, v[s], (long)N * KV));
            if (compact)
            {
                // dAttention is zero at the rows the forward dropped.
                var dAttRows = View(scratch, scoredAttention, (long)R * Q);
                kernels.Linear.Backward(dAttRows, dOut, w.AttentionOutput, R, Q, C);
                dAtt.MemSetToZero();
                kernels.RowGather.Backward(dAtt, dAttRows, View(indices, lossPositions, R), N, R, Q);
            }
            else kernels.Linear.Backward(dAtt, dRes, w.AttentionOutput, N, Q, C);
            kernels.Attention.Backward(dq, new(dk, dv), View(scratch, delta, (long)B * H * T), dAtt, lq, new(lk, lv), mask,
                View(saved, attention[s], (long)N * Q), View(saved, lse[s], (long)B * H * T), new(B, T, H, KVH, hs));
            if (options.PrefixTokens > 0)
                kernels.AttentionPrefix.Backward(dq, new(PrefixSlice(dPrefix, l, false), PrefixSlice(dPrefix, l, true)), dAtt, lq,
                    new(PrefixSlice(prefix, l, false), PrefixSlice(prefix, l, true)), View(saved, lse[s], (long)B * H * T), View(scratch, delta, (long)B * H * T),
                    new(B, T, H, KVH, hs, options.PrefixTokens));
            if (l == 0 && options.PromptRows == 0 && !EveryRowEverywhere)
                break; // a deep prompt's gradient entered at the prefix keys and values; nothing below layer 0's attention is trained
            if (injectedRows > 0) // PromptBackward: the keys and values also reach other rows (shared prompt KV)
            {
                long part = (long)injectedRows * KV;
                kernels.Residual.Forward(dk, dk, injectArena[injected].SubView(2 * l * part, part), part);
                kernels.Residual.Forward(dv, dv, injectArena[injected].SubView((2 * l + 1) * part, part), part);
            }
            var dQkv = View(scratch, qkv, (long)N * (Q + 2 * KV));
            kernels.Rope.BackwardToQkv(dQkv, dq, dk, dv, positions, B, T, H, KVH, hs, theta, rotate: !gpt2);
            var dxNorm = View(scratch, dLn, nc);
            kernels.Linear.Backward(dxNorm, dQkv, w.Qkv, N, C, Q + 2 * KV);
            // The residual path: dRes carries dx' down (all rows), or, below a compacted block, only the scored rows' dh.
            // RMSNorm adds into dRes itself; LayerNorm's gradient goes through dTemp and a residual add.
            if (gpt2)
            {
                var dxAttention = compact ? dRes : View(scratch, dTemp, nc);
                kernels.LayerNorm.Backward(dxAttention, dxNorm, x, w.AttentionNorm, View(saved, mean1[s], N), View(saved, rstd1[s], N), N, C);
                if (!compact) kernels.Residual.Forward(dRes, dRes, dxAttention, nc);
            }
            else kernels.RmsNorm.Backward(dRes, dxNorm, x, w.AttentionNorm, View(saved, rstd1[s], N), N, C, accumulate: !compact);
            if (compact) kernels.RowGather.Backward(dRes, dOut, View(indices, lossPositions, R), N, R, C);
        }

        // Embedding, reversed: only the prompt rows receive gradient (positions and tokens are frozen).
        if (options.PromptRows > 0)
            kernels.Embedding.Backward(promptArena[dPrompt], dRes, indices[useOffsets], View(indices, usePositions, promptUseCount), N, C, options.PromptRows);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        weights?.Dispose();
        saved.Dispose();
        scratch.Dispose();
        indices.Dispose();
        promptArena.Dispose();
        cacheArena.Dispose();
        cacheIndices.Dispose();
        injectArena.Dispose();
    }
}

/// <summary>The prompt gradient became NaN or infinite; the step was not applied.</summary>
public sealed class NonFiniteGradientException(string message) : PromptEngineException(message);

/// <summary>A sequence longer than the model's sliding attention window: the engine computes full causal attention, which
/// is the windowed model's function only up to the window's length, so longer sequences are refused, not computed wrongly.</summary>
public sealed class SlidingWindowException(TransformerConfig config, int length)
    : PromptEngineException($"{config.Architecture} attends within a sliding window of {config.SlidingWindow} positions, which this engine "
        + $"does not implement; sequences of up to {config.ContextLength} positions are computed exactly, {length} would not be")
{
    /// <summary>The longest sequence computed exactly.</summary>
    public int ContextLength { get; } = config.ContextLength;
}

/// <summary>An optimizer step made the trainable values NaN, infinite or too large for float; they must not be saved.</summary>
public sealed class NonFinitePromptException(string message) : PromptEngineException(message);
