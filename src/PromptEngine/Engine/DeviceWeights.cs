using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using Half = ILGPU.Half;

namespace PromptEngine.Engine;

/// <summary>One block's frozen weights as views into the weights arena, in the engine's layout:
/// every projection is (out, in) so that <c>Linear</c> computes Y = X·Wᵀ. Absent parts (biases of
/// Llama, the gate of GPT-2) are empty views.</summary>
public readonly record struct BlockWeights(
    ArrayView<float> AttentionNorm,     // (C)
    ArrayView<float> AttentionNormBias, // (C) or empty
    WeightView Qkv,               // ((H + 2·KV)*hs, C): the q, k and v rows back to back
    ArrayView<float> QkvBias,           // ((H + 2·KV)*hs) or empty
    WeightView AttentionOutput,   // (C, H*hs)
    ArrayView<float> AttentionOutputBias, // (C) or empty
    ArrayView<float> MlpNorm,           // (C)
    ArrayView<float> MlpNormBias,       // (C) or empty
    WeightView MlpGateUp,         // (2I, C): Llama's gate rows then up rows; empty for GPT-2
    WeightView MlpUp,             // (I, C): GPT-2's c_fc; empty for Llama
    ArrayView<float> MlpUpBias,         // (I) or empty
    WeightView MlpDown,           // (C, I)
    ArrayView<float> MlpDownBias);      // (C) or empty

/// <summary>The frozen-weights arena: every weight of the model placed once on the device, with named views per block.
/// Nothing here is ever written after upload, and no gradient or optimizer state exists for it.</summary>
/// <remarks>GPT-2's Conv1D weights are stored (in, out); they are transposed once at upload so both
/// families run the same Linear kernels. The query, key and value projections are one matrix of (H + 2·KV)·hs rows:
/// GPT-2 stores them so (c_attn), and Llama's q_proj, k_proj and v_proj (and their biases, when present) follow each
/// other in the weight map, so they are placed back to back and one view spans them, with no copy. One Linear then
/// computes q, k and v together. Llama's gate_proj and up_proj are spanned the same way, (2I, C), for one Linear into
/// the SwiGLU.
/// <para>The block projections (q, k, v, o, gate, up, down: all but a few percent of a large model) are stored in the
/// chosen <see cref="WeightFormat"/>, in a second arena when that is 16-bit; embeddings, norms, biases and the LM head
/// stay float32 (their kernels read float32 only). The Linear kernels widen 16-bit weights as they read them and
/// accumulate in float32.</para></remarks>
public sealed class DeviceWeights : IDisposable
{
    readonly MemoryBuffer1D<float, Stride1D.Dense> arena;
    readonly MemoryBuffer? projections; // the 16-bit arena; null when the projections are float32 (then in `arena`)
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
    /// <summary>How the block projections are stored.</summary>
    public WeightFormat Format { get; }
    /// <summary>Bytes held on the device (both arenas).</summary>
    public long Bytes => arena.LengthInBytes + (projections?.LengthInBytes ?? 0);

    /// <summary>The weights of block <paramref name="layer"/>.</summary>
    public BlockWeights Block(int layer) => blocks[layer];

    /// <summary>Whether a weight of this role is a block projection, stored in the chosen <see cref="WeightFormat"/>.</summary>
    public static bool IsProjection(WeightRole role) => role is WeightRole.Query or WeightRole.Key or WeightRole.Value
        or WeightRole.QkvFused or WeightRole.AttentionOutput or WeightRole.MlpGate or WeightRole.MlpUp or WeightRole.MlpDown;

    /// <summary>Bytes the weights of <paramref name="config"/> take on the device with projections in
    /// <paramref name="format"/>: what <see cref="Bytes"/> will say, computed without a device.</summary>
    public static long PlannedBytes(TransformerConfig config, WeightFormat format)
    {
        var (floats, projectionWeights) = Counts(WeightMap.For(config), format);
        return floats * sizeof(float) + projectionWeights * WeightView.BytesPerWeight(format);
    }

    /// <summary>Elements of the float32 arena and of the 16-bit one (0 when <paramref name="format"/> is float32).</summary>
    static (long Floats, long Projections) Counts(WeightMap map, WeightFormat format)
    {
        long floats = 0, projectionWeights = 0;
        foreach (var w in map.Weights)
        {
            long count = w.Shape.Aggregate(1L, (a, d) => a * d);
            if (format != WeightFormat.F32 && IsProjection(w.Role)) projectionWeights += count;
            else floats += count;
        }
        return (floats, projectionWeights);
    }

