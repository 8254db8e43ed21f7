using PromptEngine.Engine;
using PromptEngine.Models;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace PromptEngine.TorchReference;

/// <summary>How a loss is taken from the final hidden states.</summary>
public enum TorchLossForm
{
    /// <summary>The engine's math: the LM head only at the batch's scored positions, softmax over the verbalizer
    /// when the batch has one, mean cross-entropy over the scored positions whose target is not −1.</summary>
    SameMath,
    /// <summary>What a user following Hugging Face / PEFT writes: logits (B, T, V) at every position, then
    /// <c>cross_entropy(logits.view(−1, V), labels.view(−1), ignore_index: −100)</c> with the labels already
    /// shifted (position p holds the token p predicts). The verbalizer is not used: the softmax spans the whole
    /// vocabulary, as the model's own LM loss does.</summary>
    Idiomatic,
}

/// <summary>
/// An independent TorchSharp implementation of the engine's two model families, built from a Hugging Face model
/// folder, for benchmarking the engine and as a numerical oracle for it. The weights are frozen tensors
/// (requires_grad false); the only leaf that takes a gradient is the soft prompt the caller passes.
/// </summary>
/// <remarks>
/// <para>Llama (Llama, Mistral, Qwen2 configs): RMSNorm, rotate_half RoPE, grouped-query attention (each key/value
/// head serves <see cref="TransformerConfig.QueriesPerKvHead"/> consecutive query heads), SwiGLU, optional q/k/v
/// biases, untied or tied LM head. GPT-2: LayerNorm, learned positions, Conv1D weights (stored (in, out), transposed
/// once at load), GELU with the tanh approximation, tied LM head.</para>
/// <para>Only the tensors are read through PromptEngine (<see cref="ModelFolder"/>: config.json and the safetensors
/// weights, F16/BF16 widened to float); every computation is a TorchSharp op, independent of the engine's kernels.
/// Attention is <c>scaled_dot_product_attention</c> with a boolean (B, 1, T, T) mask of causality and key padding.</para>
/// <para>Tensors returned by the tensor-level methods belong to the caller's dispose scope; the host-level methods
/// (<see cref="Logits(Batch, float[])"/>, <see cref="LossAndPromptGradient(Batch, float[], TorchLossForm)"/>) free
/// everything they make. The thread count is TorchSharp's (<c>torch.set_num_threads</c>).</para>
/// </remarks>
public sealed class TorchCausalLm : IDisposable
{
    readonly bool gpt2;
    readonly Tensor tokenEmbedding;   // (V, C)
    readonly Tensor? positionEmbedding; // (P, C), GPT-2
    readonly Tensor lmHead;           // (V, C), the token embedding when tied
    readonly Tensor finalNorm;        // (C)
    readonly Tensor? finalNormBias;   // (C), GPT-2
    readonly Block[] blocks;
    readonly List<Tensor> owned = [];

    /// <summary>One block's frozen weights, every projection as (out, in).</summary>
    sealed record Block(
        Tensor AttentionNorm, Tensor? AttentionNormBias,
        Tensor Query, Tensor? QueryBias, Tensor Key, Tensor? KeyBias, Tensor Value, Tensor? ValueBias,
        Tensor AttentionOutput, Tensor? AttentionOutputBias,
        Tensor MlpNorm, Tensor? MlpNormBias,
        Tensor? MlpGate, Tensor MlpUp, Tensor? MlpUpBias, Tensor MlpDown, Tensor? MlpDownBias);

    /// <summary>The model's configuration as PromptEngine parsed it.</summary>
    public TransformerConfig Config { get; }

    /// <summary>Element type of the weights and of every activation (float32 unless asked otherwise).</summary>
    public ScalarType DType { get; }

