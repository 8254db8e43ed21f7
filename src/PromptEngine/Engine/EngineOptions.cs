using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>Sizes the engine's arenas once.</summary>
/// <param name="MaxRows">Largest batch B.</param>
/// <param name="MaxLength">Longest row T (prompt slots included).</param>
/// <param name="PromptTableRows">Rows P of the prompt bank (all prompts of the bank, stacked); 0 for none.</param>
/// <param name="Training">Save what backward needs for every layer; false keeps one layer's worth (inference).</param>
/// <param name="MaxLossPositions">Most scored positions S per batch; B·T by default.</param>
/// <param name="MaxVerbalizer">Most vocabulary rows a verbalizer restricts the softmax to.</param>
/// <param name="DeepVirtualTokens">Deep-prompt virtual tokens Pv (prefix tuning / P-tuning v2): every layer gets Pv trainable key
/// and value vectors per kv head that all queries attend to, as Hugging Face PEFT's PREFIX_TUNING past_key_values.
/// Batches then number their positions from Pv (HF's cache_position); 0 for none.</param>
/// <param name="Recompute">Activation recomputation (training): keep only each block's input (the residual stream) and
/// re-run the block's forward in the backward, just before differentiating it; the per-layer activations shrink to one
/// layer's worth at the cost of a second forward through every block. Results are bit-identical to the normal path.</param>
/// <param name="DeepPrompts">Deep prompts of Pv virtual tokens held at once, D (inference): each batch row attends to its
/// own (<see cref="Batch.DeepPromptOfRow"/>), so rows of different tasks share one batch. Training holds one.</param>
/// <param name="WeightFormat">How the frozen block projections are stored on the device: float32, or half / bfloat16 for
/// half the memory (widened as read, accumulated in float32; see <see cref="DeviceWeights"/>).</param>
public sealed record EngineOptions(int MaxRows, int MaxLength, int PromptTableRows, bool Training = true, int? MaxLossPositions = null, int MaxVerbalizer = 16,
    int DeepVirtualTokens = 0, bool Recompute = false, WeightFormat WeightFormat = WeightFormat.F32, int DeepPrompts = 1)
{
    /// <summary>Refuses options the engine cannot honour for <paramref name="config"/>.</summary>
    /// <exception cref="ArgumentException">A non-positive batch, a length beyond the model's positions, a negative Pv, no or
    /// several deep prompts where they cannot be, or a Pv that fills the context.</exception>
    /// <exception cref="SlidingWindowException">A length beyond the model's sliding window.</exception>
    internal void Check(TransformerConfig config)
    {
        if (MaxRows <= 0 || MaxLength <= 0) throw new ArgumentException($"engine: batch {MaxRows}×{MaxLength} must be positive");
        if (MaxLength > config.MaxPositions)
            throw new ArgumentException($"engine: sequence length {MaxLength} exceeds the model's {config.MaxPositions} positions");
        if (MaxLength > config.ContextLength)
            throw new SlidingWindowException(config, MaxLength);
        if (DeepVirtualTokens < 0) throw new ArgumentException($"engine: {DeepVirtualTokens} prefix tokens");
        if (DeepPrompts < 1) throw new ArgumentException($"engine: {DeepPrompts} deep prompts; at least 1");
        if (DeepPrompts > 1 && Training)
            throw new ArgumentException($"engine: training holds one deep prompt, not {DeepPrompts}; several are for inference (EngineOptions.Training = false)");
        // Each batch checks its own Pv + positions against the model (Load); the cache's Pv + tokens against MaxLength (Prefill).
        if (DeepVirtualTokens >= config.ContextLength)
            throw new ArgumentException($"engine: {DeepVirtualTokens} prefix tokens leave no room in the model's {config.ContextLength} positions");
    }
}

/// <summary>Device memory by arena, in bytes. There is no weight-gradient or weight-optimizer arena:
/// the frozen weights get neither.</summary>
/// <param name="FrozenWeights">The model's weights (<see cref="DeviceWeights"/>).</param>
/// <param name="Activations">What the forward saves for the backward.</param>
/// <param name="GradientsAndScratch">Activation gradients and scratch (and, once allocated, a shared prompt's key/value gradients).</param>
/// <param name="Indices">The batch's index maps.</param>
/// <param name="PromptAndOptimizer">The prompt and deep prefix with their gradients and AdamW moments.</param>
/// <param name="KvCache">The generation arena (every layer's K and V cache, the step's logits and indices); 0 until the
/// first <see cref="TransformerEngine.Prefill"/> allocates it.</param>
public sealed record MemoryReport(long FrozenWeights, long Activations, long GradientsAndScratch, long Indices, long PromptAndOptimizer, long KvCache = 0)
{
    /// <summary>Everything the engine holds.</summary>
    public long Total => FrozenWeights + Activations + GradientsAndScratch + Indices + PromptAndOptimizer + KvCache;
}
