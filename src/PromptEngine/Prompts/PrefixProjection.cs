using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Data;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Prompts;

/// <summary>
/// The reparameterisation of Li &amp; Liang's prefix tuning, as Hugging Face PEFT's PrefixEncoder with
/// prefix_projection=True: the deep prompt is not trained directly but computed by a small MLP,
/// <c>prefix = W₂·tanh(W₁·E + b₁) + b₂</c> row by row, with E (Pv, d) an embedding of the Pv virtual tokens,
/// W₁ (H, d), b₁ (H), W₂ (L·2·d, H), b₂ (L·2·d), d = token_dim = KV·hs. Output row p is the deep prompt's row p in PEFT's
/// layout (Pv, L·2·d). The optimizer moves the MLP's parameters; the engine's prefix is its output; what is saved is
/// that output, folded into a plain deep prompt (the MLP is a training device only: PEFT too saves the projected
/// prefixes).
/// </summary>
/// <remarks>
/// <para>One arena holds everything, planned once: the parameters E, W₁, b₁, W₂, b₂ back to back (so
/// <see cref="GradNorm"/> and <see cref="AdamW"/> run once over them as one vector), their gradients in the same order,
/// AdamW's two moments, the activations (pre-tanh, tanh output, output) and the backward's scratch. Nothing is allocated
/// per step and nothing but the gradient norm (one float) comes back to the host.</para>
/// <para><see cref="Forward"/> writes the output into a <see cref="TransformerEngine"/>'s prefix, device to device;
/// <see cref="Backward"/> reads the dPrefix the engine accumulated over a step's batches and differentiates through the
/// MLP. The MLP is linear in its output gradient, so one backward after the step's last batch gives the gradient of the
/// summed loss, exactly what the engine's own accumulation gives a plain prefix.</para>
/// <para>Initialisation follows PyTorch's defaults, seeded by <see cref="SplitMix64"/>: E ~ N(0, 1) (nn.Embedding),
/// every Linear weight and bias ~ U(±1/√fan_in) (nn.Linear).</para>
/// </remarks>
public sealed class PrefixProjection : IDisposable
{
    readonly KernelContext kernels;
    readonly TransformerConfig config;
    readonly Arena<float> arena = new("prefix projection");
    readonly int pv, d, h, width; // Pv, token_dim = KV·hs, hidden H, L·2·d

    // Parameters, back to back (one vector for the optimizer), then their gradients in the same order.
    readonly int embedding, w1, b1, w2, b2;       // (Pv, d), (H, d), (H), (L·2·d, H), (L·2·d)
    readonly int dEmbedding, dW1, dB1, dW2, dB2;  // same shapes
    readonly int adamM, adamV;                    // (Parameters) each
    // Activations of the last Forward, and the backward's scratch.
    readonly int preTanh, hidden, output;         // (Pv, H), (Pv, H) tanh output, (Pv, L·2·d) in PEFT layout
    readonly int dOutput, dTanh;                  // (Pv, L·2·d), (Pv, H): dLoss/d(tanh output), then in place dLoss/d(pre-tanh)
    readonly int sumSquares, clipScale, partials; // (1), (1), (64)
    int optimizerStep;
    bool activationsCurrent; // the saved activations belong to the current parameters

    /// <summary>Plans and allocates the arena and initialises the parameters from <paramref name="seed"/>.</summary>
    /// <param name="kernels">The context of the engine whose prefix this projection computes.</param>
    /// <param name="config">The model: L, KV and hs fix the output width L·2·KV·hs.</param>
    /// <param name="virtualTokens">Pv, the engine's <see cref="EngineOptions.PrefixTokens"/>.</param>
    /// <param name="hiddenSize">H, the MLP's hidden width (PEFT's encoder_hidden_size).</param>
    /// <param name="seed">Seed of the initialisation.</param>
    /// <exception cref="ArgumentOutOfRangeException">Pv or H is not positive.</exception>
    public PrefixProjection(KernelContext kernels, TransformerConfig config, int virtualTokens, int hiddenSize, int seed)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(config);
        if (virtualTokens <= 0) throw new ArgumentOutOfRangeException(nameof(virtualTokens), virtualTokens, "prefix projection: at least one virtual token");
        if (hiddenSize <= 0) throw new ArgumentOutOfRangeException(nameof(hiddenSize), hiddenSize, "prefix projection: the hidden width must be positive");
        this.kernels = kernels;
        this.config = config;
        (pv, d, h) = (virtualTokens, config.NumKvHeads * config.HeadDim, hiddenSize);
        width = config.NumLayers * 2 * d;

