using PromptEngine.Models;

namespace PromptEngine.Tests.Reference;

/// <summary>
/// The whole model in naive double-precision C#, for both families, written from the Hugging Face
/// definitions and not from the engine: the oracle for the engine's logits, loss, dLoss/dPrompt and
/// greedy decoding.
///
/// Inputs (all row-major, row i = b·T + t):
/// <list type="bullet">
/// <item>sourceMap (B·T): s ≥ 0 is token id s (a row of the embedding table); s &lt; 0 is row p = −1 − s
/// of the prompt bank (P, C). This is the engine's embedding-kernel convention.</item>
/// <item>keyMask (B·T): 1 = real position, 0 = padding; padding keys are never attended to. Attention
/// is causal by index (key s ≤ query t). A query whose allowed keys are all masked outputs zeros.</item>
/// <item>positionIds (B·T), default t: GPT-2 adds wpe[position] to every position (prompt positions
/// included, as HF does for inputs_embeds); Llama rotates q and k by RoPE at that position
/// (HF rotate_half convention, inv_freq_i = θ^(−2i/hs)).</item>
/// </list>
/// Grouped-query attention: query head h reads kv head h / (H / KV).
/// All linear weights are held (out, in); GPT-2's Conv1D weights, stored (in, out), are transposed on load.
/// </summary>
public sealed partial class ModelReference
{
    /// <summary>One block's weights, every matrix (out, in).</summary>
    sealed class Block
    {
        public required double[] AttentionNorm;       // (C)
        public double[]? AttentionNormBias;           // (C) GPT-2
        public required double[] Query;               // (H·hs, C)
        public required double[] Key;                 // (KV·hs, C)
        public required double[] Value;               // (KV·hs, C)
        public double[]? QueryBias, KeyBias, ValueBias;
        public required double[] AttentionOutput;     // (C, H·hs)
        public double[]? AttentionOutputBias;         // (C) GPT-2, Llama with attention_bias
        public required double[] MlpNorm;             // (C)
        public double[]? MlpNormBias;                 // (C) GPT-2
        public double[]? MlpGate;                     // (I, C) Llama
        public required double[] MlpUp;               // (I, C)
        public double[]? MlpUpBias;                   // (I) GPT-2
        public required double[] MlpDown;             // (C, I)
        public double[]? MlpDownBias;                 // (C) GPT-2
    }

    readonly double[] tokenEmbedding;      // (V, C)
    readonly double[]? positionEmbedding;  // (MaxPositions, C) GPT-2
    readonly Block[] blocks;
    readonly double[] finalNorm;           // (C)
    readonly double[]? finalNormBias;      // (C) GPT-2
    readonly double[] head;                // (V, C), the embedding table itself when tied
    readonly double[] inverseFrequency;    // (hs/2) Llama

    /// <summary>The model's configuration.</summary>
    public TransformerConfig Config { get; }

    bool IsGpt2 => Config.Family == ModelFamily.Gpt2;
    int C => Config.HiddenSize;
    int V => Config.VocabSize;
    int H => Config.NumHeads;
    int KV => Config.NumKvHeads;
    int HS => Config.HeadDim;
    int I => Config.IntermediateSize;

    ModelReference(TransformerConfig config, double[] tokenEmbedding, double[]? positionEmbedding, Block[] blocks,
        double[] finalNorm, double[]? finalNormBias, double[] head)
    {
        Config = config;
        this.tokenEmbedding = tokenEmbedding;
        this.positionEmbedding = positionEmbedding;
        this.blocks = blocks;
        this.finalNorm = finalNorm;
        this.finalNormBias = finalNormBias;
        this.head = head;
        // HF LlamaRotaryEmbedding: inv_freq = 1 / base^(arange(0, dim, 2) / dim).
        inverseFrequency = new double[config.HeadDim / 2];
        for (int i = 0; i < inverseFrequency.Length; i++)
            inverseFrequency[i] = 1.0 / Math.Pow(config.RopeTheta, 2.0 * i / config.HeadDim);
    }