    TorchCausalLm(ModelFolder model, ScalarType dtype)
    {
        Config = model.Config;
        DType = dtype;
        gpt2 = Config.Family == ModelFamily.Gpt2;
        var map = model.Weights;
        int C = Config.HiddenSize;

        Tensor Load(WeightRole role, int layer = -1, bool transpose = false)
        {
            var w = map.Get(role, layer);
            var values = model.Tensors.ReadF32(w.Name);
            var t = tensor(values, w.Shape, float32).to_type(dtype);
            if (transpose) t = t.t().contiguous();
            t.requires_grad = false;
            owned.Add(t);
            return t;
        }
        Tensor? Optional(WeightRole role, int layer) =>
            map.Weights.Any(w => w.Role == role && w.Layer == layer) ? Load(role, layer) : null;

        tokenEmbedding = Load(WeightRole.TokenEmbedding);
        positionEmbedding = gpt2 ? Load(WeightRole.PositionEmbedding) : null;
        lmHead = Config.TieWordEmbeddings ? tokenEmbedding : Load(WeightRole.LmHead);
        finalNorm = Load(WeightRole.FinalNorm);
        finalNormBias = gpt2 ? Load(WeightRole.FinalNormBias) : null;

        blocks = new Block[Config.NumLayers];
        for (var l = 0; l < Config.NumLayers; l++)
        {
            if (gpt2)
            {
                // Conv1D stores (in, out); c_attn's columns are q | k | v.
                var qkv = Load(WeightRole.QkvFused, l, transpose: true);      // (3C, C)
                var qkvBias = Load(WeightRole.QkvFusedBias, l);               // (3C)
                var (q, k, v) = (qkv.narrow(0, 0, C), qkv.narrow(0, C, C), qkv.narrow(0, 2 * C, C));
                var (qb, kb, vb) = (qkvBias.narrow(0, 0, C), qkvBias.narrow(0, C, C), qkvBias.narrow(0, 2 * C, C));
                owned.AddRange([q, k, v, qb, kb, vb]);
                blocks[l] = new Block(
                    Load(WeightRole.AttentionNorm, l), Load(WeightRole.AttentionNormBias, l),
                    q, qb, k, kb, v, vb,
                    Load(WeightRole.AttentionOutput, l, transpose: true), Load(WeightRole.AttentionOutputBias, l),
                    Load(WeightRole.MlpNorm, l), Load(WeightRole.MlpNormBias, l),
                    null, Load(WeightRole.MlpUp, l, transpose: true), Load(WeightRole.MlpUpBias, l),
                    Load(WeightRole.MlpDown, l, transpose: true), Load(WeightRole.MlpDownBias, l));
            }
            else
            {
                blocks[l] = new Block(
                    Load(WeightRole.AttentionNorm, l), null,
                    Load(WeightRole.Query, l), Optional(WeightRole.QueryBias, l),
                    Load(WeightRole.Key, l), Optional(WeightRole.KeyBias, l),
                    Load(WeightRole.Value, l), Optional(WeightRole.ValueBias, l),
                    Load(WeightRole.AttentionOutput, l), null,
                    Load(WeightRole.MlpNorm, l), null,
                    Load(WeightRole.MlpGate, l), Load(WeightRole.MlpUp, l), null,
                    Load(WeightRole.MlpDown, l), null);
            }
        }
    }

    /// <summary>Opens a Hugging Face model folder (config.json + model.safetensors or shards) and copies its weights
    /// into frozen TorchSharp tensors of <paramref name="dtype"/> (float32 by default; float64 for a tighter oracle).</summary>
    /// <exception cref="ModelConfigException">config.json is missing or unusable.</exception>
    /// <exception cref="WeightMismatchException">The tensors do not match the config.</exception>
    public static TorchCausalLm Load(string folder, ScalarType dtype = ScalarType.Float32)
    {
        using var model = ModelFolder.Open(folder);
        return Load(model, dtype);
    }

