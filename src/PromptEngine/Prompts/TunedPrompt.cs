using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>
/// A tuned prompt as a user holds it: the values of one prompt method, and optionally the linear classifier head trained
/// with it. It loads itself from any of the files a prompt travels in (a prompt file, a PEFT adapter folder, one prompt of
/// a bank), saves and exports itself in its own method's format, says how large an engine must be to hold it, and applies
/// itself to that engine. Callers hold a <see cref="TunedPrompt"/> and never ask which method it is.
/// </summary>
/// <remarks>
/// <para>Two methods reach the model: a plain prompt (<see cref="PlainTunedPrompt"/>: virtual-token rows of the input
/// embedding, PEFT PROMPT_TUNING) and a deep prompt (<see cref="DeepTunedPrompt"/>: keys and values at every layer, PEFT
/// PREFIX_TUNING). A deep prompt trained through prefix tuning's MLP is saved as the MLP's output, a plain deep prompt (as PEFT
/// saves it), so the MLP exists only while training (<see cref="TrainablePrompt"/>).</para>
/// <para>The values live on the host: a loaded prompt holds no device memory, and many can be held at once (a bank, a
/// server's tasks). <see cref="ApplyTo"/> copies them into an engine.</para>
/// </remarks>
public abstract class TunedPrompt
{
    private protected TunedPrompt(float[] values, int virtualTokens, int width, IReadOnlyDictionary<string, string> metadata, string? source,
        ClassifierHeadWeights? head, HeadLocation? headLocation)
    {
        (Values, VirtualTokens, Width, Metadata, Source) = (values, virtualTokens, width, metadata, source);
        Head = head;
        this.headLocation = headLocation;
    }

    readonly HeadLocation? headLocation;

    /// <summary>How the prompt reaches the model.</summary>
    public abstract PromptMethod Method { get; }

    /// <summary>Virtual tokens n: rows of a plain prompt, key/value positions of a deep one. Either way the prompt takes n of
    /// the model's positions.</summary>
    public int VirtualTokens { get; }

    /// <summary>The values, (<see cref="VirtualTokens"/>, <see cref="Width"/>) row-major in the method's PEFT layout.</summary>
    public float[] Values { get; }

    /// <summary>Width of a row: the model's hidden size C for a plain prompt, L·2·KV·hs for a deep one.</summary>
    public int Width { get; }

    /// <summary>Rows the prompt occupies in each input row (<see cref="EngineOptions.PromptTableRows"/>): n for a plain prompt,
    /// 0 for a deep one, which lives in the attention layers.</summary>
    public abstract int PromptTableRows { get; }

    /// <summary>Deep-prompt virtual tokens (<see cref="EngineOptions.DeepVirtualTokens"/>): n for a deep prompt, 0 for a plain one.</summary>
    public int DeepVirtualTokens => VirtualTokens - PromptTableRows;

    /// <summary>The linear classifier head trained with the prompt, or null (the LM head's verbalizer rows score the answer).</summary>
    public ClassifierHeadWeights? Head { get; }

    /// <summary>The file's string metadata (keys in <see cref="PromptMetadata"/>).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Where the prompt was read from (a file, an adapter folder, "bank.safetensors#name"), for messages; null for
    /// one made in memory.</summary>
    public string? Source { get; }

    /// <summary>The metadata value under <paramref name="key"/>, or null.</summary>
    public string? Meta(string key) => Metadata.TryGetValue(key, out var value) ? value : null;

    /// <summary>This prompt with another head (or none).</summary>
    public abstract TunedPrompt WithHead(ClassifierHeadWeights? head);

    /// <summary>A plain prompt (and head).</summary>
    public static PlainTunedPrompt Plain(SoftPrompt prompt, ClassifierHeadWeights? head = null) => new(prompt, head, null);

    /// <summary>A deep prompt (and head).</summary>
    public static DeepTunedPrompt Deep(DeepPrompt prompt, ClassifierHeadWeights? head = null) => new(prompt, head, null);

    /// <summary>Options of an engine that holds this prompt: <see cref="PromptTableRows"/> prompt rows and
    /// <see cref="DeepVirtualTokens"/> deep-prompt tokens, the rest as given.</summary>
    public EngineOptions EngineOptions(int maxRows, int maxLength, bool training = false, int maxVerbalizer = 16) =>
        new(maxRows, maxLength, PromptTableRows, Training: training, MaxVerbalizer: maxVerbalizer, DeepVirtualTokens: DeepVirtualTokens);