    /// <summary>Reads every weight of <paramref name="model"/> into double arrays.</summary>
    public static ModelReference Load(ModelFolder model)
    {
        var config = model.Config;
        var map = model.Weights;
        double[] Read(WeightRole role, int layer = -1)
        {
            var w = map.Get(role, layer);
            var values = model.Tensors.ReadF32(w.Name);
            if (!w.StoredTransposed) return Array.ConvertAll(values, v => (double)v);
            // Conv1D (in, out) → (out, in).
            int rows = checked((int)w.Shape[0]), cols = checked((int)w.Shape[1]);
            var result = new double[values.Length];
            for (int r = 0; r < rows; r++)
                for (int c = 0; c < cols; c++)
                    result[c * rows + r] = values[r * cols + c];
            return result;
        }
        double[]? ReadIf(bool present, WeightRole role, int layer) => present ? Read(role, layer) : null;

        int C = config.HiddenSize;
        var blocks = new Block[config.NumLayers];
        for (int l = 0; l < blocks.Length; l++)
        {
            if (config.Family == ModelFamily.Gpt2)
            {
                var qkv = Read(WeightRole.QkvFused, l);        // (3C, C) after the transpose
                var qkvBias = Read(WeightRole.QkvFusedBias, l); // (3C)
                blocks[l] = new Block
                {
                    AttentionNorm = Read(WeightRole.AttentionNorm, l),
                    AttentionNormBias = Read(WeightRole.AttentionNormBias, l),
                    Query = qkv[..(C * C)],
                    Key = qkv[(C * C)..(2 * C * C)],
                    Value = qkv[(2 * C * C)..],
                    QueryBias = qkvBias[..C],
                    KeyBias = qkvBias[C..(2 * C)],
                    ValueBias = qkvBias[(2 * C)..],
                    AttentionOutput = Read(WeightRole.AttentionOutput, l),
                    AttentionOutputBias = Read(WeightRole.AttentionOutputBias, l),
                    MlpNorm = Read(WeightRole.MlpNorm, l),
                    MlpNormBias = Read(WeightRole.MlpNormBias, l),
                    MlpUp = Read(WeightRole.MlpUp, l),
                    MlpUpBias = Read(WeightRole.MlpUpBias, l),
                    MlpDown = Read(WeightRole.MlpDown, l),
                    MlpDownBias = Read(WeightRole.MlpDownBias, l),
                };
            }
            else
            {
                blocks[l] = new Block
                {
                    AttentionNorm = Read(WeightRole.AttentionNorm, l),
                    Query = Read(WeightRole.Query, l),
                    Key = Read(WeightRole.Key, l),
                    Value = Read(WeightRole.Value, l),
                    QueryBias = ReadIf(config.QkvBias, WeightRole.QueryBias, l),
                    KeyBias = ReadIf(config.QkvBias, WeightRole.KeyBias, l),
                    ValueBias = ReadIf(config.QkvBias, WeightRole.ValueBias, l),
                    AttentionOutput = Read(WeightRole.AttentionOutput, l),
                    AttentionOutputBias = ReadIf(config.OutputBias, WeightRole.AttentionOutputBias, l),
                    MlpNorm = Read(WeightRole.MlpNorm, l),
                    MlpGate = Read(WeightRole.MlpGate, l),
                    MlpUp = Read(WeightRole.MlpUp, l),
                    MlpDown = Read(WeightRole.MlpDown, l),
                };
            }
        }
        bool gpt2 = config.Family == ModelFamily.Gpt2;
        var embedding = Read(WeightRole.TokenEmbedding);
        return new ModelReference(config, embedding,
            gpt2 ? Read(WeightRole.PositionEmbedding) : null,
            blocks,
            Read(WeightRole.FinalNorm),
            gpt2 ? Read(WeightRole.FinalNormBias) : null,
            config.TieWordEmbeddings ? embedding : Read(WeightRole.LmHead));
    }

    #region Public API

