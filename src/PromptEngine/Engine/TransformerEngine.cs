using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Training;

namespace PromptEngine.Engine;

/// <summary>
/// A frozen transformer with a trainable prompt: the forward pass and the prompt-only backward pass, losses, logits,
/// cached generation and the optimizer step, on memory planned once.
/// </summary>
/// <remarks>
/// <para>The engine is the front of its parts, one file each: the <see cref="MemoryPlan"/> (every tensor besides the
/// frozen <see cref="DeviceWeights"/>, as named views of seven arenas); the family's <see cref="BlockProgram"/>
/// (<see cref="LlamaBlocks"/> or <see cref="Gpt2Blocks"/>: forward and backward as flat lists of kernel launches); the
/// <see cref="Readout"/> (loss, logits, a classifier head); the <see cref="KvCache"/> (prefill and decode, allocated by the
/// first <see cref="Prefill"/>); <see cref="PromptKv"/> (shared prompt-KV reuse, <see cref="SharedPromptKv"/>). Per call
/// only the batch's index maps go to the device and one float, the mean loss, comes back.</para>
/// <para>Deep prompts (<see cref="EngineOptions.DeepVirtualTokens"/> = Pv &gt; 0) add a trainable prefix (L, 2, Pv, KV·hs) to the
/// prompt arena, a second <see cref="TrainableParameter"/> beside the prompt's (the optimizer clips the two as one vector,
/// <see cref="Trainables"/>); <see cref="BlockProgram"/> says how the attention uses it.</para>
/// </remarks>
public sealed class TransformerEngine : IDisposable
{
    readonly KernelContext kernels;
    readonly TransformerConfig config;
    readonly DeviceWeights weights;
    readonly long weightBytes;
    readonly EngineOptions options;
    readonly MemoryPlan memory;
    readonly BlockProgram program;
    readonly Readout readout;
    readonly KvCache cache;
    readonly PromptKv promptKv;
    TrainableParameter[] trainables = []; // the prompt and the prefix (those that exist) of a training engine
    AdamWOptimizer? optimizer;
    ClassifierHead? head;                 // when attached, replaces the LM head's verbalizer rows in the loss and the logits

    /// <summary>The model's configuration.</summary>
    public TransformerConfig Config => config;

    /// <summary>Builds the engine: uploads the frozen weights once (block projections in
    /// <see cref="EngineOptions.WeightFormat"/>) and plans every arena for <paramref name="options"/>.</summary>
    public TransformerEngine(KernelContext kernels, ModelFolder model, EngineOptions options)
        : this(kernels, model.Config, () => DeviceWeights.Upload(kernels, model, options.WeightFormat), options) { }