    DeviceWeights(MemoryBuffer1D<float, Stride1D.Dense> arena, MemoryBuffer? projections, TransformerConfig config, WeightFormat format,
        Dictionary<(WeightRole, int), WeightView> views, Dictionary<int, WeightView> gateUp)
    {
        this.arena = arena;
        this.projections = projections;
        Config = config;
        Format = format;
        WeightView Matrix(WeightRole role, int layer = -1) => views.TryGetValue((role, layer), out var v) ? v : default(ArrayView<float>);
        ArrayView<float> Get(WeightRole role, int layer = -1) => views.TryGetValue((role, layer), out var v) ? v.F32 : default;
        TokenEmbedding = Get(WeightRole.TokenEmbedding);
        PositionEmbedding = Get(WeightRole.PositionEmbedding);
        FinalNorm = Get(WeightRole.FinalNorm);
        FinalNormBias = Get(WeightRole.FinalNormBias);
        LmHead = config.TieWordEmbeddings ? TokenEmbedding : Get(WeightRole.LmHead);
        blocks = new BlockWeights[config.NumLayers];
        for (var i = 0; i < config.NumLayers; i++)
        {
            // GPT-2's c_attn is (3C, C) after the transpose; Llama's span is placed by Place.
            var (qkv, qkvBias) = (Matrix(WeightRole.QkvFused, i), Get(WeightRole.QkvFusedBias, i));
            if (config.Family == ModelFamily.Gpt2)
            {
                blocks[i] = new BlockWeights(
                    Get(WeightRole.AttentionNorm, i), Get(WeightRole.AttentionNormBias, i), qkv, qkvBias,
                    Matrix(WeightRole.AttentionOutput, i), Get(WeightRole.AttentionOutputBias, i),
                    Get(WeightRole.MlpNorm, i), Get(WeightRole.MlpNormBias, i),
                    default(ArrayView<float>), Matrix(WeightRole.MlpUp, i), Get(WeightRole.MlpUpBias, i),
                    Matrix(WeightRole.MlpDown, i), Get(WeightRole.MlpDownBias, i));
            }
            else
            {
                blocks[i] = new BlockWeights(
                    Get(WeightRole.AttentionNorm, i), default, qkv, qkvBias,
                    Matrix(WeightRole.AttentionOutput, i), Get(WeightRole.AttentionOutputBias, i),
                    Get(WeightRole.MlpNorm, i), default,
                    gateUp.TryGetValue(i, out var mlpGateUp) ? mlpGateUp : default(ArrayView<float>), default(ArrayView<float>), default,
                    Matrix(WeightRole.MlpDown, i), default);
            }
        }
    }

    /// <summary>Allocates both arenas for <paramref name="map"/> and hands each weight its view, in map order; then
    /// <paramref name="fill"/> writes every weight (index in the map, its description, its view).</summary>
    static DeviceWeights Place(KernelContext kernels, WeightMap map, WeightFormat format, Action<int, ExpectedWeight, WeightView> fill)
    {
        var (floats, projectionWeights) = Counts(map, format);
        var accelerator = kernels.Accelerator;
        var arena = accelerator.Allocate1D<float>(Math.Max(1, floats));
        MemoryBuffer? projections = null;
        try
        {
            MemoryBuffer1D<Half, Stride1D.Dense>? half = null;
            MemoryBuffer1D<ushort, Stride1D.Dense>? bf16 = null;
            if (format == WeightFormat.F16) projections = half = accelerator.Allocate1D<Half>(Math.Max(1, projectionWeights));
            if (format == WeightFormat.Bf16) projections = bf16 = accelerator.Allocate1D<ushort>(Math.Max(1, projectionWeights));
            var views = new Dictionary<(WeightRole, int), WeightView>();
            var placed = new Dictionary<(WeightRole, int), (bool Projection, long Offset, long Length)>();
            long floatOffset = 0, projectionOffset = 0;
            for (var index = 0; index < map.Weights.Count; index++)
            {
                var w = map.Weights[index];
                long count = w.Shape.Aggregate(1L, (a, d) => a * d);
                bool projection = format != WeightFormat.F32 && IsProjection(w.Role);
                placed[(w.Role, w.Layer)] = (projection, projection ? projectionOffset : floatOffset, count);
                var view = View(projection, projection ? projectionOffset : floatOffset, count);
                if (projection) projectionOffset += count;
                else floatOffset += count;
                fill(index, w, view);
                views[(w.Role, w.Layer)] = view;
            }
            WeightView View(bool projection, long offset, long length) => !projection ? WeightView.Of(arena.View.SubView(offset, length))
                : half is not null ? WeightView.Of(half.View.SubView(offset, length)) : WeightView.OfBf16(bf16!.View.SubView(offset, length));
            // One view over weights placed back to back (the map lists them in this order), or null when the first is absent.
            WeightView? Span(int layer, params WeightRole[] roles)
            {
                if (!placed.TryGetValue((roles[0], layer), out var first)) return null;
                long length = 0;
                foreach (var role in roles)
                {
                    var part = placed[(role, layer)];
                    if (part.Projection != first.Projection || part.Offset != first.Offset + length)
                        throw new InvalidOperationException($"weights: {role} of layer {layer} is not placed right after {roles[0]}'s run");
                    length += part.Length;
                }
                return View(first.Projection, first.Offset, length);
            }
            var gateUp = new Dictionary<int, WeightView>();
            for (var layer = 0; layer < map.Config.NumLayers; layer++)
            {
                if (Span(layer, WeightRole.Query, WeightRole.Key, WeightRole.Value) is { } qkv) views[(WeightRole.QkvFused, layer)] = qkv;
                if (Span(layer, WeightRole.QueryBias, WeightRole.KeyBias, WeightRole.ValueBias) is { } qkvBias) views[(WeightRole.QkvFusedBias, layer)] = qkvBias;
                if (Span(layer, WeightRole.MlpGate, WeightRole.MlpUp) is { } mlpGateUp) gateUp[layer] = mlpGateUp;
            }
            return new DeviceWeights(arena, projections, map.Config, format, views, gateUp);
        }
        catch
        {
            projections?.Dispose();
            arena.Dispose();
            throw;
        }
    }