    /// <summary>Copies the prompt's values into <paramref name="engine"/> (its prompt rows or its deep prefix) and resets
    /// their gradient and AdamW state; the head is left alone.</summary>
    /// <exception cref="ArgumentException">The engine was sized for another prompt (<see cref="EngineOptions(int, int, bool, int)"/>).</exception>
    public abstract void SetValuesIn(TransformerEngine engine);

    /// <summary>Copies the prompt into <paramref name="engine"/> and, when it has a head, attaches a device copy of it. Returns
    /// that head (the caller disposes it with the engine), or null.</summary>
    /// <exception cref="ArgumentException">The engine was sized for another prompt.</exception>
    public ClassifierHead? ApplyTo(TransformerEngine engine)
    {
        ArgumentNullException.ThrowIfNull(engine);
        SetValuesIn(engine);
        if (Head is null)
        {
            engine.AttachHead(null);
            return null;
        }
        var classifier = new ClassifierHead(engine.Kernels, Head.Width, Head.Labels);
        try
        {
            classifier.SetParameters([.. Head.Weight, .. Head.Bias]);
            engine.AttachHead(classifier);
            return classifier;
        }
        catch
        {
            classifier.Dispose();
            throw;
        }
    }

    /// <summary>Refuses a head whose labels are not <paramref name="labels"/> in that order (a head only classifies the task it
    /// was trained for); a prompt without a head accepts any task.</summary>
    /// <exception cref="PromptCompatibilityException">Other labels; names the file and the head's tensor.</exception>
    public void CheckHeadLabels(IReadOnlyList<string> labels)
    {
        ArgumentNullException.ThrowIfNull(labels);
        if (Head is null || Head.Labels.SequenceEqual(labels, StringComparer.Ordinal)) return;
        var (file, tensor) = headLocation ?? new HeadLocation(Source ?? "the prompt", ClassifierHeadWeights.WeightTensor);
        throw new PromptCompatibilityException(file,
            $"'{tensor}': shape ({Head.Classes}, {Head.Width}) classifies [{string.Join(", ", Head.Labels)}], the task's labels are [{string.Join(", ", labels)}]");
    }

    /// <summary>Accepts the prompt for <paramref name="model"/> or throws: another shape never, another model's fingerprint only
    /// when <paramref name="allowMismatch"/>.</summary>
    /// <exception cref="PromptCompatibilityException">Another width, or another model and no mismatch allowed.</exception>
    public abstract PromptCompatibilityResult CheckCompatibility(ModelFolder model, bool allowMismatch);

    /// <summary>Writes the prompt (and head) atomically as a prompt file of its method; with <paramref name="model"/>, checks
    /// that it fits and records the model's description.</summary>
    /// <exception cref="PromptFormatException">Malformed or non-finite values (the old file is left as it was).</exception>
    /// <exception cref="PromptCompatibilityException">The prompt or its head does not fit <paramref name="model"/>.</exception>
    public abstract void Save(string path, ModelFolder? model = null);

    /// <summary>Writes the prompt (and head) as a Hugging Face PEFT adapter folder: PROMPT_TUNING or PREFIX_TUNING, SEQ_CLS
    /// with a head.</summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="model">The base model.</param>
    /// <param name="initMethod">A plain prompt's initialisation as PEFT records it (see <see cref="PeftAdapter.Save"/>); by
    /// default the one the prompt's metadata records. A deep prompt's adapter has no such field.</param>
    /// <param name="initText">The text of a text initialisation, when not in the metadata.</param>
    /// <exception cref="PromptCompatibilityException">The prompt does not fit <paramref name="model"/>.</exception>
    /// <exception cref="PromptFormatException">Malformed values, or <paramref name="folder"/> is a file.</exception>
    public abstract void ExportPeft(string folder, ModelFolder model, PromptInitMethod? initMethod = null, string? initText = null);

