using PromptEngine.Engine;
using PromptEngine.Training;

namespace PromptEngine.Prompts;

/// <summary>
/// A prompt method bound to a training engine: the trainable parameters the optimizer steps (the prompt's group, then a
/// head's), how the gradient the engine accumulated reaches them and how their values reach the engine, the shape a
/// checkpoint stores them in, and the <see cref="TunedPrompt"/> they make now. The trainer and the commands drive any
/// method through this one type.
/// </summary>
/// <remarks>Three methods: a plain prompt and a deep prompt, whose parameters are the engine's own (its prompt rows, its
/// prefix); and a deep prompt trained through prefix tuning's MLP, whose parameters are the MLP's and whose output the engine
/// holds. A classifier head rides on any of them: it is whatever head is attached to the engine.</remarks>
public abstract class TrainablePrompt : IDisposable
{
    readonly bool ownsModules;

    private protected TrainablePrompt(TransformerEngine engine, bool ownsModules)
    {
        Engine = engine;
        this.ownsModules = ownsModules;
    }

    /// <summary>The training engine the prompt lives in.</summary>
    public TransformerEngine Engine { get; }

    /// <summary>The classifier head attached to the engine, or null.</summary>
    public ClassifierHead? Head => Engine.Head;

    /// <summary>The parameters of the prompt's group (<see cref="ParameterGroup.Prompt"/>).</summary>
    public abstract IReadOnlyList<TrainableParameter> PromptParameters { get; }

    /// <summary>Everything the optimizer moves, group by group: the prompt's, then a head's.</summary>
    public IReadOnlyList<TrainableParameter> Trainables => [.. PromptParameters, .. Head?.Trainables ?? []];

    /// <summary>The metadata of the prompt it started from (how it was initialised); empty when not made by
    /// <see cref="PromptConfig.Create"/>.</summary>
    public IReadOnlyDictionary<string, string> InitMetadata { get; internal set; } = new Dictionary<string, string>();

    /// <summary>Provenance a saved prompt records under <see cref="PromptMetadata.Reparameterisation"/>, or null.</summary>
    public virtual string? Reparameterisation => null;

    /// <summary>Brings the gradient the engine accumulated over a step's batches to <see cref="PromptParameters"/>; call it once,
    /// before the optimizer step. The engine's own parameters have it already.</summary>
    public virtual void GradientToParameters()
    {
    }

    /// <summary>Brings the values of <see cref="PromptParameters"/> into the engine; call it after each optimizer step and after
    /// restoring them. The engine's own parameters are there already.</summary>
    public virtual void ParametersToEngine()
    {
    }

    /// <summary>The prompt group's tensor shape in a checkpoint.</summary>
    public abstract long[] CheckpointShape { get; }

    /// <summary>What the prompt group is, for a message about a checkpoint that does not fit: "one of 34", ….</summary>
    public virtual string Describe(long length) => $"one of {length}";

    /// <summary>The prompt and head as they are now, as a file holds them, with <paramref name="metadata"/> (and
    /// <see cref="Reparameterisation"/>).</summary>
    public TunedPrompt Snapshot(IReadOnlyDictionary<string, string>? metadata = null)
    {
        var merged = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>(), StringComparer.Ordinal);
        if (Reparameterisation is { } how) merged[PromptMetadata.Reparameterisation] = how;
        return Snapshot(merged, Head?.GetWeights());
    }

    private protected abstract TunedPrompt Snapshot(Dictionary<string, string> metadata, ClassifierHeadWeights? head);

    /// <summary>Puts a saved prompt's values (and its head's, when both have one) into the engine, e.g. the best prompt of a
    /// run before its final evaluation; the optimizer state is reset. An MLP's parameters are left alone: a saved prompt is its
    /// folded output.</summary>
    /// <exception cref="ArgumentException">A prompt of another shape.</exception>
    public void Apply(TunedPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        prompt.SetValuesIn(Engine);
        if (Head is not null && prompt.Head is { } saved) Head.SetParameters([.. saved.Weight, .. saved.Bias]);
    }

    /// <summary>The method of <paramref name="engine"/>'s prompt: its own prompt rows and deep prefix, or, with
    /// <paramref name="projection"/>, the deep prefix computed by that MLP (whose current parameters then overwrite the
    /// engine's prefix). A head attached to the engine rides along. Nothing is owned: the caller disposes the projection and
    /// the head.</summary>
    /// <exception cref="ArgumentException">Nothing to train; an inference engine; a projection on an engine with a plain
    /// prompt too, or one that does not fit the engine's prefix.</exception>
    public static TrainablePrompt Over(TransformerEngine engine, PrefixProjection? projection = null) => Over(engine, projection, ownsModules: false);

    internal static TrainablePrompt Over(TransformerEngine engine, PrefixProjection? projection, bool ownsModules)
    {
        ArgumentNullException.ThrowIfNull(engine);
        if (engine.PromptTableRows == 0 && engine.DeepVirtualTokens == 0) throw new ArgumentException("the engine has no prompt or deep prefix to train");
        TrainablePrompt result = projection is not null ? new DeepMlpTrainablePrompt(engine, projection, ownsModules)
            : engine.DeepVirtualTokens > 0 ? new DeepTrainablePrompt(engine, ownsModules) : new PlainTrainablePrompt(engine, ownsModules);
        if (result.PromptParameters.Count == 0)
            throw new ArgumentException("the engine was built for inference (EngineOptions.Training = false); it has no trainable prompt");
        return result;
    }

    /// <summary>Disposes what this prompt owns: the MLP and the head of one made by <see cref="PromptConfig.Create"/>.</summary>
    public void Dispose()
    {
        if (!ownsModules) return;
        var head = Head;
        Engine.AttachHead(null);
        head?.Dispose();
        DisposeModules();
        GC.SuppressFinalize(this);
    }

    private protected virtual void DisposeModules()
    {
    }
}