    /// <summary>Uploads every weight of <paramref name="model"/> (F32, or F16/BF16 widened on read), the block
    /// projections stored in <paramref name="format"/> (rounded to nearest even when narrowed).</summary>
    public static DeviceWeights Upload(KernelContext kernels, ModelFolder model, WeightFormat format = WeightFormat.F32) =>
        Place(kernels, model.Weights, format, (_, w, view) =>
        {
            var host = model.Tensors.ReadF32(w.Name);
            // Conv1D stores (in, out); the engine wants (out, in).
            if (w.StoredTransposed) host = Transpose(host, (int)w.Shape[0], (int)w.Shape[1]);
            switch (view.Format)
            {
                case WeightFormat.F16: view.F16.CopyFromCPU(Array.ConvertAll(host, v => (Half)v)); break;
                case WeightFormat.Bf16: view.Bf16.CopyFromCPU(Array.ConvertAll(host, WeightView.ToBf16)); break;
                default: view.F32.CopyFromCPU(host); break;
            }
        });

    /// <summary>Seeded random weights for <paramref name="config"/>, generated on the device (nothing is uploaded):
    /// matrices uniform in ±1/√fan-in, norm scales 1, other vectors in ±0.02, embeddings and LM head in ±0.05. For
    /// benchmarks at the shapes of models too large to ship; element i of the tensor at index t of the weight map is
    /// <see cref="RandomFill.Value"/>(<see cref="TensorSeed"/>(seed, t), i, …) in its storage format, in the
    /// engine's layout (GPT-2's Conv1D weights are generated already transposed).</summary>
    public static DeviceWeights Generate(KernelContext kernels, TransformerConfig config, WeightFormat format, ulong seed)
    {
        var weights = Place(kernels, WeightMap.For(config), format, (index, w, view) =>
        {
            var (centre, radius) = InitialRange(w);
            kernels.RandomFill.Uniform(view, TensorSeed(seed, index), centre, radius);
        });
        kernels.Synchronize();
        return weights;
    }

    /// <summary>The seed of the tensor at <paramref name="index"/> of the weight map in <see cref="Generate"/>.</summary>
    public static ulong TensorSeed(ulong seed, int index) => seed * 1_000_003UL + (ulong)index;

    /// <summary>The (centre, radius) <see cref="Generate"/> draws a weight from.</summary>
    public static (float Centre, float Radius) InitialRange(ExpectedWeight w) => w.Role switch
    {
        WeightRole.TokenEmbedding or WeightRole.LmHead or WeightRole.PositionEmbedding => (0f, 0.05f),
        WeightRole.AttentionNorm or WeightRole.MlpNorm or WeightRole.FinalNorm => (1f, 0f),
        _ when w.Shape.Length == 1 => (0f, 0.02f),
        _ => (0f, (float)(1 / Math.Sqrt(w.StoredTransposed ? w.Shape[0] : w.Shape[1]))),
    };

    static float[] Transpose(float[] source, int rows, int cols)
    {
        var result = new float[source.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                result[(long)c * rows + r] = source[(long)r * cols + c];
        return result;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        projections?.Dispose();
        arena.Dispose();
    }
}