    /// <summary>Reads a tuned prompt with its head from a prompt file, a PEFT adapter folder or one prompt of a bank
    /// (<c>bank.safetensors#name</c>, plain prompts only), checked against the model's shape when it is given.</summary>
    /// <param name="path">The file, folder or bank entry.</param>
    /// <param name="config">The model: a plain prompt must have its width, a deep prompt its layers, kv heads and head size,
    /// a head its width. Null: the file is read as it is (a deep PEFT adapter cannot be, see <see cref="ImportPeft"/>).</param>
    /// <param name="method">The method the caller expects; the other kind is refused (<see cref="PromptKindException"/>).
    /// Null: whichever the file holds.</param>
    /// <param name="labels">The task's labels, when known: a head of other labels is refused (see <see cref="CheckHeadLabels"/>).</param>
    /// <exception cref="PromptFormatException">No such file, a malformed file or head, the other kind of prompt than expected.</exception>
    /// <exception cref="PromptCompatibilityException">A prompt or head that does not fit the model, a head of other labels.</exception>
    public static TunedPrompt Load(string path, TransformerConfig? config, PromptMethod? method = null, IReadOnlyList<string>? labels = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        TunedPrompt prompt;
        if (Directory.Exists(path)) prompt = ImportPeft(path, config, method);
        else if (BankEntry(path) is { } entry)
        {
            if (method == PromptMethod.Prefix)
                throw new PromptKindException(entry.Bank, PromptMetadata.Method, PromptMethod.Prompt, "a prompt bank holds plain prompts, not deep prompts (prefix tuning)");
            var soft = PromptBank.Load(entry.Bank).Get(entry.Name);
            if (config is not null && soft.Width != config.HiddenSize)
                throw new PromptCompatibilityException(path, $"prompt width {soft.Width} does not match the model's hidden size {config.HiddenSize}");
            prompt = new PlainTunedPrompt(soft, null, null);
        }
        else
        {
            if (!File.Exists(path)) throw new PromptFormatException(path, null, "no such file or folder");
            var location = new HeadLocation(path, ClassifierHeadWeights.WeightTensor);
            prompt = (method ?? DeepPromptFile.MethodOf(path)) == PromptMethod.Prefix
                ? new DeepTunedPrompt(DeepPromptFile.Load(path, config), ReadHead(location, ClassifierHeadWeights.BiasTensor, config), location)
                : new PlainTunedPrompt(PromptFile.Load(path, config?.HiddenSize), ReadHead(location, ClassifierHeadWeights.BiasTensor, config), location);
        }
        if (labels is not null) prompt.CheckHeadLabels(labels);
        return prompt;
    }

    /// <summary>Reads a Hugging Face PEFT adapter folder: PROMPT_TUNING as a plain prompt, PREFIX_TUNING as a deep prompt, with
    /// the head of a SEQ_CLS adapter.</summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="config">The model; a deep prompt's adapter is read against its layers and heads, so it needs one.</param>
    /// <param name="method">The method expected (the other is refused), or null: whichever the adapter holds.</param>
    /// <exception cref="PromptFormatException">A malformed adapter or head, another PEFT method, a deep prompt without a model.</exception>
    /// <exception cref="PromptCompatibilityException">An adapter or head that does not fit the model.</exception>
    public static TunedPrompt ImportPeft(string folder, TransformerConfig? config = null, PromptMethod? method = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var found = method ?? (PeftAdapter.PeftType(folder) == "PREFIX_TUNING" ? PromptMethod.Prefix : PromptMethod.Prompt);
        var location = new HeadLocation(Path.Combine(folder, PeftAdapter.WeightsFileName), ClassifierHeadWeights.PeftWeightTensor);
        if (found == PromptMethod.Prompt) return new PlainTunedPrompt(PeftAdapter.Load(folder, config?.HiddenSize), ReadHead(location, ClassifierHeadWeights.PeftBiasTensor, config), location);
        if (config is null)
            throw new PromptFormatException(folder, "peft_type", "a PREFIX_TUNING adapter holds a deep prompt, which is read against its model's layers and heads; the base model is needed to read it");
        return new DeepTunedPrompt(PeftAdapter.LoadPrefix(folder, config), ReadHead(location, ClassifierHeadWeights.PeftBiasTensor, config), location);
    }

    /// <summary>The head stored beside a prompt (or null): of the model's width when it is known, else of its own.</summary>
    static ClassifierHeadWeights? ReadHead(HeadLocation location, string biasTensor, TransformerConfig? config)
    {
        using var file = SafetensorsFile.Open(location.File);
        if (!file.TryGetTensor(location.WeightTensor, out var weight)) return null;
        var width = config?.HiddenSize ?? (weight.Shape.Length == 2 ? (int)Math.Min(weight.Shape[1], int.MaxValue) : 0);
        return ClassifierHeadWeights.Read(file, location.File, width, null, location.WeightTensor, biasTensor);
    }

    /// <summary>"bank.safetensors#name" when <paramref name="path"/> names one prompt of an existing bank file.</summary>
    /// <exception cref="PromptFormatException">The part before '#' is a single prompt file, not a bank.</exception>
    static (string Bank, string Name)? BankEntry(string path)
    {
        var hash = path.LastIndexOf('#');
        if (hash <= 0 || File.Exists(path) || !File.Exists(path[..hash])) return null;
        var (bank, name) = (path[..hash], path[(hash + 1)..]);
        using (var file = SafetensorsFile.Open(bank))
            if (file.Metadata.GetValueOrDefault(PromptMetadata.Content) != PromptBank.ContentValue)
                throw new PromptFormatException(bank, null, $"a single prompt file, not a prompt bank; give it without '#{name}'");
        return (bank, name);
    }
}