    /// <summary>Logits (B·T, V) of every position.</summary>
    /// <param name="sourceMap">(B·T) token id, or −1 − p for prompt row p.</param>
    /// <param name="prompt">(P, C) the prompt bank; may be empty when no position uses it.</param>
    /// <param name="keyMask">(B·T) 1 real, 0 padding; null = all real.</param>
    /// <param name="positionIds">(B·T); null = t.</param>
    public double[] Logits(int[] sourceMap, double[] prompt, int B, int T, int[]? keyMask = null, int[]? positionIds = null)
    {
        var trace = Forward(sourceMap, prompt, B, T, keyMask, positionIds);
        return HeadForward(trace.FinalNormed, B * T);
    }

    /// <summary>Mean cross-entropy over the positions whose target is not −1, and its gradient with
    /// respect to the prompt bank.</summary>
    /// <param name="targets">(B·T) the token the logits at that position should predict (already shifted), −1 = ignored.</param>
    /// <param name="verbalizer">When given, the softmax runs over these vocabulary rows only and every target must be one of them.</param>
    /// <returns>The loss and dPrompt (P, C): the sum over every position that used each prompt row.</returns>
    public (double Loss, double[] DPrompt) LossAndPromptGradient(int[] sourceMap, double[] prompt, int[] targets, int B, int T,
        int[]? keyMask = null, int[]? positionIds = null, int[]? verbalizer = null)
    {
        var (loss, dLogits, trace) = LossForward(sourceMap, prompt, targets, B, T, keyMask, positionIds, verbalizer, null, 0);
        return (loss, Backward(trace, dLogits, prompt.Length / C, null));
    }

    (double Loss, double[] DLogits, Trace Trace) LossForward(int[] sourceMap, double[] prompt, int[] targets, int B, int T,
        int[]? keyMask, int[]? positionIds, int[]? verbalizer, double[]? prefix, int deepVirtualTokens)
    {
        int N = B * T;
        if (targets.Length != N) throw new ArgumentException($"targets has {targets.Length} entries, expected B·T = {N}", nameof(targets));
        var classes = verbalizer ?? Enumerable.Range(0, V).ToArray();
        foreach (var c in classes)
            if (c < 0 || c >= V) throw new ArgumentOutOfRangeException(nameof(verbalizer), $"verbalizer id {c} is outside the vocabulary of {V}");
        for (int i = 0; i < N; i++)
            if (targets[i] != -1 && Array.IndexOf(classes, targets[i]) < 0)
                throw new ArgumentOutOfRangeException(nameof(targets), $"target {targets[i]} at row {i} is " + (verbalizer is null ? $"outside the vocabulary of {V}" : "not in the verbalizer"));
        int count = targets.Count(t => t != -1);
        if (count == 0) throw new ArgumentException("every target is ignored (−1); the mean loss is undefined", nameof(targets));

        var trace = Forward(sourceMap, prompt, B, T, keyMask, positionIds, prefix, deepVirtualTokens);
        var logits = HeadForward(trace.FinalNormed, N);

        // Cross-entropy over the class set; dLogits = (softmax − onehot) / count on those columns only.
        double loss = 0;
        var dLogits = new double[N * V];
        for (int i = 0; i < N; i++)
        {
            if (targets[i] == -1) continue;
            double max = double.NegativeInfinity;
            foreach (var c in classes) max = Math.Max(max, logits[i * V + c]);
            double sum = 0;
            foreach (var c in classes) sum += Math.Exp(logits[i * V + c] - max);
            double logZ = max + Math.Log(sum);
            loss += logZ - logits[i * V + targets[i]];
            foreach (var c in classes) dLogits[i * V + c] = Math.Exp(logits[i * V + c] - logZ) / count;
            dLogits[i * V + targets[i]] -= 1.0 / count;
        }
        return (loss / count, dLogits, trace);
    }

    /// <summary>Logits (B·T, V) of every position with a deep prompt <paramref name="prefix"/> (L, 2, Pv, KV·hs); positions
    /// default to Pv + t.</summary>
    public double[] LogitsWithPrefix(int[] sourceMap, double[] prompt, double[] prefix, int deepVirtualTokens, int B, int T, int[]? keyMask = null, int[]? positionIds = null)
    {
        var trace = Forward(sourceMap, prompt, B, T, keyMask, positionIds, prefix, deepVirtualTokens);
        return HeadForward(trace.FinalNormed, B * T);
    }

