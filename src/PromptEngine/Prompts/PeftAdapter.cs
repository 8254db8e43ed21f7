using System.Globalization;
using System.Text;
using System.Text.Json;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>Hugging Face PEFT prompt-tuning adapters: a folder with <c>adapter_model.safetensors</c> (one
/// tensor <c>prompt_embeddings</c>, (num_virtual_tokens, token_dim)) and <c>adapter_config.json</c> with
/// the fields of PEFT's <c>PromptTuningConfig</c> (and its bases <c>PromptLearningConfig</c>, <c>PeftConfig</c>),
/// so that <c>PeftModel.from_pretrained(base, folder)</c> loads what we train and we load what PEFT trains.</summary>
public static class PeftAdapter
{
    /// <summary>The adapter's configuration file.</summary>
    public const string ConfigFileName = "adapter_config.json";
    /// <summary>The adapter's weights.</summary>
    public const string WeightsFileName = "adapter_model.safetensors";
    /// <summary>The pickle weights older PEFT versions wrote; refused, never unpickled.</summary>
    public const string PickleWeightsFileName = "adapter_model.bin";

    /// <summary>Writes <paramref name="prompt"/> as a PEFT prompt-tuning adapter into <paramref name="folder"/>
    /// (created if needed; other files in it are left alone). Both files are written to temporary names
    /// first and renamed into place only when both are complete, so a failed save leaves an older
    /// adapter as it was. The weights file's metadata also carries <see cref="PromptMetadata.ForModel"/>,
    /// which PEFT ignores and <see cref="Load"/> reads back.</summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="prompt">The prompt; its width must be the model's hidden size.</param>
    /// <param name="model">The base model (fills token_dim, num_layers, num_attention_heads, base_model_name_or_path).</param>
    /// <param name="initMethod">How the prompt was initialised; by default the prompt's recorded <see cref="PromptMetadata.InitMethod"/>,
    /// else Random. PEFT's prompt_tuning_init only says how the values it overwrites on loading were first made, so methods that
    /// not every PEFT release knows (<see cref="PromptInitMethod.SampleVocab"/>, only since PEFT 0.18; <see cref="PromptInitMethod.File"/>)
    /// are written as "RANDOM"; the weights file's metadata keeps our own record.</param>
    /// <param name="initText">prompt_tuning_init_text for Text (by default the prompt's recorded <see cref="PromptMetadata.InitText"/>); ignored otherwise.</param>
    /// <param name="tokenizerName">The tokenizer's hub id or path for a Text init (PEFT's tokenizer_name_or_path); by default the
    /// model's hub id when config.json records one. PEFT before 0.8 loads this tokenizer even to run the adapter, so without a name
    /// it can resolve the adapter is written as "RANDOM" (our init stays in the weights file's metadata).</param>
    /// <exception cref="PromptCompatibilityException">The prompt's width is not the model's.</exception>
    /// <exception cref="PromptFormatException">The prompt is malformed, or <paramref name="folder"/> is a file.</exception>
    /// <param name="head">A classifier head trained with the prompt: the adapter becomes a sequence-classification one
    /// (<see cref="WithHead"/>).</param>
    /// <exception cref="ArgumentException">Text initialisation without a text.</exception>
    public static void Save(string folder, SoftPrompt prompt, ModelFolder model, PromptInitMethod? initMethod = null, string? initText = null,
        ClassifierHeadWeights? head = null, string? tokenizerName = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(model);
        (prompt with { Source = folder }).Validate();
        if (prompt.Width != model.Config.HiddenSize)
            throw new PromptCompatibilityException(folder, $"prompt width {prompt.Width} does not match the hidden size {model.Config.HiddenSize} of {model.Path}");
        if (File.Exists(folder)) throw new PromptFormatException(folder, null, "is a file; a PEFT adapter is a folder");

        var method = initMethod ?? (PromptInit.TryParseMethod(prompt.Meta(PromptMetadata.InitMethod), out var recorded) ? recorded : PromptInitMethod.Random);
        var text = method == PromptInitMethod.Text ? initText ?? prompt.Meta(PromptMetadata.InitText) : null;
        if (method == PromptInitMethod.Text && text is null)
            throw new ArgumentException("a TEXT-initialised adapter needs its init text (PEFT refuses prompt_tuning_init TEXT without prompt_tuning_init_text)", nameof(initText));

        var modelMetadata = PromptMetadata.ForModel(model);
        var (modelName, isHubId) = PromptMetadata.ModelName(model);
        var tokenizer = tokenizerName ?? (isHubId ? modelName : null);
        var config = ConfigJson(prompt.VirtualTokens, model.Config, modelName, PeftInit(method, text, tokenizer), head);

        var metadata = new Dictionary<string, string>(prompt.Metadata, StringComparer.Ordinal);
        metadata.Remove(PromptMetadata.Content);
        foreach (var (key, value) in modelMetadata) metadata[key] = value;
        metadata[PromptMetadata.VirtualTokens] = PromptMetadata.Invariant(prompt.VirtualTokens);
        metadata[PromptMetadata.InitMethod] = PromptInit.MethodName(method);
        if (text is not null) metadata[PromptMetadata.InitText] = text;
        metadata["format"] = "pt";
        List<TensorToWrite> tensors = [TensorToWrite.F32(PromptFile.TensorName, [prompt.VirtualTokens, prompt.Width], prompt.Values)];
        AddHead(folder, tensors, metadata, head, model.Config.HiddenSize);
        WriteAdapter(folder, tensors, metadata, config);
    }

    /// <summary>PEFT's prompt_tuning_init spelling of a method, as every PEFT release from 0.6 accepts it: "TEXT" or
    /// "RANDOM" ("SAMPLE_VOCAB" exists only since PEFT 0.18 and older releases refuse it).</summary>
    public static string PeftInitName(PromptInitMethod method) => method == PromptInitMethod.Text ? "TEXT" : "RANDOM";

    /// <summary>prompt_tuning_init, prompt_tuning_init_text and tokenizer_name_or_path: TEXT only with a tokenizer name
    /// PEFT can resolve (PEFT 0.6 and 0.7 load it whenever the adapter is built, even for inference; every release
    /// refuses TEXT without one), else RANDOM with neither.</summary>
    static (string Init, string? Text, string? Tokenizer) PeftInit(PromptInitMethod method, string? text, string? tokenizer) =>
        method == PromptInitMethod.Text && text is not null && !string.IsNullOrWhiteSpace(tokenizer)
            ? ("TEXT", text, tokenizer)
            : ("RANDOM", null, null);

    /// <summary>The fields of PEFT's PromptLearningConfig and its bases (PeftConfigMixin, PeftConfig) that every PEFT
    /// release from 0.6 has, in the values PEFT's save_pretrained writes for a decoder-only model. Later fields
    /// (tokenizer_kwargs 0.7, modules_to_save 0.17, peft_version 0.18) are left out: PEFT before 0.14 refuses
    /// unknown keys, and later releases fill them with their defaults.</summary>
    static SortedDictionary<string, object?> PromptLearningFields(string modelName, string peftType, int virtualTokens, int tokenDim, int heads, int layers) =>
        new(StringComparer.Ordinal)
        {
            ["auto_mapping"] = null,
            ["base_model_name_or_path"] = modelName,
            ["inference_mode"] = true,
            ["num_attention_heads"] = heads,
            ["num_layers"] = layers,
            ["num_transformer_submodules"] = 1,
            ["num_virtual_tokens"] = virtualTokens,
            ["peft_type"] = peftType,
            ["revision"] = null,
            ["task_type"] = "CAUSAL_LM",
            ["token_dim"] = tokenDim,
        };

    /// <summary>adapter_config.json as PEFT's <c>save_pretrained</c> writes it (keys sorted, two-space indent) with
    /// the PromptTuningConfig fields every release from 0.6 accepts (a sequence-classification adapter with a head).</summary>
    static byte[] ConfigJson(int virtualTokens, TransformerConfig c, string modelName, (string Init, string? Text, string? Tokenizer) init, ClassifierHeadWeights? head)
    {
        var fields = PromptLearningFields(modelName, "PROMPT_TUNING", virtualTokens, c.HiddenSize, c.NumHeads, c.NumLayers);
        fields["prompt_tuning_init"] = init.Init;
        fields["prompt_tuning_init_text"] = init.Text;
        fields["tokenizer_name_or_path"] = init.Tokenizer;
        WithHead(fields, head);
        return JsonBytes(fields);
    }

    /// <summary>Reads a PEFT prompt-tuning adapter folder. Fields PEFT may add in any version are ignored;
    /// the ones that decide the tensor's meaning are checked. The prompt's metadata holds the weights
    /// file's metadata plus base_model_name_or_path, base_model_width (token_dim), num_layers,
    /// num_attention_heads and the init method/text from the config.</summary>
    /// <param name="folder">The adapter folder.</param>
    /// <param name="expectedWidth">The model's hidden size, when known; another width is refused.</param>
    /// <exception cref="PromptFormatException">A missing or unreadable file, pickle weights (adapter_model.bin),
    /// another PEFT method, an encoder-decoder prompt, or a shape that disagrees with num_virtual_tokens ×
    /// token_dim; the message names the file and the field.</exception>
    /// <exception cref="PromptCompatibilityException">The prompt's width is not <paramref name="expectedWidth"/>.</exception>
    public static SoftPrompt Load(string folder, int? expectedWidth = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        var (root, configPath, weightsPath) = ReadConfig(folder);

        var peftType = String(root, "peft_type", configPath) ?? throw new PromptFormatException(configPath, "peft_type", "missing; every PEFT adapter_config.json has it");
        switch (peftType)
        {
            case "PROMPT_TUNING": break;
            case "PREFIX_TUNING":
                throw new PromptKindException(configPath, "peft_type", PromptMethod.Prefix, "a PREFIX_TUNING adapter holds a deep prompt (prefix tuning), not a plain prompt");
            case "P_TUNING" or "MULTITASK_PROMPT_TUNING" or "ADAPTION_PROMPT" or "CPT":
                throw new PromptFormatException(configPath, "peft_type", $"{peftType} adapters are not supported yet; only PROMPT_TUNING (input-embedding soft prompts) is");
            default:
                throw new PromptFormatException(configPath, "peft_type", $"{peftType} is not a soft-prompt method; only PROMPT_TUNING adapters can be loaded");
        }
        var submodules = Int(root, "num_transformer_submodules", configPath);
        if (submodules is { } s && s != 1)
            throw new PromptFormatException(configPath, "num_transformer_submodules", $"{s} (an encoder-decoder prompt); only decoder-only prompts (1) are supported");
        var virtualTokens = Int(root, "num_virtual_tokens", configPath);
        var tokenDim = Int(root, "token_dim", configPath);
        if (virtualTokens is <= 0) throw new PromptFormatException(configPath, "num_virtual_tokens", $"must be positive, found {virtualTokens}");
        if (tokenDim is <= 0) throw new PromptFormatException(configPath, "token_dim", $"must be positive, found {tokenDim}");

        if (!File.Exists(weightsPath))
        {
            if (File.Exists(Path.Combine(folder, PickleWeightsFileName)))
                throw new PromptFormatException(Path.Combine(folder, PickleWeightsFileName), null,
                    $"pickle (.bin) adapter weights are not supported, only {WeightsFileName}; re-save the adapter with PEFT's save_pretrained(..., safe_serialization=True)");
            throw new PromptFormatException(weightsPath, null, "missing; a PEFT adapter folder holds adapter_model.safetensors");
        }

        var prompt = ReadPromptEmbeddings(weightsPath);
        if (virtualTokens is { } n && n != prompt.VirtualTokens)
            throw new PromptFormatException(configPath, "num_virtual_tokens", $"{n}, but tensor '{PromptFile.TensorName}' in {WeightsFileName} has {prompt.VirtualTokens} rows");
        if (tokenDim is { } d && d != prompt.Width)
            throw new PromptFormatException(configPath, "token_dim", $"{d}, but tensor '{PromptFile.TensorName}' in {WeightsFileName} is {prompt.Width} wide");
        if (expectedWidth is { } w && w != prompt.Width)
            throw new PromptCompatibilityException(folder, $"prompt width {prompt.Width} does not match the model's hidden size {w}");

        var metadata = new Dictionary<string, string>(prompt.Metadata, StringComparer.Ordinal);
        metadata.Remove("format");
        metadata[PromptMetadata.VirtualTokens] = PromptMetadata.Invariant(prompt.VirtualTokens);
        metadata[PromptMetadata.BaseModelWidth] = PromptMetadata.Invariant(prompt.Width);
        if (String(root, "base_model_name_or_path", configPath) is { Length: > 0 } baseModel) metadata[PromptMetadata.BaseModelNameOrPath] = baseModel;
        if (Int(root, "num_layers", configPath) is { } layers) metadata[PromptMetadata.NumLayers] = PromptMetadata.Invariant(layers);
        if (Int(root, "num_attention_heads", configPath) is { } heads) metadata[PromptMetadata.NumAttentionHeads] = PromptMetadata.Invariant(heads);
        var init = String(root, "prompt_tuning_init", configPath);
        // Hand-written configs sometimes carry the Python enum's repr, "PromptTuningInit.TEXT".
        // Our own weights file records the init exactly; the config's may be the RANDOM every PEFT release accepts.
        if (!metadata.ContainsKey(PromptMetadata.InitMethod) && init is not null && PromptInit.TryParseMethod(init.Replace("PromptTuningInit.", ""), out var method))
        {
            metadata[PromptMetadata.InitMethod] = PromptInit.MethodName(method);
            if (method == PromptInitMethod.Text && String(root, "prompt_tuning_init_text", configPath) is { } text) metadata[PromptMetadata.InitText] = text;
        }
        return prompt with { Metadata = metadata, Source = folder };
    }

    /// <summary>Writes <paramref name="prompt"/> as a PEFT PREFIX_TUNING adapter: <c>prompt_embeddings</c> (Pv, L·2·token_dim)
    /// in PEFT's layout and adapter_config.json with the fields of PrefixTuningConfig. For grouped-query models token_dim is
    /// KV·hs and num_attention_heads is KV — the per-kv-head shape PEFT uses since its GQA fixes (peft #1901), which is what
    /// its get_prompt views the tensor as. prefix_projection is written false: a reparameterised prefix is saved folded
    /// (PEFT itself saves the projection's output). Atomic like <see cref="Save"/>.</summary>
    /// <exception cref="PromptCompatibilityException">The prompt does not fit <paramref name="model"/>.</exception>
    /// <exception cref="PromptFormatException">The prompt is malformed, or <paramref name="folder"/> is a file.</exception>
    /// <param name="folder">The adapter folder to write (created or replaced atomically).</param>
    /// <param name="prompt">The deep prompt.</param>
    /// <param name="model">The model it was trained on: its shape is checked and its name recorded as the base model.</param>
    /// <param name="head">A classifier head trained with the prompt: the adapter becomes a sequence-classification one
    /// (<see cref="WithHead"/>).</param>
    public static void SavePrefix(string folder, DeepPrompt prompt, ModelFolder model, ClassifierHeadWeights? head = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(prompt);
        ArgumentNullException.ThrowIfNull(model);
        (prompt with { Source = folder }).Validate();
        prompt.CheckFits(model.Config, folder);
        if (File.Exists(folder)) throw new PromptFormatException(folder, null, "is a file; a PEFT adapter is a folder");
        var modelMetadata = PromptMetadata.ForModel(model);
        var fields = PromptLearningFields(PromptMetadata.NameOrPath(model), "PREFIX_TUNING", prompt.VirtualTokens, prompt.TokenDim, prompt.KvHeads, prompt.NumLayers);
        fields["encoder_hidden_size"] = prompt.TokenDim;
        fields["prefix_projection"] = false;
        var metadata = new Dictionary<string, string>(prompt.Metadata, StringComparer.Ordinal);
        metadata.Remove(PromptMetadata.Content);
        foreach (var (key, value) in modelMetadata) metadata[key] = value;
        metadata[PromptMetadata.Method] = PromptMetadata.MethodPrefix;
        metadata[PromptMetadata.VirtualTokens] = PromptMetadata.Invariant(prompt.VirtualTokens);
        metadata[PromptMetadata.NumKeyValueHeads] = PromptMetadata.Invariant(prompt.KvHeads);
        metadata[PromptMetadata.HeadDim] = PromptMetadata.Invariant(prompt.HeadDim);
        metadata["format"] = "pt";
        List<TensorToWrite> tensors = [TensorToWrite.F32(PromptFile.TensorName, [prompt.VirtualTokens, prompt.Width], prompt.Values)];
        AddHead(folder, tensors, metadata, head, model.Config.HiddenSize);
        WithHead(fields, head);
        WriteAdapter(folder, tensors, metadata, JsonBytes(fields));
    }

    /// <summary>Reads a PEFT PREFIX_TUNING adapter folder into a deep prompt for a model of <paramref name="config"/>.
    /// token_dim and num_attention_heads must describe the model's kv heads (token_dim = KV·hs); an adapter written by
    /// PEFT versions that used the query heads on a grouped-query model (token_dim = H·hs ≠ KV·hs) is refused, since its
    /// keys cannot be attended to by this model. prefix_projection adapters load too: PEFT saves the projected prefixes.</summary>
    /// <exception cref="PromptFormatException">A missing or unreadable file, another PEFT method, an encoder-decoder
    /// prompt, or a shape that disagrees with the config; the message names the file and the field.</exception>
    /// <exception cref="PromptCompatibilityException">The adapter was made for another shape of model.</exception>
    public static DeepPrompt LoadPrefix(string folder, TransformerConfig config)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(config);
        var (root, configPath, weightsPath) = ReadConfig(folder);
        var peftType = String(root, "peft_type", configPath) ?? throw new PromptFormatException(configPath, "peft_type", "missing; every PEFT adapter_config.json has it");
        if (peftType == "PROMPT_TUNING")
            throw new PromptKindException(configPath, "peft_type", PromptMethod.Prompt, "a PROMPT_TUNING adapter holds a plain prompt, not a deep prompt (prefix tuning)");
        if (peftType != "PREFIX_TUNING")
            throw new PromptFormatException(configPath, "peft_type", $"{peftType}; only PREFIX_TUNING adapters hold deep prompts");
        if (Int(root, "num_transformer_submodules", configPath) is { } s && s != 1)
            throw new PromptFormatException(configPath, "num_transformer_submodules", $"{s} (an encoder-decoder prompt); only decoder-only prompts (1) are supported");
        int Required(string field) => Int(root, field, configPath) is { } v and > 0 ? v
            : throw new PromptFormatException(configPath, field, "missing or not a positive integer; a PREFIX_TUNING config needs it");
        int virtualTokens = Required("num_virtual_tokens"), tokenDim = Required("token_dim"), heads = Required("num_attention_heads"), layers = Required("num_layers");
        int kvWidth = config.NumKvHeads * config.HeadDim;
        if (layers != config.NumLayers)
            throw new PromptCompatibilityException(folder, $"num_layers {layers}, but the model has {config.NumLayers} layers");
        if (tokenDim != kvWidth || heads != config.NumKvHeads)
            throw new PromptCompatibilityException(folder, tokenDim == config.NumHeads * config.HeadDim && heads == config.NumHeads && config.NumKvHeads != config.NumHeads
                ? $"token_dim {tokenDim} and num_attention_heads {heads} count the query heads of a grouped-query model; its prefixes must be per kv head (token_dim = KV·hs = {kvWidth}, num_attention_heads = {config.NumKvHeads}) — re-save with a PEFT version that handles GQA"
                : $"token_dim {tokenDim} and num_attention_heads {heads} do not match the model's kv heads (token_dim = KV·hs = {kvWidth}, num_attention_heads = {config.NumKvHeads})");
        if (!File.Exists(weightsPath))
            throw new PromptFormatException(weightsPath, null, File.Exists(Path.Combine(folder, PickleWeightsFileName))
                ? $"pickle (.bin) adapter weights are not supported, only {WeightsFileName}" : "missing; a PEFT adapter folder holds adapter_model.safetensors");
        var flat = ReadPromptEmbeddings(weightsPath);
        if (flat.VirtualTokens != virtualTokens)
            throw new PromptFormatException(configPath, "num_virtual_tokens", $"{virtualTokens}, but tensor '{PromptFile.TensorName}' has {flat.VirtualTokens} rows");
        if (flat.Width != layers * 2 * tokenDim)
            throw new PromptFormatException(weightsPath, PromptFile.TensorName, $"width {flat.Width}, but num_layers·2·token_dim = {layers}·2·{tokenDim} = {layers * 2 * tokenDim}");
        var metadata = new Dictionary<string, string>(flat.Metadata, StringComparer.Ordinal);
        metadata.Remove("format");
        metadata[PromptMetadata.Method] = PromptMetadata.MethodPrefix;
        if (String(root, "base_model_name_or_path", configPath) is { Length: > 0 } baseModel) metadata[PromptMetadata.BaseModelNameOrPath] = baseModel;
        return new DeepPrompt(flat.Values, virtualTokens, layers, config.NumKvHeads, config.HeadDim, metadata) { Source = folder };
    }

    /// <summary>PEFT's modules_to_save for a sequence-classification model: PeftModelForSequenceClassification adds these two
    /// names (peft v0.20.0, src/peft/peft_model.py) to whatever the config lists, and wraps the model's classifier layer.</summary>
    /// <summary>A classifier head turns an adapter into PEFT's sequence-classification kind: task_type SEQ_CLS, and the head's
    /// W and b under the names get_peft_model_state_dict gives a decoder's <c>score</c> layer
    /// (<see cref="ClassifierHeadWeights.PeftWeightTensor"/>, <see cref="ClassifierHeadWeights.PeftBiasTensor"/>).
    /// modules_to_save is not written: PeftModelForSequenceClassification adds "classifier" and "score" to it by itself in
    /// every release, and the config field exists for prompt learning only since PEFT 0.17 (older releases refuse the key).
    /// transformers' decoder classifiers (Llama, Mistral, Qwen2, GPT-2) build <c>score</c> without a bias, so PEFT loads
    /// W there and leaves out b; PromptEngine reads both (<see cref="LoadHead"/>).</summary>
    static void WithHead(SortedDictionary<string, object?> fields, ClassifierHeadWeights? head)
    {
        if (head is null) return;
        fields["task_type"] = "SEQ_CLS";
    }

    static void AddHead(string folder, List<TensorToWrite> tensors, Dictionary<string, string> metadata, ClassifierHeadWeights? head, int width)
    {
        if (head is null) return;
        head.Validate(folder);
        if (head.Width != width)
            throw new PromptCompatibilityException(folder, $"'{ClassifierHeadWeights.PeftWeightTensor}' reads width {head.Width}, the model's hidden size is {width}");
        head.AddMetadata(metadata);
        tensors.AddRange(head.Tensors(ClassifierHeadWeights.PeftWeightTensor, ClassifierHeadWeights.PeftBiasTensor));
    }

    /// <summary>The classifier head of a SEQ_CLS adapter folder (<see cref="ClassifierHeadWeights.PeftWeightTensor"/> and
    /// <see cref="ClassifierHeadWeights.PeftBiasTensor"/> in adapter_model.safetensors, labels in its metadata), or null when
    /// it holds none.</summary>
    /// <exception cref="PromptFormatException">A malformed head; the message names the file and the tensor.</exception>
    /// <exception cref="PromptCompatibilityException">A head of another width or label set.</exception>
    public static ClassifierHeadWeights? LoadHead(string folder, int expectedWidth, IReadOnlyList<string>? expectedLabels)
    {
        var (_, _, weightsPath) = ReadConfig(folder);
        if (!File.Exists(weightsPath)) throw new PromptFormatException(weightsPath, null, "missing; a PEFT adapter folder holds adapter_model.safetensors");
        using var file = SafetensorsFile.Open(weightsPath);
        return ClassifierHeadWeights.Read(file, weightsPath, expectedWidth, expectedLabels, ClassifierHeadWeights.PeftWeightTensor, ClassifierHeadWeights.PeftBiasTensor);
    }

    /// <summary>The peft_type of an adapter folder's config, or null when it has none.</summary>
    /// <exception cref="PromptFormatException">No such folder or an unreadable config.</exception>
    public static string? PeftType(string folder) { var (root, configPath, _) = ReadConfig(folder); return String(root, "peft_type", configPath); }

    static (JsonElement Root, string ConfigPath, string WeightsPath) ReadConfig(string folder)
    {
        if (!Directory.Exists(folder))
            throw new PromptFormatException(folder, null, File.Exists(folder) ? "is a file; a PEFT adapter is a folder holding adapter_config.json and adapter_model.safetensors" : "no such adapter folder");
        var configPath = Path.Combine(folder, ConfigFileName);
        if (!File.Exists(configPath)) throw new PromptFormatException(configPath, null, "missing; a PEFT adapter folder holds adapter_config.json");
        JsonElement root;
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllBytes(configPath), new JsonDocumentOptions { AllowTrailingCommas = true, CommentHandling = JsonCommentHandling.Skip });
            root = document.RootElement.Clone();
        }
        catch (JsonException e) { throw new PromptFormatException(configPath, null, $"not valid JSON: {e.Message}", e); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new PromptFormatException(configPath, null, $"cannot read: {e.Message}", e); }
        if (root.ValueKind != JsonValueKind.Object) throw new PromptFormatException(configPath, null, "the top level is not a JSON object");
        return (root, configPath, Path.Combine(folder, WeightsFileName));
    }

    static byte[] JsonBytes(SortedDictionary<string, object?> fields)
    {
        var buffer = new MemoryStream();
        using (var writer = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            writer.WriteStartObject();
            foreach (var (key, value) in fields)
            {
                switch (value)
                {
                    case null: writer.WriteNull(key); break;
                    case bool b: writer.WriteBoolean(key, b); break;
                    case int i: writer.WriteNumber(key, i); break;
                    case string text: writer.WriteString(key, text); break;
                    case string[] list:
                        writer.WriteStartArray(key);
                        foreach (var item in list) writer.WriteStringValue(item);
                        writer.WriteEndArray();
                        break;
                }
            }
            writer.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>Writes weights then config under temporary names and renames them into place (see <see cref="Save"/>).</summary>
    static void WriteAdapter(string folder, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string> metadata, byte[] config)
    {
        Directory.CreateDirectory(folder);
        var stamp = $"{Environment.ProcessId}.{Guid.NewGuid():N}";
        var weightsTemp = Path.Combine(folder, $".{WeightsFileName}.{stamp}.tmp");
        var configTemp = Path.Combine(folder, $".{ConfigFileName}.{stamp}.tmp");
        try
        {
            SafetensorsWriter.Write(weightsTemp, tensors, metadata, integrityHash: true);
            using (var stream = new FileStream(configTemp, FileMode.CreateNew, FileAccess.Write))
            {
                stream.Write(config);
                stream.Flush(flushToDisk: true);
            }
            // Weights first: a crash between the renames leaves new weights beside the old config, which
            // Load refuses when the shapes differ rather than silently mixing two adapters.
            File.Move(weightsTemp, Path.Combine(folder, WeightsFileName), overwrite: true);
            File.Move(configTemp, Path.Combine(folder, ConfigFileName), overwrite: true);
        }
        finally
        {
            TryDelete(weightsTemp);
            TryDelete(configTemp);
        }
    }

    static string? String(JsonElement root, string field, string path)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString()
            : throw new PromptFormatException(path, field, $"expected a string, found {v.GetRawText()}");
    }

    static int? Int(JsonElement root, string field, string path)
    {
        if (!root.TryGetProperty(field, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out var i) ? i
            : throw new PromptFormatException(path, field, $"expected an integer, found {v.GetRawText()}");
    }

    static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>The adapter's prompt_embeddings tensor, after the file's integrity check.</summary>
    static SoftPrompt ReadPromptEmbeddings(string weightsPath)
    {
        using var file = SafetensorsFile.Open(weightsPath);
        file.VerifyIntegrity();
        if (!file.TryGetTensor(PromptFile.TensorName, out _))
            throw new PromptFormatException(weightsPath, PromptFile.TensorName, $"no such tensor (found: {string.Join(", ", file.Tensors.Select(t => t.Name))})");
        return PromptFile.ReadTensor(file, PromptFile.TensorName, weightsPath, null, file.Metadata);
    }
}
