using System.Globalization;
using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Data;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Training;

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
/// <para>One arena holds everything, planned once: the parameters E, W₁, b₁, W₂, b₂, each a <see cref="TrainableParameter"/>
/// with its gradient and AdamW moments (<see cref="Trainables"/>, one <see cref="ParameterGroup.Prompt"/> group that the
/// optimizer clips as one vector), the activations (pre-tanh, tanh output, output) and the backward's scratch. Nothing is
/// allocated per step.</para>
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

    // The trainable parameters E (Pv, d), W1 (H, d), b1 (H), W2 (L·2·d, H), b2 (L·2·d), in that order, each with its
    // gradient and AdamW moments.
    readonly TrainableParameter[] trainables;
    // Activations of the last Forward, and the backward's scratch.
    readonly int preTanh, hidden, output;         // (Pv, H), (Pv, H) tanh output, (Pv, L·2·d) in PEFT layout
    readonly int dOutput, dTanh;                  // (Pv, L·2·d), (Pv, H): dLoss/d(tanh output), then in place dLoss/d(pre-tanh)
    long versionOfActivations = -1; // the parameters' version (TrainableParameter.Version) the saved activations belong to

    /// <summary>Plans and allocates the arena and initialises the parameters from <paramref name="seed"/>.</summary>
    /// <param name="kernels">The context of the engine whose prefix this projection computes.</param>
    /// <param name="config">The model: L, KV and hs fix the output width L·2·KV·hs.</param>
    /// <param name="virtualTokens">Pv, the engine's <see cref="EngineOptions.DeepVirtualTokens"/>.</param>
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

        (string Name, long Length)[] shapes =
            [("E (Pv, d)", (long)pv * d), ("W1 (H, d)", (long)h * d), ("b1 (H)", h), ("W2 (L*2*d, H)", (long)width * h), ("b2 (L*2*d)", width)];
        Parameters = shapes.Sum(shape => shape.Length);
        var planned = shapes.Select(shape => PlannedParameter.Reserve(arena, shape.Name, ParameterGroup.Prompt, shape.Length)).ToArray();
        preTanh = arena.Reserve("pre-tanh (Pv, H)", (long)pv * h);
        hidden = arena.Reserve("tanh output (Pv, H)", (long)pv * h);
        output = arena.Reserve("output (Pv, L*2*d)", (long)pv * width);
        dOutput = arena.Reserve("dOutput (Pv, L*2*d)", (long)pv * width);
        dTanh = arena.Reserve("dTanh (Pv, H)", (long)pv * h);
        arena.Allocate(kernels.Accelerator);
        try
        {
            trainables = [.. planned.Select(parameter => parameter.Bind(arena))];
            trainables.SetValues(Initial(seed));
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

    /// <summary>What the optimizer moves: E, W₁, b₁, W₂, b₂, one <see cref="ParameterGroup.Prompt"/> group.</summary>
    public IReadOnlyList<TrainableParameter> Trainables => trainables;

    ArrayView<float> Embedding => trainables[0].Values;
    ArrayView<float> W1 => trainables[1].Values;
    ArrayView<float> B1 => trainables[2].Values;
    ArrayView<float> W2 => trainables[3].Values;
    ArrayView<float> B2 => trainables[4].Values;

    long Version => trainables.Sum(p => p.Version);

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
        kernels.Linear.Forward(arena[preTanh], Embedding, W1, B1, pv, d, h);
        kernels.Tanh.Forward(arena[hidden], arena[preTanh], (long)pv * h);
        kernels.Linear.Forward(arena[output], arena[hidden], W2, B2, pv, h, width);
        kernels.PrefixLayout.Forward(engine.PrefixView, arena[output], pv, 2 * config.NumLayers, d);
        versionOfActivations = Version;
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
        if (versionOfActivations != Version) throw new InvalidOperationException("prefix projection: the parameters changed since the last Forward; run Forward (and the engine's batches) first");
        int L2 = 2 * config.NumLayers;
        kernels.PrefixLayout.Backward(arena[dOutput], engine.PrefixGradientView, pv, L2, d);
        var (dEmbedding, dW1, dB1, dW2, dB2) = (trainables[0].Gradient, trainables[1].Gradient, trainables[2].Gradient, trainables[3].Gradient, trainables[4].Gradient);
        kernels.Linear.BackwardWeights(dW2, dB2, arena[dOutput], arena[hidden], pv, h, width);
        kernels.Linear.Backward(arena[dTanh], arena[dOutput], W2, pv, h, width);
        kernels.Tanh.Backward(arena[dTanh], arena[dTanh], arena[hidden], (long)pv * h); // in place: now dLoss/d(pre-tanh)
        kernels.Linear.BackwardWeights(dW1, dB1, arena[dTanh], Embedding, pv, d, h);
        kernels.Linear.Backward(dEmbedding, arena[dTanh], W1, pv, d, h);
    }

    /// <summary>The parameters E, W₁, b₁, W₂, b₂ (row-major, back to back), copied to the host.</summary>
    public float[] GetParameters() => trainables.GetValues();

    /// <summary>Replaces the parameters (layout of <see cref="GetParameters"/>) and resets the gradient and AdamW state.</summary>
    /// <exception cref="ArgumentException">Wrong count.</exception>
    public void SetParameters(ReadOnlySpan<float> values)
    {
        if (values.Length != Parameters)
            throw new ArgumentException($"prefix projection: {values.Length} values given, E, W1, b1, W2, b2 hold {Parameters} (Pv {pv}, d {d}, H {h}, L·2·d {width})");
        trainables.SetValues(values);
    }

    /// <summary>dLoss/dParameters of the last <see cref="Backward"/> (layout of <see cref="GetParameters"/>), copied to the host.</summary>
    public float[] GetGradient() => trainables.GetGradient();

    /// <summary>The AdamW state: first and second moments (layout of <see cref="GetParameters"/>) and the number of steps taken.</summary>
    public (float[] M, float[] V, int Step) GetOptimizerState() => trainables.GetOptimizerState();

    void CheckEngine(TransformerEngine engine, string what)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (!ReferenceEquals(engine.Kernels, kernels))
            throw new ArgumentException($"prefix projection: {what}: the engine runs on another kernel context; build the projection on the engine's", nameof(engine));
        var c = engine.Config;
        if (engine.DeepVirtualTokens != pv || c.NumLayers != config.NumLayers || c.NumKvHeads != config.NumKvHeads || c.HeadDim != config.HeadDim)
            throw new ArgumentException($"prefix projection: {what}: the projection makes {pv} virtual tokens for {config.NumLayers} layers × {config.NumKvHeads} kv heads × {config.HeadDim}; "
                + $"the engine's deep prefix has {engine.DeepVirtualTokens} for {c.NumLayers} × {c.NumKvHeads} × {c.HeadDim}", nameof(engine));
    }

    /// <inheritdoc/>
    public void Dispose() => arena.Dispose();
}