    /// <summary><see cref="LossAndPromptGradient"/> with a deep prompt <paramref name="prefix"/> (L, 2, Pv, KV·hs): per layer
    /// Pv keys then Pv values, each (KV, hs), used as past keys (no RoPE) that every query attends to. Positions default to Pv + t.</summary>
    /// <returns>The loss, dPrompt (P, C) and dPrefix (L, 2, Pv, KV·hs), the latter summed over the batch rows.</returns>
    public (double Loss, double[] DPrompt, double[] DPrefix) LossAndGradients(int[] sourceMap, double[] prompt, double[] prefix, int deepVirtualTokens,
        int[] targets, int B, int T, int[]? keyMask = null, int[]? positionIds = null, int[]? verbalizer = null)
    {
        var (loss, dLogits, trace) = LossForward(sourceMap, prompt, targets, B, T, keyMask, positionIds, verbalizer, prefix, deepVirtualTokens);
        var dPrefix = new double[prefix.Length];
        var dPrompt = Backward(trace, dLogits, prompt.Length / C, dPrefix);
        return (loss, dPrompt, dPrefix);
    }

    /// <summary>Greedy decoding without a soft prompt, recomputing the whole sequence for every new
    /// token (no cache), ties to the lowest id.</summary>
    /// <returns>The new tokens only, ending with <paramref name="eosId"/> when it was produced.</returns>
    public int[] GreedyGenerate(int[] virtualTokens, int maxNewTokens, int? eosId)
    {
        if (virtualTokens.Length == 0) throw new ArgumentException("at least one prompt token is needed", nameof(virtualTokens));
        var sequence = new List<int>(virtualTokens);
        var generated = new List<int>();
        for (int step = 0; step < maxNewTokens; step++)
        {
            int T = sequence.Count;
            var trace = Forward(sequence.ToArray(), [], 1, T, null, null);
            // Only the last position's logits are needed.
            var last = HeadForward(trace.FinalNormed.AsSpan((T - 1) * C, C).ToArray(), 1);
            int next = 0;
            for (int v = 1; v < V; v++)
                if (last[v] > last[next]) next = v;
            generated.Add(next);
            sequence.Add(next);
            if (next == eosId) break;
        }
        return generated.ToArray();
    }

    #endregion

    #region Forward

    /// <summary>The activations the backward pass needs.</summary>
    sealed class Trace
    {
        public required int B, T, N;
        public required int[] SourceMap, KeyMask, PositionIds;
        public double[]? Prefix;                 // (L, 2, Pv, KV·hs) deep prompt, or null
        public int DeepVirtualTokens;                 // Pv
        public required BlockTrace[] Blocks;
        public required double[] ResidualOut;   // (N, C) input of the final norm
        public required double[] FinalNormed;   // (N, C)
        public required double[] FinalMean, FinalRstd;
    }

    sealed class BlockTrace
    {
        public required double[] X;                // (N, C) block input
        public required double[] Mean1, Rstd1;     // (N)
        public required double[] Q;                // (N, H·hs) after RoPE
        public required double[] K, V;             // (N, KV·hs) K after RoPE
        public required double[] Probabilities;    // (B, H, T, Pv + T)
        public required double[] Attended;         // (N, H·hs)
        public required double[] X1;               // (N, C) after the attention residual
        public required double[] Mean2, Rstd2;     // (N)
        public required double[] Normed2;          // (N, C)
        public double[]? Gate;                     // (N, I) Llama, before SiLU
        public required double[] Up;               // (N, I) before the activation (GPT-2) / the up branch (Llama)
        public required double[] Hidden;           // (N, I) the MLP's input to the down projection
    }

    /// <summary>Layer <paramref name="layer"/>'s prefix keys (part 0) or values (part 1), (Pv, KV·hs), of a deep prefix (L, 2, Pv, KV·hs).</summary>
    double[]? PrefixPart(double[]? prefix, int deepVirtualTokens, int layer, int part)
    {
        if (prefix is null || deepVirtualTokens == 0) return null;
        int size = deepVirtualTokens * KV * HS;
        return prefix.AsSpan((2 * layer + part) * size, size).ToArray();
    }

