using System.Globalization;
using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Training;
using PromptEngine.Training.Data;

namespace PromptEngine.Prompts;

/// <summary>What to tune: the prompt method, its virtual tokens, the hidden width of prefix tuning's MLP (0: none), and
/// whether a linear classifier head rides on it. It sizes the engine, makes the starting prompt, and builds the
/// <see cref="TrainablePrompt"/> (PEFT's <c>PromptTuningConfig</c> / <c>PrefixTuningConfig</c>, in one record).</summary>
/// <param name="Method">Plain prompt or deep prompt.</param>
/// <param name="VirtualTokens">n, at least 1.</param>
/// <param name="MlpHiddenSize">With <see cref="PromptMethod.Prefix"/>: train the deep prompt through an MLP of this hidden
/// width (<see cref="PrefixProjection"/>); 0: train it directly.</param>
/// <param name="LinearHead">Train a linear classifier head on the answer position with the prompt.</param>
public sealed record PromptConfig(PromptMethod Method, int VirtualTokens, int MlpHiddenSize = 0, bool LinearHead = false)
{
    /// <summary>A plain prompt of <paramref name="virtualTokens"/> rows.</summary>
    public static PromptConfig Plain(int virtualTokens) => new(PromptMethod.Prompt, virtualTokens);

    /// <summary>A deep prompt of <paramref name="virtualTokens"/> positions, trained directly.</summary>
    public static PromptConfig Deep(int virtualTokens) => new(PromptMethod.Prefix, virtualTokens);

    /// <summary>A deep prompt trained through prefix tuning's MLP of hidden width <paramref name="hiddenSize"/>.</summary>
    public static PromptConfig DeepMlp(int virtualTokens, int hiddenSize) => new(PromptMethod.Prefix, virtualTokens, hiddenSize);

    /// <summary>This method with a linear classifier head.</summary>
    public PromptConfig WithLinearHead() => this with { LinearHead = true };

    /// <summary>Rows the prompt occupies in each input row: n for a plain prompt, 0 for a deep one.</summary>
    public int InputRows => Method == PromptMethod.Prompt ? VirtualTokens : 0;

    /// <summary>Deep-prompt virtual tokens: n for a deep prompt, 0 for a plain one.</summary>
    public int PrefixTokens => VirtualTokens - InputRows;

    /// <summary>The method's name in run fingerprints and titles: "Prompt", "Prefix" or "Prefix mlp H" (runs without an MLP
    /// keep the name they always had).</summary>
    public string Name => MlpHiddenSize > 0 ? string.Create(CultureInfo.InvariantCulture, $"{Method} mlp {MlpHiddenSize}") : Method.ToString();

    /// <summary>What a plot or a log calls the method: "prompt tuning", "prefix tuning (MLP 512) + linear head", ….</summary>
    public string Title => (Method == PromptMethod.Prefix ? "prefix" : "prompt") + " tuning"
        + (MlpHiddenSize > 0 ? string.Create(CultureInfo.InvariantCulture, $" (MLP {MlpHiddenSize})") : "") + (LinearHead ? " + linear head" : "");

    /// <summary>Checks the combination.</summary>
    /// <exception cref="ArgumentException">No virtual tokens, a negative width, or an MLP on a plain prompt.</exception>
    public void Validate()
    {
        if (VirtualTokens <= 0) throw new ArgumentException($"prompt method: {VirtualTokens} virtual tokens; at least one");
        if (MlpHiddenSize < 0) throw new ArgumentException($"prompt method: the MLP's hidden width {MlpHiddenSize} is negative");
        if (MlpHiddenSize > 0 && Method != PromptMethod.Prefix)
            throw new ArgumentException("prompt method: prefix tuning's MLP reparameterises a deep prompt; a plain prompt has none");
    }

    /// <summary>Options of a training engine for this method.</summary>
    public EngineOptions EngineOptions(int maxRows, int maxLength, int maxVerbalizer = 16) =>
        new(maxRows, maxLength, InputRows, MaxVerbalizer: maxVerbalizer, PrefixTokens: PrefixTokens);