/// <summary>Where a loaded head was read from: the file and the tensor of W, for messages.</summary>
internal readonly record struct HeadLocation(string File, string WeightTensor);

/// <summary>A plain soft prompt (prompt tuning, Lester et al. 2021): n rows of the model's width placed among the input's
/// token embeddings, and optionally a head.</summary>
public sealed class PlainTunedPrompt : TunedPrompt
{
    internal PlainTunedPrompt(SoftPrompt prompt, ClassifierHeadWeights? head, HeadLocation? headLocation)
        : base(prompt.Values, prompt.VirtualTokens, prompt.Width, prompt.Metadata, prompt.Source, head, headLocation) => Prompt = prompt;

    /// <summary>The prompt's values, (n, C).</summary>
    public SoftPrompt Prompt { get; }

    /// <inheritdoc/>
    public override PromptMethod Method => PromptMethod.Prompt;
    /// <inheritdoc/>
    public override int PromptTableRows => Prompt.VirtualTokens;

    /// <inheritdoc/>
    public override TunedPrompt WithHead(ClassifierHeadWeights? head) => new PlainTunedPrompt(Prompt, head, null);

    /// <inheritdoc/>
    public override void SetValuesIn(TransformerEngine engine) => (engine ?? throw new ArgumentNullException(nameof(engine))).SetPrompt(Prompt.Values);

    /// <inheritdoc/>
    public override PromptCompatibilityResult CheckCompatibility(ModelFolder model, bool allowMismatch) => PromptCompatibility.Check(Prompt, model, allowMismatch);

    /// <inheritdoc/>
    public override void Save(string path, ModelFolder? model = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        var metadata = new Dictionary<string, string>(Prompt.Metadata, StringComparer.Ordinal);
        if (model is not null)
        {
            if (model.Config.HiddenSize != Prompt.Width)
                throw new PromptCompatibilityException(path, $"prompt width {Prompt.Width} does not match the model's hidden size {model.Config.HiddenSize} ({model.Path})");
            foreach (var (key, value) in PromptMetadata.ForModel(model)) metadata[key] = value;
        }
        metadata[PromptMetadata.VirtualTokens] = PromptMetadata.Invariant(Prompt.VirtualTokens);
        PromptFile.Save(path, Prompt.Values, Prompt.VirtualTokens, Prompt.Width, metadata, head: Head);
    }

    /// <inheritdoc/>
    public override void ExportPeft(string folder, ModelFolder model, PromptInitMethod? initMethod = null, string? initText = null) =>
        PeftAdapter.Save(folder, Prompt, model, initMethod, initText, Head);
}

/// <summary>A deep prompt (prefix tuning / P-tuning v2): keys and values of n virtual tokens at every layer, and optionally
/// a head. A prompt trained through prefix tuning's MLP is one of these, the MLP's output folded.</summary>
public sealed class DeepTunedPrompt : TunedPrompt
{
    internal DeepTunedPrompt(DeepPrompt prompt, ClassifierHeadWeights? head, HeadLocation? headLocation)
        : base(prompt.Values, prompt.VirtualTokens, prompt.Width, prompt.Metadata, prompt.Source, head, headLocation) => Prompt = prompt;

    /// <summary>The prompt's values, (Pv, L·2·KV·hs) in PEFT's layout.</summary>
    public DeepPrompt Prompt { get; }

    /// <inheritdoc/>
    public override PromptMethod Method => PromptMethod.Prefix;
    /// <inheritdoc/>
    public override int PromptTableRows => 0;

    /// <inheritdoc/>
    public override TunedPrompt WithHead(ClassifierHeadWeights? head) => new DeepTunedPrompt(Prompt, head, null);

    /// <inheritdoc/>
    public override void SetValuesIn(TransformerEngine engine) => (engine ?? throw new ArgumentNullException(nameof(engine))).SetPrefix(Prompt.ToEngineLayout());

    /// <inheritdoc/>
    public override PromptCompatibilityResult CheckCompatibility(ModelFolder model, bool allowMismatch) => PromptCompatibility.Check(Prompt, model, allowMismatch);

    /// <inheritdoc/>
    public override void Save(string path, ModelFolder? model = null) => DeepPromptFile.Save(path, Prompt, model, Head);

    /// <inheritdoc/>
    public override void ExportPeft(string folder, ModelFolder model, PromptInitMethod? initMethod = null, string? initText = null) =>
        PeftAdapter.SavePrefix(folder, Prompt, model, Head);
}