    Trace Forward(int[] sourceMap, double[] prompt, int B, int T, int[]? keyMask, int[]? positionIds, double[]? prefix = null, int deepVirtualTokens = 0)
    {
        if (deepVirtualTokens > 0 && (prefix is null || prefix.Length != blocks.Length * 2 * deepVirtualTokens * KV * HS))
            throw new ArgumentException($"prefix must hold L·2·Pv·KV·hs = {blocks.Length * 2 * deepVirtualTokens * KV * HS} values", nameof(prefix));
        int N = B * T;
        if (B <= 0 || T <= 0) throw new ArgumentOutOfRangeException(nameof(B), $"B = {B} and T = {T} must be positive");
        if (sourceMap.Length != N) throw new ArgumentException($"sourceMap has {sourceMap.Length} entries, expected B·T = {N}", nameof(sourceMap));
        if (prompt.Length % C != 0) throw new ArgumentException($"prompt has {prompt.Length} values, not a multiple of C = {C}", nameof(prompt));
        int P = prompt.Length / C;
        keyMask ??= Enumerable.Repeat(1, N).ToArray();
        positionIds ??= Enumerable.Range(0, N).Select(i => deepVirtualTokens + i % T).ToArray(); // HF: inputs follow the prefix's positions
        if (keyMask.Length != N) throw new ArgumentException($"keyMask has {keyMask.Length} entries, expected {N}", nameof(keyMask));
        if (positionIds.Length != N) throw new ArgumentException($"positionIds has {positionIds.Length} entries, expected {N}", nameof(positionIds));
        for (int i = 0; i < N; i++)
        {
            int s = sourceMap[i];
            if (s >= V || -1 - s >= P) throw new ArgumentOutOfRangeException(nameof(sourceMap), $"entry {s} at row {i}: token ids must be < {V} and prompt rows < {P}");
            if (keyMask[i] is not (0 or 1)) throw new ArgumentOutOfRangeException(nameof(keyMask), $"entry {keyMask[i]} at row {i} is not 0 or 1");
            if (positionIds[i] < 0 || (IsGpt2 && positionIds[i] >= Config.MaxPositions))
                throw new ArgumentOutOfRangeException(nameof(positionIds), $"position {positionIds[i]} at row {i} is outside [0, {Config.MaxPositions})");
        }

        // Embedding: a token row or a prompt row, plus GPT-2's learned position.
        var x = new double[N * C];
        for (int i = 0; i < N; i++)
        {
            int s = sourceMap[i];
            var (table, row) = s >= 0 ? (tokenEmbedding, s) : (prompt, -1 - s);
            for (int c = 0; c < C; c++)
                x[i * C + c] = table[row * C + c] + (positionEmbedding is null ? 0 : positionEmbedding[positionIds[i] * C + c]);
        }

        var traces = new BlockTrace[blocks.Length];
        for (int l = 0; l < blocks.Length; l++)
        {
            var w = blocks[l];
            var normed1 = Norm(x, N, w.AttentionNorm, w.AttentionNormBias, out var mean1, out var rstd1);
            var q = Linear(normed1, N, C, w.Query, w.QueryBias, H * HS);
            var k = Linear(normed1, N, C, w.Key, w.KeyBias, KV * HS);
            var v = Linear(normed1, N, C, w.Value, w.ValueBias, KV * HS);
            if (!IsGpt2)
            {
                Rope(q, N, H, positionIds, inverse: false);
                Rope(k, N, KV, positionIds, inverse: false);
            }
            var (attended, probabilities) = Attention(q, k, v, keyMask, B, T, PrefixPart(prefix, deepVirtualTokens, l, 0), PrefixPart(prefix, deepVirtualTokens, l, 1), deepVirtualTokens);
            var projected = Linear(attended, N, H * HS, w.AttentionOutput, w.AttentionOutputBias, C);
            var x1 = Add(x, projected);

            var normed2 = Norm(x1, N, w.MlpNorm, w.MlpNormBias, out var mean2, out var rstd2);
            var up = Linear(normed2, N, C, w.MlpUp, w.MlpUpBias, I);
            double[]? gate = null;
            var hidden = new double[N * I];
            if (IsGpt2)
            {
                for (int j = 0; j < hidden.Length; j++) hidden[j] = GeluTanh(up[j]);
            }
            else
            {
                gate = Linear(normed2, N, C, w.MlpGate!, null, I);
                for (int j = 0; j < hidden.Length; j++) hidden[j] = Silu(gate[j]) * up[j];
            }
            var down = Linear(hidden, N, I, w.MlpDown, w.MlpDownBias, C);
            var x2 = Add(x1, down);

            traces[l] = new BlockTrace
            {
                X = x, Mean1 = mean1, Rstd1 = rstd1, Q = q, K = k, V = v, Probabilities = probabilities, Attended = attended,
                X1 = x1, Mean2 = mean2, Rstd2 = rstd2, Normed2 = normed2, Gate = gate, Up = up, Hidden = hidden,
            };
            x = x2;
        }
        var final = Norm(x, N, finalNorm, finalNormBias, out var finalMean, out var finalRstd);
        return new Trace
        {
            B = B, T = T, N = N, SourceMap = sourceMap, KeyMask = keyMask, PositionIds = positionIds, Prefix = prefix, DeepVirtualTokens = deepVirtualTokens,
            Blocks = traces, ResidualOut = x, FinalNormed = final, FinalMean = finalMean, FinalRstd = finalRstd,
        };
    }

