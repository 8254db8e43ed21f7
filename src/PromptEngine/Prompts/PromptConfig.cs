using System.Globalization;
using PromptEngine.Engine;
using PromptEngine.Models;
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
    public int PromptTableRows => Method == PromptMethod.Prompt ? VirtualTokens : 0;

    /// <summary>Deep-prompt virtual tokens: n for a deep prompt, 0 for a plain one.</summary>
    public int DeepVirtualTokens => VirtualTokens - PromptTableRows;

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
        new(maxRows, maxLength, PromptTableRows, MaxVerbalizer: maxVerbalizer, DeepVirtualTokens: DeepVirtualTokens);

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
        if (engine.PromptTableRows != PromptTableRows || engine.DeepVirtualTokens != DeepVirtualTokens)
            throw new ArgumentException($"prompt method: the engine holds {engine.PromptTableRows} prompt rows and {engine.DeepVirtualTokens} deep-prompt tokens; this method needs {PromptTableRows} and {DeepVirtualTokens}");
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