    /// <summary>Copies the weights of an already opened folder (the folder may be disposed afterwards).</summary>
    public static TorchCausalLm Load(ModelFolder model, ScalarType dtype = ScalarType.Float32)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.Float64))
            throw new ArgumentException($"TorchCausalLm computes in float32 or float64, not {dtype}", nameof(dtype));
        EnsureTorchLoads();
        using var scope = NewDisposeScope();
        var result = new TorchCausalLm(model, dtype);
        foreach (var t in result.owned) t.MoveToOuterDisposeScope();
        return result;
    }

    /// <summary>Turns the loader's TypeInitializationException into a message that says what to do.</summary>
    /// <exception cref="InvalidOperationException">TorchSharp's native library did not load.</exception>
    public static void EnsureTorchLoads()
    {
        try
        {
            using var probe = zeros(1);
        }
        catch (TypeInitializationException e)
        {
            throw new InvalidOperationException(
                "TorchSharp's native library did not load. Where the system libstdc++ predates GLIBCXX_3.4.32 (Debian 12), the project " +
                "that runs this must import build/TorchSharpNativePatch.targets, so that its build patches the copy of " +
                "libLibTorchSharp.so in its output folder (BENCHMARKS.md, \"TorchSharp on this machine\"). Loader message: " +
                (e.InnerException?.Message ?? e.Message), e);
        }
    }

    /// <summary>Converts an engine batch into index tensors once (check it with <see cref="Batch.Validate"/>'s rules first).</summary>
    /// <exception cref="ArgumentException">The batch does not fit the model's vocabulary or positions.</exception>
    public TorchBatch Prepare(Batch batch)
    {
        batch.Validate(Config.VocabSize, int.MaxValue, Config.MaxPositions);
        using var scope = NewDisposeScope();
        var prepared = new TorchBatch(batch, Config, DType);
        scope.MoveToOuter(AllTensors(prepared));
        return prepared;
    }

    static IEnumerable<Tensor> AllTensors(TorchBatch b) =>
        new[] { b.TokenIds, b.PromptIndex, b.IsPrompt, b.AttentionMask, b.PositionIds, b.Cos, b.Sin, b.LossPositions, b.TargetColumns, b.Verbalizer, b.DenseLabels }
            .Where(t => t is not null)!;

    /// <summary>A prompt bank (P, C) as a leaf tensor of the model's dtype that requires grad.</summary>
    public Tensor PromptLeaf(float[] values)
    {
        int C = Config.HiddenSize;
        if (values.Length % C != 0) throw new ArgumentException($"prompt: {values.Length} values is not a whole number of rows of width {C}", nameof(values));
        using var scope = NewDisposeScope();
        var leaf = tensor(values, [values.Length / C, C], float32).to_type(DType).detach().requires_grad_(true);
        return leaf.MoveToOuterDisposeScope();
    }

    /// <summary>The final hidden states (B·T, C), after the final norm: embedding (prompt rows taken from
    /// <paramref name="prompt"/> (P, C) where the source map says so), every block, the final norm.</summary>
    public Tensor FinalHidden(TorchBatch batch, Tensor prompt)
    {
        CheckPrompt(batch, prompt);
        int B = batch.Rows, T = batch.Length, C = Config.HiddenSize;
        var x = tokenEmbedding.index_select(0, batch.TokenIds);                       // (N, C)
        if (batch.ReadsPrompt) x = where(batch.IsPrompt, prompt.index_select(0, batch.PromptIndex), x);
        if (gpt2) x = x + positionEmbedding!.index_select(0, batch.PositionIds);
        x = x.reshape(B, T, C);
        foreach (var block in blocks)
        {
            x = x + Attention(block, Norm(x, block.AttentionNorm, block.AttentionNormBias), batch);
            x = x + Mlp(block, Norm(x, block.MlpNorm, block.MlpNormBias));
        }
        return Norm(x, finalNorm, finalNormBias).reshape(B * T, C);
    }

    /// <summary>Logits (S, V), or (S, R) over the batch's verbalizer, at the scored positions only: the engine's
    /// <c>TransformerEngine.Logits</c>.</summary>
    public Tensor LogitsAtLossPositions(TorchBatch batch, Tensor prompt)
    {
        var rows = FinalHidden(batch, prompt).index_select(0, batch.LossPositions);    // (S, C)
        var head = batch.Verbalizer is { } words ? lmHead.index_select(0, words) : lmHead;
        return F.linear(rows, head);
    }

    /// <summary>Logits (B·T, V) at every position.</summary>
    public Tensor AllLogits(TorchBatch batch, Tensor prompt) => F.linear(FinalHidden(batch, prompt), lmHead);

    /// <summary>The scalar mean loss of the batch in the given form; differentiable with respect to <paramref name="prompt"/>.</summary>
    public Tensor Loss(TorchBatch batch, Tensor prompt, TorchLossForm form = TorchLossForm.SameMath)
    {
        if (batch.Source.LossPositions.Length == 0) throw new ArgumentException("batch has no scored positions: nothing to take a loss over");
        return form == TorchLossForm.SameMath
            ? F.cross_entropy(LogitsAtLossPositions(batch, prompt), batch.TargetColumns, ignore_index: -1)
            : F.cross_entropy(AllLogits(batch, prompt), batch.DenseLabels, ignore_index: -100);
    }

    /// <summary>Host-level logits at the scored positions, (S, V) or (S, R) row-major, for a prompt bank
    /// (P, C) row-major (empty for none).</summary>
    public float[] Logits(Batch batch, float[] prompt)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        using var prepared = Prepare(batch);
        var promptTensor = PromptLeaf(prompt);
        return ToFloats(LogitsAtLossPositions(prepared, promptTensor));
    }

    /// <summary>Host-level forward, loss and autograd backward: the mean loss and dLoss/dPrompt (P, C) row-major,
    /// computed fresh (not accumulated) — the engine's <c>LossAndPromptGradient</c> after a zeroed gradient.</summary>
    public (float Loss, float[] PromptGradient) LossAndPromptGradient(Batch batch, float[] prompt, TorchLossForm form = TorchLossForm.SameMath)
    {
        using var scope = NewDisposeScope();
        using var prepared = Prepare(batch);
        var leaf = PromptLeaf(prompt);
        var loss = Loss(prepared, leaf, form);
        loss.backward();
        var gradient = leaf.grad is { } g ? ToFloats(g) : new float[prompt.Length];
        return (loss.to_type(float32).item<float>(), gradient);
    }

    /// <summary>A tensor's values as float32, row-major.</summary>
    public static float[] ToFloats(Tensor t)
    {
        using var scope = NewDisposeScope();
        return t.detach().to_type(float32).contiguous().data<float>().ToArray();
    }

    void CheckPrompt(TorchBatch batch, Tensor prompt)
    {
        if (!batch.ReadsPrompt) return;
        if (prompt.dim() != 2 || prompt.shape[1] != Config.HiddenSize || prompt.shape[0] < batch.PromptRowsUsed)
            throw new ArgumentException($"prompt: shape [{string.Join(", ", prompt.shape)}], but the batch reads {batch.PromptRowsUsed} rows of width {Config.HiddenSize}");
        if (prompt.dtype != DType) throw new ArgumentException($"prompt: dtype {prompt.dtype}, the model computes in {DType}");
    }

    Tensor Norm(Tensor x, Tensor weight, Tensor? bias)
    {
        if (gpt2) return F.layer_norm(x, [Config.HiddenSize], weight, bias, Config.NormEps);
        var meanSquare = x.pow(2).mean([-1L], keepdim: true);
        return x * (meanSquare + Config.NormEps).rsqrt() * weight;
    }

    Tensor Attention(Block w, Tensor h, TorchBatch batch)
    {
        int B = batch.Rows, T = batch.Length, H = Config.NumHeads, KV = Config.NumKvHeads, hs = Config.HeadDim;
        // (B, T, heads·hs) → (B, heads, T, hs)
        Tensor Heads(Tensor t, int heads) => t.reshape(B, T, heads, hs).transpose(1, 2);
        var q = Heads(F.linear(h, w.Query, w.QueryBias), H);
        var k = Heads(F.linear(h, w.Key, w.KeyBias), KV);
        var v = Heads(F.linear(h, w.Value, w.ValueBias), KV);
        if (!gpt2)
        {
            q = Rotate(q, batch);
            k = Rotate(k, batch);
        }
        if (KV != H)
        {
            // Query head j reads key/value head j / (H / KV), as Hugging Face's repeat_kv lays them out.
            k = k.repeat_interleave(H / KV, dim: 1);
            v = v.repeat_interleave(H / KV, dim: 1);
        }
        var attended = F.scaled_dot_product_attention(q, k, v, batch.AttentionMask); // (B, H, T, hs), scale 1/√hs
        return F.linear(attended.transpose(1, 2).reshape(B, T, H * hs), w.AttentionOutput, w.AttentionOutputBias);
    }

    /// <summary>rotate_half RoPE: x·cos + rotate_half(x)·sin, rotate_half(x) = (−x₂, x₁) over the two halves of the head.</summary>
    static Tensor Rotate(Tensor x, TorchBatch batch)
    {
        var half = x.shape[^1] / 2;
        var rotated = cat(new[] { -x.narrow(-1, half, half), x.narrow(-1, 0, half) }, -1);
        return x * batch.Cos! + rotated * batch.Sin!;
    }

    Tensor Mlp(Block w, Tensor h)
    {
        if (gpt2)
        {
            var u = F.linear(h, w.MlpUp, w.MlpUpBias);
            // GELU, tanh approximation ("gelu_new"): ½u(1 + tanh(√(2/π)(u + 0.044715u³))).
            var activated = 0.5 * u * (1 + tanh(Math.Sqrt(2 / Math.PI) * (u + 0.044715 * u.pow(3))));
            return F.linear(activated, w.MlpDown, w.MlpDownBias);
        }
        return F.linear(F.silu(F.linear(h, w.MlpGate!)) * F.linear(h, w.MlpUp), w.MlpDown);
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var t in owned) t.Dispose();
        owned.Clear();
    }
}