    /// <summary>Builds the engine on weights already on the device (e.g. <see cref="DeviceWeights.Generate"/>), which
    /// it then owns and disposes; their format is the one that counts, whatever <paramref name="options"/> says.</summary>
    public TransformerEngine(KernelContext kernels, DeviceWeights weights, EngineOptions options)
        : this(kernels, weights.Config, () => weights, options with { WeightFormat = weights.Format }, given: weights) { }

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
        try { options.Check(modelConfig); }
        catch
        {
            given?.Dispose();
            throw;
        }
        this.kernels = kernels!;
        this.options = options;
        config = modelConfig;
        memory = new MemoryPlan(config, options);
        if (kernels is null || placeWeights is null)
        {
            (weights, program, readout, cache, promptKv) = (null!, null!, null!, null!, null!);
            weightBytes = DeviceWeights.PlannedBytes(config, options.WeightFormat);
            return;
        }
        try
        {
            weights = placeWeights();
        }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException)
        {
            throw DeviceMemoryException.For(kernels, PlannedBytes(), options, e);
        }
        weightBytes = weights.Bytes;
        program = BlockProgram.For(kernels, config, options, weights, memory);
        readout = new Readout(kernels, config, weights, memory, program);
        cache = new KvCache(kernels, config, options, memory, program, readout);
        promptKv = new PromptKv(kernels, config, options, memory, program, cache);
        try
        {
            memory.Allocate(kernels.Accelerator);
            if (options.Training)
            {
                trainables = memory.PromptParameters();
                trainables.ResetOptimizer();
                optimizer = new AdamWOptimizer(kernels, memory.OptimizerScratch);
            }
        }
        catch (Exception e) when (e is OutOfMemoryException or AcceleratorException)
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

    /// <summary>Bytes the engine asks the device for at construction: the weights and every arena planned for the options
    /// (the KV cache and the prompt-only gradients come later, when first used).</summary>
    long PlannedBytes() => DeviceWeights.PlannedBytes(config, options.WeightFormat) + memory.ConstructionBytes;

    /// <summary>Device memory by arena (the key/value gradients of <see cref="PromptBackward"/>, once allocated, count as scratch).</summary>
    public MemoryReport Memory => memory.Report(weightBytes);

    /// <summary>Rows P of the prompt bank.</summary>
    public int PromptTableRows => options.PromptTableRows;

    /// <summary>The sizes the engine was built for (largest batch B and row length T, which are also the KV cache's rows and capacity).</summary>
    public EngineOptions Options => options;

    /// <summary>Valid cached positions of each row of the last <see cref="Prefill"/>, advanced by every <see cref="DecodeStep"/>;
    /// empty before the first prefill.</summary>
    public IReadOnlyList<int> CacheLengths => cache.Lengths;

    /// <summary>Replaces the prompt bank (P, C) with <paramref name="values"/> and resets its gradient and AdamW state.</summary>
    public void SetPrompt(ReadOnlySpan<float> values)
    {
        var length = (long)options.PromptTableRows * config.HiddenSize;
        if (values.Length != length) throw new ArgumentException($"prompt: {values.Length} values given, the bank holds P·C = {options.PromptTableRows}·{config.HiddenSize} = {length}");
        if (length == 0) return;
        memory.Prompt.CopyFromCPU(values.ToArray());
        trainables.ResetOptimizer();
    }

    /// <summary>Elements of the deep prefix (L, 2, Pv, KV·hs) for <paramref name="deepVirtualTokens"/> = Pv.</summary>
    public static long PrefixLengthOf(TransformerConfig config, int deepVirtualTokens) =>
        (long)config.NumLayers * 2 * deepVirtualTokens * config.NumKvHeads * config.HeadDim;

    /// <summary>Deep-prompt virtual tokens Pv (0: no prefix).</summary>
    public int DeepVirtualTokens => options.DeepVirtualTokens;

    /// <summary>Elements of the deep prefix, L·2·Pv·KV·hs.</summary>
    public long PrefixLength => PrefixLengthOf(config, options.DeepVirtualTokens);

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
        memory.Prefix.CopyFromCPU(values.ToArray());
        trainables.ResetOptimizer();
    }

    /// <summary>Replaces the engine's D deep prompts (<see cref="EngineOptions.DeepPrompts"/>), each (L, 2, Pv, KV·hs) as
    /// <see cref="SetPrefix"/> takes one; batch rows choose among them by index (<see cref="Batch.DeepPromptOfRow"/>).</summary>
    /// <exception cref="ArgumentException">Not D prompts, or one of the wrong length.</exception>
    public void SetDeepPrompts(IReadOnlyList<float[]> prompts)
    {
        if (prompts.Count != options.DeepPrompts) throw new ArgumentException($"deep prompts: {prompts.Count} given, the engine holds D = {options.DeepPrompts}");
        if (PrefixLength > 0) memory.Prefix.CopyFromCPU(memory.DeepPromptBank(prompts));
    }

    /// <summary>The deep prefix (L, 2, Pv, KV·hs), copied to the host (with several deep prompts: all of them, per layer
    /// and keys/values stacked as <see cref="SetDeepPrompts"/> lays them out).</summary>
    public float[] GetPrefix() => PrefixLength == 0 ? [] : memory.Prefix.ToHost();

    /// <summary>dLoss/dPrefix (L, 2, Pv, KV·hs) accumulated since the last <see cref="ZeroPromptGradient"/>, copied to the host.</summary>
    public float[] GetPrefixGradient() => PrefixLength == 0 || !options.Training ? [] : memory.DPrefix.ToHost();

    /// <summary>The kernel context the engine launches on; the prefix projection runs on the same one.</summary>
    internal KernelContext Kernels => kernels;

    /// <summary>The deep prefix (L, 2, Pv, KV·hs) on the device, for <see cref="Prompts.PrefixProjection"/> to write its
    /// output into (unlike <see cref="SetPrefix"/>, writing here leaves the gradient and optimizer state alone).</summary>
    internal ArrayView<float> PrefixView => memory.Prefix;

    /// <summary>dPrefix (L, 2, Pv, KV·hs) on the device, for <see cref="Prompts.PrefixProjection"/> to differentiate
    /// through; empty for an inference engine.</summary>
    internal ArrayView<float> PrefixGradientView => memory.DPrefix;

    /// <summary>The prompt bank (P, C), copied to the host.</summary>
    public float[] GetPrompt() => options.PromptTableRows == 0 ? [] : memory.Prompt.ToHost();

    /// <summary>dLoss/dPrompt (P, C) accumulated since the last <see cref="ZeroPromptGradient"/>, copied to the host.</summary>
    public float[] GetPromptGradient() => options.PromptTableRows == 0 || !options.Training ? [] : memory.DPrompt.ToHost();

    /// <summary>Clears dPrompt and dPrefix (start of a step; several batches between clears accumulate).</summary>
    public void ZeroPromptGradient() => trainables.ZeroGradient();

    /// <summary>Forward, loss and backward: returns the mean loss over the batch's scored positions and
    /// ADDS dLoss/dPrompt into the prompt gradient.</summary>
    public float LossAndPromptGradient(Batch batch)
    {
        if (!options.Training) throw new InvalidOperationException("engine: built for inference (EngineOptions.Training = false)");
        program.Load(batch);
        program.Forward(training: true);
        var loss = readout.LossForward(head);
        readout.LossBackward(head);
        program.Backward();
        return loss;
    }

    /// <summary>Forward and loss only (evaluation); saves nothing beyond one layer.</summary>
    public float Loss(Batch batch)
    {
        program.Load(batch);
        program.Forward(training: false);
        return readout.LossForward(head);
    }

    /// <summary>The final norm's output (S, C) at the batch's scored positions, in their order: the features a classifier head
    /// reads. Lets rows of one batch go through different heads (several tasks in one batch), each applied by the caller.</summary>
    public float[] ScoredHiddenStates(Batch batch)
    {
        program.Load(batch);
        program.Forward(training: false);
        return readout.ScoredHiddenStates();
    }

    /// <summary>Logits (S, V), or (S, R) over the batch's verbalizer, at the batch's scored positions only; with a
    /// <see cref="Head"/>, the head's (S, R) logits (one column per class, the verbalizer's order).</summary>
    public float[] Logits(Batch batch)
    {
        program.Load(batch);
        program.Forward(training: false);
        return readout.Logits(head);
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
        if (head is not null) readout.CheckFits(head);
        this.head = head;
    }

    /// <summary>The LM head's rows of <paramref name="tokenIds"/> (count, C), copied to the host (a head's initial weight).</summary>
    /// <exception cref="ArgumentException">An id outside the vocabulary.</exception>
    internal float[] LmHeadRows(IReadOnlyList<int> tokenIds) => readout.LmHeadRows(tokenIds);

    /// <summary>Starts cached generation: runs the forward over <paramref name="batch"/> (each row its prompt rows and
    /// tokens, right-padded as <see cref="BatchBuilder"/> builds them), writes every layer's K and V of every row into
    /// the KV cache, and returns the logits (B, V) at each row's last real position. Replaces whatever was cached.</summary>
    /// <param name="batch">Rows whose key mask is 1 on a prefix of the row (its length) and 0 after, with position ids
    /// 0, 1, … on that prefix, so the cache slot of a position is its position id (plus Pv with a deep prompt, whose
    /// prefixes fill slots [0, Pv)). Loss positions are ignored.</param>
    /// <exception cref="ArgumentException">The batch does not fit the engine, names a token or prompt row out of range,
    /// or a row is empty, has a hole in its key mask or positions that do not count from 0.</exception>
    public float[] Prefill(Batch batch) => cache.Prefill(batch);

    /// <summary>One generation step: embeds <paramref name="tokens"/>[b] at position <see cref="CacheLengths"/>[b] of each
    /// cached row, runs every block for that one position against the row's cached keys and values (appending its
    /// own), and returns the logits (B, V) of the new positions. A negative token leaves its row idle: nothing is
    /// written to its cache, its length stays, and its logits row is meaningless (finished rows in a batch).</summary>
    /// <param name="tokens">(B) the next token of each row of the last <see cref="Prefill"/>, or −1 for an idle row.</param>
    /// <exception cref="InvalidOperationException">Nothing was prefilled.</exception>
    /// <exception cref="ArgumentException">Wrong count, a token outside the vocabulary, or a row whose cache is full
    /// (<see cref="EngineOptions.MaxLength"/> positions).</exception>
    public float[] DecodeStep(ReadOnlySpan<int> tokens) => cache.DecodeStep(tokens);

    /// <summary>Exact prompt-KV reuse: runs the prompt-bank rows <paramref name="promptTableRows"/> alone, as a prefix at
    /// positions 0..P−1, and returns the keys (rotated) and values every layer computes there, in the deep-prefix layout
    /// (L, 2, P, KV·hs). With prefix placement and causal attention those positions never see the input, so an engine
    /// built with <see cref="EngineOptions.DeepVirtualTokens"/> = P holding this as its prefix (<see cref="SetPrefix"/>)
    /// computes for any input exactly what this engine computes with the prompt in front of it, without recomputing
    /// the P prompt positions per row, per request or per generation step. Uses (and clears) the KV cache.</summary>
    /// <exception cref="ArgumentException">No rows, a row outside the bank, more rows than the engine's length.</exception>
    /// <exception cref="InvalidOperationException">This engine has a deep prefix of its own.</exception>
    public float[] PromptKeysAndValues(IReadOnlyList<int> promptTableRows) => promptKv.KeysAndValues(promptTableRows);

    /// <summary>Shared prompt KV in training, first half: the training forward of the prompt rows alone (one row, positions
    /// 0..P−1), saving what <see cref="PromptBackward"/> needs, and their keys and values in the deep-prefix layout
    /// (L, 2, P, KV·hs). Give them to an engine with <see cref="EngineOptions.DeepVirtualTokens"/> = P
    /// (<see cref="SetPrefix"/>) to train every row of a batch against one computation of the prompt.</summary>
    /// <exception cref="InvalidOperationException">An inference engine, a recomputing one, or one with a deep prefix.</exception>
    /// <exception cref="ArgumentException">No rows, or a row outside the bank.</exception>
    public float[] PromptForward(IReadOnlyList<int> promptTableRows) => promptKv.Forward(promptTableRows);

    /// <summary>Shared prompt KV in training, second half: the backward of the last <see cref="PromptForward"/> when its
    /// only loss is through its keys and values, <paramref name="dKeysAndValues"/> (L, 2, P, KV·hs) — the dPrefix that the
    /// rows attending to them accumulated (<see cref="GetPrefixGradient"/>). ADDS dLoss/dPrompt into the prompt gradient,
    /// exactly what running every row with the prompt in front would have added.</summary>
    /// <exception cref="InvalidOperationException">No <see cref="PromptForward"/> before.</exception>
    /// <exception cref="ArgumentException">A gradient of the wrong length.</exception>
    public void PromptBackward(ReadOnlySpan<float> dKeysAndValues) => promptKv.Backward(dKeysAndValues);

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

    /// <summary>Runs every row through every layer and differentiates everything below layer 0's attention, as the engine
    /// did before it skipped the work the loss does not need; for the tests that check the shortcuts change nothing.</summary>
    internal bool EveryRowEverywhere { get => program.EveryRowEverywhere; set => program.EveryRowEverywhere = value; }

    /// <inheritdoc/>
    public void Dispose()
    {
        weights?.Dispose();
        memory.Dispose();
    }
}