    /// <summary>(rows, V) = normed (rows, C) · headᵀ.</summary>
    double[] HeadForward(double[] normed, int rows) => Linear(normed, rows, C, head, null, V);

    /// <summary>RMSNorm (Llama: x / √(mean(x²)+ε) · w) or LayerNorm (GPT-2: (x−μ)/√(var+ε) · w + b, biased variance) over rows of C.</summary>
    double[] Norm(double[] x, int N, double[] weight, double[]? bias, out double[] mean, out double[] rstd)
    {
        var y = new double[N * C];
        mean = new double[N];
        rstd = new double[N];
        for (int i = 0; i < N; i++)
        {
            double mu = 0;
            if (IsGpt2)
            {
                for (int c = 0; c < C; c++) mu += x[i * C + c];
                mu /= C;
            }
            double squares = 0;
            for (int c = 0; c < C; c++) squares += (x[i * C + c] - mu) * (x[i * C + c] - mu);
            double r = 1 / Math.Sqrt(squares / C + Config.NormEps);
            mean[i] = mu;
            rstd[i] = r;
            for (int c = 0; c < C; c++)
                y[i * C + c] = (x[i * C + c] - mu) * r * weight[c] + (bias is null ? 0 : bias[c]);
        }
        return y;
    }

    /// <summary>y (N, out) = x (N, in) · Wᵀ + b with W (out, in). Each output is one sequential dot
    /// product, so the result does not depend on the thread schedule.</summary>
    static double[] Linear(double[] x, int N, int inDim, double[] weight, double[]? bias, int outDim)
    {
        var y = new double[N * outDim];
        Parallel.For(0, outDim, j =>
        {
            var row = weight.AsSpan(j * inDim, inDim);
            for (int n = 0; n < N; n++)
            {
                var input = x.AsSpan(n * inDim, inDim);
                double sum = bias is null ? 0 : bias[j];
                for (int i = 0; i < row.Length; i++) sum += input[i] * row[i];
                y[n * outDim + j] = sum;
            }
        });
        return y;
    }