/// <summary>A plain prompt trained directly: the engine's prompt rows (P, C).</summary>
public sealed class PlainTrainablePrompt : TrainablePrompt
{
    internal PlainTrainablePrompt(TransformerEngine engine, bool ownsModules) : base(engine, ownsModules)
    {
    }

    /// <inheritdoc/>
    public override IReadOnlyList<TrainableParameter> PromptParameters => Engine.Trainables;

    /// <summary>(P, C).</summary>
    public override long[] CheckpointShape => [Engine.PromptTableRows, Engine.Config.HiddenSize];

    private protected override TunedPrompt Snapshot(Dictionary<string, string> metadata, ClassifierHeadWeights? head) =>
        TunedPrompt.Plain(new SoftPrompt(Engine.GetPrompt(), Engine.PromptTableRows, Engine.Config.HiddenSize, metadata), head);
}

/// <summary>A deep prompt trained directly: the engine's prefix (L, 2, Pv, KV·hs) (and its prompt rows, when it has both).</summary>
public class DeepTrainablePrompt : TrainablePrompt
{
    internal DeepTrainablePrompt(TransformerEngine engine, bool ownsModules) : base(engine, ownsModules)
    {
    }

    /// <inheritdoc/>
    public override IReadOnlyList<TrainableParameter> PromptParameters => Engine.Trainables;

    /// <summary>(Pv, L·2·KV·hs); one row of everything for an engine that trains a plain prompt beside it.</summary>
    public override long[] CheckpointShape => Engine.PromptTableRows == 0 ? [Engine.DeepVirtualTokens, Engine.PrefixLength / Engine.DeepVirtualTokens] : [1, PromptParameters.Length()];

    private protected override TunedPrompt Snapshot(Dictionary<string, string> metadata, ClassifierHeadWeights? head) =>
        TunedPrompt.Deep(DeepPrompt.FromEngineLayout(Engine.GetPrefix(), Engine.DeepVirtualTokens, Engine.Config, metadata), head);
}

/// <summary>A deep prompt trained through prefix tuning's MLP (<see cref="PrefixProjection"/>): the optimizer moves the MLP's
/// parameters, the engine's prefix is its output, and what is saved is that output folded into a plain deep prompt.</summary>
public sealed class DeepMlpTrainablePrompt : DeepTrainablePrompt
{
    readonly PrefixProjection projection;

    internal DeepMlpTrainablePrompt(TransformerEngine engine, PrefixProjection projection, bool ownsModules) : base(engine, ownsModules)
    {
        if (engine.PromptTableRows > 0)
            throw new ArgumentException($"the prefix projection reparameterises the deep prefix only; this engine also trains a plain prompt of {engine.PromptTableRows} rows");
        if (engine.DeepVirtualTokens != projection.VirtualTokens)
            throw new ArgumentException($"the prefix projection makes {projection.VirtualTokens} virtual tokens; the engine's deep prefix has {engine.DeepVirtualTokens}");
        if (projection.Parameters > Array.MaxLength)
            throw new ArgumentException($"the prefix projection's {projection.Parameters} parameters exceed one checkpoint tensor");
        this.projection = projection;
    }

    /// <summary>The MLP.</summary>
    public PrefixProjection Projection => projection;

    /// <inheritdoc/>
    public override IReadOnlyList<TrainableParameter> PromptParameters => projection.Trainables;

    /// <inheritdoc/>
    public override string? Reparameterisation => projection.Reparameterisation;

    /// <inheritdoc/>
    public override void GradientToParameters() => projection.Backward(Engine);

    /// <inheritdoc/>
    public override void ParametersToEngine() => projection.Forward(Engine);

    /// <summary>One row of the MLP's parameters.</summary>
    public override long[] CheckpointShape => [1, projection.Parameters];

    /// <inheritdoc/>
    public override string Describe(long length) => $"a prefix projection ({projection.Reparameterisation}) of {length} parameters";

    private protected override void DisposeModules() => projection.Dispose();
}