        embedding = arena.Reserve("E (Pv, d)", (long)pv * d);
        w1 = arena.Reserve("W1 (H, d)", (long)h * d);
        b1 = arena.Reserve("b1 (H)", h);
        w2 = arena.Reserve("W2 (L*2*d, H)", (long)width * h);
        b2 = arena.Reserve("b2 (L*2*d)", width);
        dEmbedding = arena.Reserve("dE (Pv, d)", (long)pv * d);
        dW1 = arena.Reserve("dW1 (H, d)", (long)h * d);
        dB1 = arena.Reserve("db1 (H)", h);
        dW2 = arena.Reserve("dW2 (L*2*d, H)", (long)width * h);
        dB2 = arena.Reserve("db2 (L*2*d)", width);
        Parameters = (long)pv * d + (long)h * d + h + (long)width * h + width;
        adamM = arena.Reserve("AdamW m (Parameters)", Parameters);
        adamV = arena.Reserve("AdamW v (Parameters)", Parameters);
        preTanh = arena.Reserve("pre-tanh (Pv, H)", (long)pv * h);
        hidden = arena.Reserve("tanh output (Pv, H)", (long)pv * h);
        output = arena.Reserve("output (Pv, L*2*d)", (long)pv * width);
        dOutput = arena.Reserve("dOutput (Pv, L*2*d)", (long)pv * width);
        dTanh = arena.Reserve("dTanh (Pv, H)", (long)pv * h);
        sumSquares = arena.Reserve("sum of squares (1)", 1);
        clipScale = arena.Reserve("clip scale (1)", 1);
        partials = arena.Reserve("norm partials (64)", GradNorm.Partitions);
        arena.Allocate(kernels.Accelerator);
        try
        {
            ParameterView.CopyFromCPU(Initial(seed));
            ResetOptimizer();
        }
        catch
        {
            arena.Dispose();
            throw;
        }
    }

    /// <summary>Pv.</summary>
    public int VirtualTokens => pv;

    /// <summary>H, the hidden width.</summary>
    public int HiddenSize => h;

    /// <summary>d = token_dim = KV·hs, the width of E.</summary>
    public int TokenDim => d;

    /// <summary>Trainable parameters: Pv·d + H·d + H + L·2·d·H + L·2·d.</summary>
    public long Parameters { get; }

    /// <summary>Device bytes of the arena (parameters, gradients, moments, activations, scratch).</summary>
    public long Bytes => arena.Bytes;

    /// <summary>The provenance line saved prompts carry under <see cref="PromptMetadata.Reparameterisation"/>, e.g. "mlp 512".</summary>
    public string Reparameterisation => string.Create(CultureInfo.InvariantCulture, $"mlp {h}");

    ArrayView<float> ParameterView => arena.Joined(embedding, b2);
    ArrayView<float> GradientView => arena.Joined(dEmbedding, dB2);

    /// <summary>PyTorch's default initialisation, drawn in the order E, W₁, b₁, W₂, b₂ from one generator.</summary>
    float[] Initial(int seed)
    {
        var rng = new SplitMix64((ulong)seed);
        double Uniform() => (rng.Next() >> 11) * (1.0 / (1UL << 53)); // [0, 1)
        var values = new float[Parameters];
        long at = 0;
        for (long i = 0; i < (long)pv * d; i++) // Box–Muller, one normal per pair of uniforms
            values[at++] = (float)(Math.Sqrt(-2 * Math.Log(1 - Uniform())) * Math.Cos(2 * Math.PI * Uniform()));
        void Fill(long count, int fanIn)
        {
            double bound = 1 / Math.Sqrt(fanIn);
            for (long i = 0; i < count; i++) values[at++] = (float)((2 * Uniform() - 1) * bound);
        }
        Fill((long)h * d, d);      // W1
        Fill(h, d);                // b1
        Fill((long)width * h, h);  // W2
        Fill(width, h);            // b2
        return values;
    }

    /// <summary>prefix = W₂·tanh(W₁·E + b₁) + b₂, written into <paramref name="engine"/>'s deep prefix in its layout
    /// (L, 2, Pv, KV·hs), device to device. The engine's prefix gradient and optimizer state are left alone. Saves the
    /// activations <see cref="Backward"/> needs.</summary>
    /// <exception cref="ArgumentException">The engine runs on another context or has another prefix shape.</exception>
    public void Forward(TransformerEngine engine)
    {
        CheckEngine(engine, "forward");
        kernels.Linear.Forward(arena[preTanh], arena[embedding], arena[w1], arena[b1], pv, d, h);
        kernels.Tanh.Forward(arena[hidden], arena[preTanh], (long)pv * h);
        kernels.Linear.Forward(arena[output], arena[hidden], arena[w2], arena[b2], pv, h, width);
        kernels.PrefixLayout.Forward(engine.PrefixView, arena[output], pv, 2 * config.NumLayers, d);
        activationsCurrent = true;
    }

    /// <summary>dLoss/dParameters from the dPrefix <paramref name="engine"/> accumulated (since its last
    /// <see cref="TransformerEngine.ZeroPromptGradient"/>), through the MLP of the last <see cref="Forward"/>. OVERWRITES
    /// the projection's gradient: call it once per optimizer step, after the step's last batch.</summary>
    /// <exception cref="ArgumentException">The engine runs on another context, has another prefix shape, or is not a training engine.</exception>
    /// <exception cref="InvalidOperationException">The parameters changed since the last <see cref="Forward"/>.</exception>
    public void Backward(TransformerEngine engine)
    {
        CheckEngine(engine, "backward");
        if (!engine.Options.Training) throw new ArgumentException("prefix projection: backward needs a training engine (EngineOptions.Training)", nameof(engine));
        if (!activationsCurrent) throw new InvalidOperationException("prefix projection: the parameters changed since the last Forward; run Forward (and the engine's batches) first");
        int L2 = 2 * config.NumLayers;
        kernels.PrefixLayout.Backward(arena[dOutput], engine.PrefixGradientView, pv, L2, d);
        kernels.Linear.BackwardWeights(arena[dW2], arena[dB2], arena[dOutput], arena[hidden], pv, h, width);
        kernels.Linear.Backward(arena[dTanh], arena[dOutput], arena[w2], pv, h, width);
        kernels.Tanh.Backward(arena[dTanh], arena[dTanh], arena[hidden], (long)pv * h); // in place: now dLoss/d(pre-tanh)
        kernels.Linear.BackwardWeights(arena[dW1], arena[dB1], arena[dTanh], arena[embedding], pv, d, h);
        kernels.Linear.Backward(arena[dEmbedding], arena[dTanh], arena[w1], pv, d, h);
    }

    /// <summary>One AdamW step on the MLP's parameters from the gradient of the last <see cref="Backward"/>, after dividing
    /// it by <paramref name="accumulatedBatches"/> and clipping its norm to <paramref name="maxGradNorm"/> (≤ 0: no
    /// clipping), as <see cref="TransformerEngine.OptimizerStep"/> does for a plain prompt. Returns the gradient norm
    /// before clipping. Run <see cref="Forward"/> afterwards to give the engine the new prefix.</summary>
    /// <exception cref="NonFiniteGradientException">The gradient holds NaN or ∞; the parameters and the optimizer state
    /// are left untouched, so the last good state can be saved.</exception>
    /// <exception cref="NonFinitePromptException">The step made the parameters non-finite; they must not be saved.</exception>
    public float OptimizerStep(float learningRate, float beta1 = 0.9f, float beta2 = 0.999f, float eps = 1e-8f, float weightDecay = 0f,
        float maxGradNorm = 0f, int accumulatedBatches = 1)
    {
        if (accumulatedBatches < 1) throw new ArgumentOutOfRangeException(nameof(accumulatedBatches), accumulatedBatches, "at least one batch");
        var gradient = GradientView;
        if (accumulatedBatches > 1) kernels.Scale.Forward(gradient, 1f / accumulatedBatches, Parameters);
        var clip = maxGradNorm > 0 ? arena[clipScale] : default;
        kernels.GradNorm.Forward(arena[sumSquares], clip, arena[partials], gradient, Parameters, maxGradNorm > 0 ? maxGradNorm : 1f);
        // Read the norm before stepping: a NaN or ∞ gradient must not reach the parameters or the moments.
        var norm = MathF.Sqrt(ToHost(arena[sumSquares])[0]);
        if (!float.IsFinite(norm))
            throw new NonFiniteGradientException($"the prefix projection's gradient is not finite (norm {norm}) at optimizer step {optimizerStep + 1}; its parameters were not updated");
        kernels.AdamW.Step(ParameterView, arena[adamM], arena[adamV], gradient, clip, Parameters, learningRate, beta1, beta2, eps, weightDecay, ++optimizerStep);
        activationsCurrent = false;
        // As in TransformerEngine.OptimizerStep: a huge learning rate or weight decay can overflow the parameters.
        kernels.GradNorm.Forward(arena[sumSquares], default, arena[partials], ParameterView, Parameters, 1f);
        var sumOfSquares = ToHost(arena[sumSquares])[0];
        if (!float.IsFinite(sumOfSquares))
            throw new NonFinitePromptException($"optimizer step {optimizerStep} (learning rate {learningRate}, weight decay {weightDecay}) made the prefix projection's parameters non-finite (sum of squares {sumOfSquares})");
        return norm;
    }

    /// <summary>The parameters E, W₁, b₁, W₂, b₂ (row-major, back to back), copied to the host.</summary>
    public float[] GetParameters() => ToHost(ParameterView);

    /// <summary>Replaces the parameters (layout of <see cref="GetParameters"/>) and resets the gradient and AdamW state.</summary>
    /// <exception cref="ArgumentException">Wrong count.</exception>
    public void SetParameters(ReadOnlySpan<float> values)
    {
        if (values.Length != Parameters)
            throw new ArgumentException($"prefix projection: {values.Length} values given, E, W1, b1, W2, b2 hold {Parameters} (Pv {pv}, d {d}, H {h}, L·2·d {width})");
        ParameterView.CopyFromCPU(values.ToArray());
        ResetOptimizer();
        activationsCurrent = false;
    }

    /// <summary>dLoss/dParameters of the last <see cref="Backward"/> (layout of <see cref="GetParameters"/>), copied to the host.</summary>
    public float[] GetGradient() => ToHost(GradientView);

    /// <summary>The AdamW state: first and second moments (layout of <see cref="GetParameters"/>) and the number of steps taken.</summary>
    public (float[] M, float[] V, int Step) GetOptimizerState() => (ToHost(arena[adamM]), ToHost(arena[adamV]), optimizerStep);

    /// <summary>Restores the AdamW state saved by <see cref="GetOptimizerState"/> (resuming a run).</summary>
    /// <exception cref="ArgumentException">A moment of the wrong length.</exception>
    public void SetOptimizerState(float[] m, float[] v, int step)
    {
        ArgumentNullException.ThrowIfNull(m);
        ArgumentNullException.ThrowIfNull(v);
        if (m.Length != Parameters || v.Length != Parameters)
            throw new ArgumentException($"prefix projection optimizer state: {m.Length}/{v.Length} values given, the MLP has {Parameters} parameters");
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step));
        arena[adamM].CopyFromCPU(m);
        arena[adamV].CopyFromCPU(v);
        optimizerStep = step;
    }

    void ResetOptimizer()
    {
        GradientView.MemSetToZero();
        arena[adamM].MemSetToZero();
        arena[adamV].MemSetToZero();
        optimizerStep = 0;
    }

    void CheckEngine(TransformerEngine engine, string what)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (!ReferenceEquals(engine.Kernels, kernels))
            throw new ArgumentException($"prefix projection: {what}: the engine runs on another kernel context; build the projection on the engine's", nameof(engine));
        var c = engine.Config;
        if (engine.PrefixTokens != pv || c.NumLayers != config.NumLayers || c.NumKvHeads != config.NumKvHeads || c.HeadDim != config.HeadDim)
            throw new ArgumentException($"prefix projection: {what}: the projection makes {pv} virtual tokens for {config.NumLayers} layers × {config.NumKvHeads} kv heads × {config.HeadDim}; "
                + $"the engine's deep prefix has {engine.PrefixTokens} for {c.NumLayers} × {c.NumKvHeads} × {c.HeadDim}", nameof(engine));
    }

    static float[] ToHost(ArrayView<float> view)
    {
        var result = new float[view.Length];
        view.CopyToCPU(result);
        return result;
    }

    /// <inheritdoc/>
    public void Dispose() => arena.Dispose();
}