    /// <summary>HF rotate_half RoPE in place on (N, heads·hs): for i &lt; hs/2 the pair (i, i + hs/2) is
    /// rotated by position·inv_freq_i. <paramref name="inverse"/> rotates backwards (the transpose, for the backward pass).</summary>
    void Rope(double[] x, int N, int heads, int[] positionIds, bool inverse)
    {
        int half = HS / 2;
        for (int n = 0; n < N; n++)
            for (int i = 0; i < half; i++)
            {
                double angle = positionIds[n] * inverseFrequency[i];
                double cos = Math.Cos(angle), sin = inverse ? -Math.Sin(angle) : Math.Sin(angle);
                for (int h = 0; h < heads; h++)
                {
                    int at = n * heads * HS + h * HS + i;
                    double first = x[at], second = x[at + half];
                    x[at] = first * cos - second * sin;
                    x[at + half] = second * cos + first * sin;
                }
            }
    }

    /// <summary>Causal scaled dot-product attention with key padding and GQA, after <paramref name="deepVirtualTokens"/> = Pv
    /// deep-prompt keys and values (Pv, KV·hs) that every query attends to (PEFT's prefix as past_key_values: all-ones mask,
    /// keys used as given). q (N, H·hs), k/v (N, KV·hs) → attended (N, H·hs) and probabilities (B, H, T, Pv + T):
    /// column c &lt; Pv is prefix slot c, column Pv + s token key s; zero where not allowed.</summary>
    (double[] Attended, double[] Probabilities) Attention(double[] q, double[] k, double[] v, int[] keyMask, int B, int T,
        double[]? prefixK = null, double[]? prefixV = null, int deepVirtualTokens = 0)
    {
        int N = B * T, group = H / KV, width = deepVirtualTokens + T;
        double scale = 1 / Math.Sqrt(HS);
        var attended = new double[N * H * HS];
        var probabilities = new double[B * H * T * width];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            {
                int kvHead = h / group;
                for (int t = 0; t < T; t++)
                {
                    int qAt = (b * T + t) * H * HS + h * HS;
                    int pAt = ((b * H + h) * T + t) * width;
                    // Allowed keys as (probability column, key array, offset).
                    var keys = new List<(int Column, double[] Keys, double[] Values, int At)>();
                    for (int j = 0; j < deepVirtualTokens; j++) keys.Add((j, prefixK!, prefixV!, j * KV * HS + kvHead * HS));
                    for (int s = 0; s <= t; s++)
                        if (keyMask[b * T + s] != 0) keys.Add((deepVirtualTokens + s, k, v, (b * T + s) * KV * HS + kvHead * HS));
                    if (keys.Count == 0) continue;   // no key allowed: output stays zero
                    double max = double.NegativeInfinity;
                    foreach (var key in keys)
                    {
                        double score = 0;
                        for (int d = 0; d < HS; d++) score += q[qAt + d] * key.Keys[key.At + d];
                        probabilities[pAt + key.Column] = score * scale;
                        max = Math.Max(max, score * scale);
                    }
                    double sum = 0;
                    foreach (var key in keys)
                    {
                        probabilities[pAt + key.Column] = Math.Exp(probabilities[pAt + key.Column] - max);
                        sum += probabilities[pAt + key.Column];
                    }
                    foreach (var key in keys)
                    {
                        double p = probabilities[pAt + key.Column] /= sum;
                        for (int d = 0; d < HS; d++) attended[qAt + d] += p * key.Values[key.At + d];
                    }
                }
            }
        return (attended, probabilities);
    }

    static double[] Add(double[] a, double[] b)
    {
        var sum = new double[a.Length];
        for (int i = 0; i < a.Length; i++) sum[i] = a[i] + b[i];
        return sum;
    }

    static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    static double Silu(double x) => x * Sigmoid(x);

    static double SiluDerivative(double x)
    {
        double s = Sigmoid(x);
        return s * (1 + x * (1 - s));
    }

    static readonly double GeluScale = Math.Sqrt(2 / Math.PI);

    /// <summary>gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    static double GeluTanh(double x) => 0.5 * x * (1 + Math.Tanh(GeluScale * (x + 0.044715 * x * x * x)));

    static double GeluTanhDerivative(double x)
    {
        double tanh = Math.Tanh(GeluScale * (x + 0.044715 * x * x * x));
        return 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * GeluScale * (1 + 3 * 0.044715 * x * x);
    }

    #endregion
}
