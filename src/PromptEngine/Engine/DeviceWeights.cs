using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>One block's frozen weights as views into the weights arena, in the engine's layout:
/// every projection is (out, in) so that <c>Linear</c> computes Y = X·Wᵀ. Absent parts (biases of
/// Llama, the gate of GPT-2) are empty views.</summary>
public readonly record struct BlockWeights(
    ArrayView<float> AttentionNorm,     // (C)
    ArrayView<float> AttentionNormBias, // (C) or empty
    ArrayView<float> Query,             // (H*hs, C)
    ArrayView<float> Key,               // (KV*hs, C)
    ArrayView<float> Value,             // (KV*hs, C)
    ArrayView<float> QueryBias,         // (H*hs) or empty
    ArrayView<float> KeyBias,           // (KV*hs) or empty
    ArrayView<float> ValueBias,         // (KV*hs) or empty
    ArrayView<float> AttentionOutput,   // (C, H*hs)
    ArrayView<float> AttentionOutputBias, // (C) or empty
    ArrayView<float> MlpNorm,           // (C)
    ArrayView<float> MlpNormBias,       // (C) or empty
    ArrayView<float> MlpGate,           // (I, C) or empty (GPT-2)
    ArrayView<float> MlpUp,             // (I, C)
    ArrayView<float> MlpUpBias,         // (I) or empty
    ArrayView<float> MlpDown,           // (C, I)
    ArrayView<float> MlpDownBias);      // (C) or empty

/// <summary>The frozen-weights arena: every weight of the model uploaded once, as float32, into one
/// device buffer, with named views per block. Nothing here is ever written after upload, and no
/// gradient or optimizer state exists for it.</summary>
/// <remarks>GPT-2's Conv1D weights are stored (in, out); they are transposed once at upload so both
/// families run the same Linear kernels. GPT-2's fused c_attn becomes three row ranges (q, k, v) of
/// one (3C, C) matrix, so both families also share the attention code path.</remarks>
public sealed class DeviceWeights : IDisposable
{
    readonly MemoryBuffer1D<float, Stride1D.Dense> arena;
    readonly BlockWeights[] blocks;

    /// <summary>Token embedding table (V, C).</summary>
    public ArrayView<float> TokenEmbedding { get; }
    /// <summary>Learned positions (P, C) for GPT-2; empty for Llama.</summary>
    public ArrayView<float> PositionEmbedding { get; }
    /// <summary>Final norm scale (C).</summary>
    public ArrayView<float> FinalNorm { get; }
    /// <summary>Final LayerNorm shift (C) for GPT-2; empty for Llama.</summary>
    public ArrayView<float> FinalNormBias { get; }
    /// <summary>LM head (V, C): the embedding table when tied.</summary>
    public ArrayView<float> LmHead { get; }
    /// <summary>The configuration the weights follow.</summary>
    public TransformerConfig Config { get; }
    /// <summary>Bytes held on the device.</summary>
    public long Bytes => arena.LengthInBytes;

    /// <summary>The weights of block <paramref name="layer"/>.</summary>
    public BlockWeights Block(int layer) => blocks[layer];

    DeviceWeights(MemoryBuffer1D<float, Stride1D.Dense> arena, TransformerConfig config, Dictionary<(WeightRole, int), ArrayView<float>> views)
    {
        this.arena = arena;
        Config = config;
        ArrayView<float> Get(WeightRole role, int layer = -1) => views.TryGetValue((role, layer), out var v) ? v : default;
        TokenEmbedding = Get(WeightRole.TokenEmbedding);
        PositionEmbedding = Get(WeightRole.PositionEmbedding);
        FinalNorm = Get(WeightRole.FinalNorm);
        FinalNormBias = Get(WeightRole.FinalNormBias);
        LmHead = config.TieWordEmbeddings ? TokenEmbedding : Get(WeightRole.LmHead);
        int c = config.HiddenSize;
        blocks = new BlockWeights[config.NumLayers];
        for (var i = 0; i < config.NumLayers; i++)
        {
            if (config.Family == ModelFamily.Gpt2)
            {
                var qkv = Get(WeightRole.QkvFused, i);     // (3C, C) after the transpose
                var qkvBias = Get(WeightRole.QkvFusedBias, i); // (3C)
                blocks[i] = new BlockWeights(
                    Get(WeightRole.AttentionNorm, i), Get(WeightRole.AttentionNormBias, i),
                    qkv.SubView(0, (long)c * c), qkv.SubView((long)c * c, (long)c * c), qkv.SubView(2L * c * c, (long)c * c),
                    qkvBias.SubView(0, c), qkvBias.SubView(c, c), qkvBias.SubView(2 * c, c),
                    Get(WeightRole.AttentionOutput, i), Get(WeightRole.AttentionOutputBias, i),
                    Get(WeightRole.MlpNorm, i), Get(WeightRole.MlpNormBias, i),
                    default, Get(WeightRole.MlpUp, i), Get(WeightRole.MlpUpBias, i),
                    Get(WeightRole.MlpDown, i), Get(WeightRole.MlpDownBias, i));
            }
            else
            {
                blocks[i] = new BlockWeights(
                    Get(WeightRole.AttentionNorm, i), default,
                    Get(WeightRole.Query, i), Get(WeightRole.Key, i), Get(WeightRole.Value, i),
                    Get(WeightRole.QueryBias, i), Get(WeightRole.KeyBias, i), Get(WeightRole.ValueBias, i),
                    Get(WeightRole.AttentionOutput, i), Get(WeightRole.AttentionOutputBias, i),
                    Get(WeightRole.MlpNorm, i), default,
                    Get(WeightRole.MlpGate, i), Get(WeightRole.MlpUp, i), default,
                    Get(WeightRole.MlpDown, i), default);
            }
        }
    }

    /// <summary>Uploads every weight of <paramref name="model"/> (F32, or F16/BF16 widened) into one arena.</summary>
    public static DeviceWeights Upload(KernelContext kernels, ModelFolder model)
    {
        var map = model.Weights;
        long total = map.Weights.Sum(w => w.Shape.Aggregate(1L, (a, d) => a * d));
        var arena = kernels.Accelerator.Allocate1D<float>(total);
        try
        {
            var views = new Dictionary<(WeightRole, int), ArrayView<float>>();
            long offset = 0;
            foreach (var w in map.Weights)
            {
                long count = w.Shape.Aggregate(1L, (a, d) => a * d);
                var host = model.Tensors.ReadF32(w.Name);
                // Conv1D stores (in, out); the engine wants (out, in).
                if (w.StoredTransposed) host = Transpose(host, (int)w.Shape[0], (int)w.Shape[1]);
                var view = arena.View.SubView(offset, count);
                view.CopyFromCPU(host);
                views[(w.Role, w.Layer)] = view;
                offset += count;
            }
            return new DeviceWeights(arena, model.Config, views);
        }
        catch
        {
            arena.Dispose();
            throw;
        }
    }

    static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                result[(long)c * rows + r] = source[(long)r * cols + c];
        return result;
    }

    /// <inheritdoc/>
    public void Dispose() => arena.Dispose();
}