    /// <summary>The starting prompt: a plain prompt by <paramref name="init"/> (<see cref="PromptInit"/>); a deep prompt random
    /// (as PEFT's PrefixEncoder starts; vocabulary rows have no deep counterpart, so <see cref="PromptInitMethod.SampleVocab"/>
    /// also means random) or from a file; null with an MLP, whose seeded parameters make the prompt.</summary>
    /// <param name="model">The model.</param>
    /// <param name="init">How to start.</param>
    /// <param name="seed">Seed of a random or sampled start.</param>
    /// <param name="initText">The text of <see cref="PromptInitMethod.Text"/>.</param>
    /// <param name="initFile">The prompt file or adapter of <see cref="PromptInitMethod.File"/>.</param>
    /// <param name="allowModelMismatch">Accept a plain file prompt made for another model of the same width.</param>
    /// <exception cref="PromptEngineException">A text start for a deep prompt, or a file start with an MLP (a saved deep prompt
    /// is the MLP's folded output and cannot be unfolded into one).</exception>
    public TunedPrompt? Initial(ModelFolder model, PromptInitMethod init, int seed, string? initText = null, string? initFile = null,
        bool allowModelMismatch = false)
    {
        ArgumentNullException.ThrowIfNull(model);
        Validate();
        if (Method == PromptMethod.Prefix && init == PromptInitMethod.Text)
            throw new PromptEngineException("prompt method: a text start has no deep-prompt counterpart; start a deep prompt at random or from a file");
        if (MlpHiddenSize > 0)
            return init == PromptInitMethod.File
                ? throw new PromptEngineException("prompt method: prefix tuning's MLP cannot start from a file: a saved deep prompt is the MLP's folded output and cannot be unfolded into an MLP")
                : null;
        if (Method == PromptMethod.Prefix)
            return init == PromptInitMethod.File
                ? TunedPrompt.Load(initFile ?? throw new ArgumentNullException(nameof(initFile)), model.Config, PromptMethod.Prefix).WithHead(null)
                : TunedPrompt.Deep(DeepPrompt.Random(model.Config, VirtualTokens, seed));
        var initializer = new PromptInit(model);
        return TunedPrompt.Plain(init switch
        {
            PromptInitMethod.Random => initializer.Random(VirtualTokens, seed),
            PromptInitMethod.Text => initializer.FromText(initText ?? throw new ArgumentNullException(nameof(initText)), VirtualTokens),
            PromptInitMethod.File => initializer.FromFile(initFile ?? throw new ArgumentNullException(nameof(initFile)), allowModelMismatch),
            _ => initializer.SampledVocabulary(VirtualTokens, seed),
        });
    }

    /// <summary>The trainable prompt of this method on <paramref name="engine"/> (built with <see cref="EngineOptions"/>),
    /// starting at <paramref name="initial"/> (null with an MLP, whose parameters start from <paramref name="seed"/>), with a
    /// head starting at the LM-head rows of the label words (the zero-shot verbalizer, <see cref="ClassifierHead.FromLabelWords"/>)
    /// when <see cref="LinearHead"/>. It owns the MLP and the head, and attaches the head to the engine.</summary>
    /// <param name="engine">A training engine of <see cref="EngineOptions"/>.</param>
    /// <param name="initial">The start, of this method and size (<see cref="Initial"/>); null with an MLP.</param>
    /// <param name="seed">Seed of an MLP's parameters.</param>
    /// <param name="labels">With a head: the class labels, in row order (a verbalizer's <see cref="Verbalizer.Labels"/>).</param>
    /// <param name="labelTokenIds">With a head: each label's scored token (a verbalizer's <see cref="Verbalizer.TokenIds"/>).</param>
    /// <exception cref="ArgumentException">An engine of another shape, a start of another method or size, a head without labels.</exception>
    public TrainablePrompt Create(TransformerEngine engine, TunedPrompt? initial, int seed, IReadOnlyList<string>? labels = null, IReadOnlyList<int>? labelTokenIds = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        Validate();
        if (engine.PromptRows != InputRows || engine.PrefixTokens != PrefixTokens)
            throw new ArgumentException($"prompt method: the engine holds {engine.PromptRows} prompt rows and {engine.PrefixTokens} deep-prompt tokens; this method needs {InputRows} and {PrefixTokens}");
        if (LinearHead && (labels is null || labelTokenIds is null))
            throw new ArgumentException("prompt method: a linear head classifies; it needs the task's labels and their label-word tokens");
        if (MlpHiddenSize == 0 && (initial is null || initial.Method != Method || initial.VirtualTokens != VirtualTokens))
            throw new ArgumentException($"prompt method: a {Method} prompt of {VirtualTokens} virtual tokens starts from one of its kind and size; "
                + (initial is null ? "none was given" : $"{initial.Source ?? "the start"} is a {initial.Method} prompt of {initial.VirtualTokens}"));
        PrefixProjection? projection = null;
        ClassifierHead? head = null;
        try
        {
            if (MlpHiddenSize > 0) projection = new PrefixProjection(engine.Kernels, engine.Config, VirtualTokens, MlpHiddenSize, seed);
            else initial!.SetValuesIn(engine);
            head = LinearHead ? ClassifierHead.FromLabelWords(engine, labels!, labelTokenIds!) : null;
            engine.AttachHead(head);
            var trainable = TrainablePrompt.Over(engine, projection, ownsModules: true);
            trainable.ParametersToEngine(); // an MLP's output is the engine's prefix from the start
            // An MLP's start is its seeded parameters.
            trainable.InitMetadata = initial?.Metadata ?? new Dictionary<string, string>
            {
                [PromptMetadata.InitMethod] = "random",
                [PromptMetadata.InitSeed] = seed.ToString(CultureInfo.InvariantCulture),
            };
            return trainable;
        }
        catch
        {
            if (head is not null) engine.AttachHead(null);
            projection?.Dispose();
            head?.Dispose();
            throw;
        }
    }
}

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

    /// <summary>The prompt group's tensor shape in a checkpoint: (P, C) for a plain prompt, (Pv, L·2·KV·hs) for a deep one, one
    /// row of everything for both at once or for an MLP's parameters.</summary>
    public virtual long[] CheckpointShape => Engine.PrefixTokens == 0 ? [Engine.PromptRows, Engine.Config.HiddenSize]
        : Engine.PromptRows == 0 ? [Engine.PrefixTokens, Engine.PrefixLength / Engine.PrefixTokens] : [1, PromptParameters.Length()];

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
        if (engine.PromptRows == 0 && engine.PrefixTokens == 0) throw new ArgumentException("the engine has no prompt or deep prefix to train");
        TrainablePrompt result = projection is not null ? new DeepMlpTrainablePrompt(engine, projection, ownsModules)
            : engine.PrefixTokens > 0 ? new DeepTrainablePrompt(engine, ownsModules) : new PlainTrainablePrompt(engine, ownsModules);
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

    private protected override TunedPrompt Snapshot(Dictionary<string, string> metadata, ClassifierHeadWeights? head) =>
        TunedPrompt.Plain(new SoftPrompt(Engine.GetPrompt(), Engine.PromptRows, Engine.Config.HiddenSize, metadata), head);
}

/// <summary>A deep prompt trained directly: the engine's prefix (L, 2, Pv, KV·hs) (and its prompt rows, when it has both).</summary>
public class DeepTrainablePrompt : TrainablePrompt
{
    internal DeepTrainablePrompt(TransformerEngine engine, bool ownsModules) : base(engine, ownsModules)
    {
    }

    /// <inheritdoc/>
    public override IReadOnlyList<TrainableParameter> PromptParameters => Engine.Trainables;

    private protected override TunedPrompt Snapshot(Dictionary<string, string> metadata, ClassifierHeadWeights? head) =>
        TunedPrompt.Deep(DeepPrompt.FromEngineLayout(Engine.GetPrefix(), Engine.PrefixTokens, Engine.Config, metadata), head);
}

/// <summary>A deep prompt trained through prefix tuning's MLP (<see cref="PrefixProjection"/>): the optimizer moves the MLP's
/// parameters, the engine's prefix is its output, and what is saved is that output folded into a plain deep prompt.</summary>
public sealed class DeepMlpTrainablePrompt : DeepTrainablePrompt
{
    readonly PrefixProjection projection;

    internal DeepMlpTrainablePrompt(TransformerEngine engine, PrefixProjection projection, bool ownsModules) : base(engine, ownsModules)
    {
        if (engine.PromptRows > 0)
            throw new ArgumentException($"the prefix projection reparameterises the deep prefix only; this engine also trains a plain prompt of {engine.PromptRows} rows");
        if (engine.PrefixTokens != projection.VirtualTokens)
            throw new ArgumentException($"the prefix projection makes {projection.VirtualTokens} virtual tokens; the engine's deep prefix has {engine.PrefixTokens}");
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

    /// <inheritdoc/>
    public override long[] CheckpointShape => [1, projection.Parameters];

    /// <inheritdoc/>
    public override string Describe(long length) => $"a prefix projection ({projection.Reparameterisation}) of {length} parameters";

    private protected override void DisposeModules() => projection.Dispose();
}
