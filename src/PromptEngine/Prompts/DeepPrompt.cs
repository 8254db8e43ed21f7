using System.Globalization;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>How a prompt reaches the model: which kind of prompt a file holds, and which kind a user picks.</summary>
public enum PromptMethod
{
    /// <summary>Plain prompt tuning: virtual-token rows of the input embedding (PEFT PROMPT_TUNING).</summary>
    Prompt,
    /// <summary>Deep prompts (prefix tuning / P-tuning v2): trainable keys and values at every layer (PEFT PREFIX_TUNING).</summary>
    Prefix,
}

/// <summary>A deep prompt: for each of Pv virtual tokens and each layer, a key and a value vector per kv head, in
/// Hugging Face PEFT's PREFIX_TUNING layout — <see cref="Values"/> is (Pv, L·2·token_dim) with token_dim = KV·hs and
/// the last dimension ordered (layer, key|value, kv head, channel), exactly what PEFT's <c>prompt_embeddings</c> holds
/// and what its <c>get_prompt</c> views as (Pv, L·2, KV, hs). Keys are used as a KV cache holds them (already rotated).</summary>
/// <param name="Values">(Pv, L·2·KV·hs) row-major.</param>
/// <param name="VirtualTokens">Pv.</param>
/// <param name="NumLayers">L.</param>
/// <param name="KvHeads">KV, the model's key/value heads (grouped-query models: fewer than the query heads).</param>
/// <param name="HeadDim">hs.</param>
/// <param name="Metadata">The file's string metadata.</param>
public sealed record DeepPrompt(float[] Values, int VirtualTokens, int NumLayers, int KvHeads, int HeadDim, IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>Where the prompt was read from, for error messages; null for one made in memory.</summary>
    public string? Source { get; init; }

    /// <summary>The metadata value under <paramref name="key"/>, or null.</summary>
    public string? Meta(string key) => Metadata.TryGetValue(key, out var value) ? value : null;

    /// <summary>PEFT's token_dim: KV·hs (the hidden size for models without grouped-query attention).</summary>
    public int TokenDim => KvHeads * HeadDim;

    /// <summary>Width of a row, L·2·token_dim.</summary>
    public int Width => NumLayers * 2 * TokenDim;

    /// <summary>Trainable parameters, Pv·L·2·KV·hs.</summary>
    public long Parameters => (long)VirtualTokens * Width;

    /// <summary>Checks the shape and that every value is finite.</summary>
    /// <exception cref="PromptFormatException">A non-positive dimension, a wrong count or a non-finite value (token, layer and part named).</exception>
    public void Validate()
    {
        var where = Source ?? "deep prompt";
        if (VirtualTokens <= 0 || NumLayers <= 0 || KvHeads <= 0 || HeadDim <= 0)
            throw new PromptFormatException(where, null, $"shape Pv {VirtualTokens}, L {NumLayers}, KV {KvHeads}, hs {HeadDim}: every dimension must be ≥ 1");
        if (Values is null || Values.LongLength != Parameters)
            throw new PromptFormatException(where, PromptFile.TensorName, $"{Values?.LongLength ?? 0} values do not make (Pv, L·2·KV·hs) = ({VirtualTokens}, {Width})");
        for (var i = 0; i < Values.Length; i++)
            if (!float.IsFinite(Values[i]))
            {
                int token = i / Width, column = i % Width, layer = column / (2 * TokenDim);
                throw new PromptFormatException(where, PromptFile.TensorName,
                    $"non-finite value {Values[i]} at virtual token {token}, layer {layer}, {((column / TokenDim) % 2 == 0 ? "key" : "value")}");
            }
    }

    /// <summary>Checks that the prompt fits <paramref name="config"/>: layers, kv heads and head size.</summary>
    /// <exception cref="PromptCompatibilityException">A dimension differs from the model's.</exception>
    public void CheckFits(TransformerConfig config, string? where = null)
    {
        if (NumLayers != config.NumLayers || KvHeads != config.NumKvHeads || HeadDim != config.HeadDim)
            throw new PromptCompatibilityException(where ?? Source ?? "deep prompt",
                $"'{PromptFile.TensorName}': shape ({VirtualTokens}, {Width}) is a deep prompt of {NumLayers} layers × {KvHeads} kv heads × head size {HeadDim}; the model has {config.NumLayers} × {config.NumKvHeads} × {config.HeadDim}");
    }

    /// <summary>The engine's layout (L, 2, Pv, KV·hs): per layer the Pv keys, then the Pv values (see <c>TransformerEngine.SetPrefix</c>).</summary>
    public float[] ToEngineLayout()
    {
        var result = new float[Values.Length];
        int d = TokenDim;
        for (int token = 0; token < VirtualTokens; token++)
            for (int part = 0; part < 2 * NumLayers; part++) // part = 2·layer + (0 key | 1 value), as PEFT orders them
                Array.Copy(Values, (long)token * Width + (long)part * d, result, ((long)part * VirtualTokens + token) * d, d);
        return result;
    }

    /// <summary>A deep prompt from the engine's layout (L, 2, Pv, KV·hs).</summary>
    public static DeepPrompt FromEngineLayout(float[] engineValues, int virtualTokens, TransformerConfig config, IReadOnlyDictionary<string, string>? metadata = null)
    {
        int d = config.NumKvHeads * config.HeadDim, width = config.NumLayers * 2 * d;
        if (engineValues.LongLength != (long)virtualTokens * width)
            throw new ArgumentException($"{engineValues.Length} values do not make the engine's prefix (L, 2, Pv, KV·hs) = ({config.NumLayers}, 2, {virtualTokens}, {d})");
        var values = new float[engineValues.Length];
        for (int token = 0; token < virtualTokens; token++)
            for (int part = 0; part < 2 * config.NumLayers; part++)
                Array.Copy(engineValues, ((long)part * virtualTokens + token) * d, values, (long)token * width + (long)part * d, d);
        return new DeepPrompt(values, virtualTokens, config.NumLayers, config.NumKvHeads, config.HeadDim, metadata ?? new Dictionary<string, string>());
    }

    /// <summary>A seeded random deep prompt, uniform in ±<paramref name="spread"/> (keys and values alike).</summary>
    public static DeepPrompt Random(TransformerConfig config, int virtualTokens, int seed, float spread = 0.5f)
    {
        if (virtualTokens <= 0) throw new ArgumentOutOfRangeException(nameof(virtualTokens), virtualTokens, "at least one virtual token");
        var rng = new Data.SplitMix64((ulong)seed);
        var values = new float[(long)virtualTokens * config.NumLayers * 2 * config.NumKvHeads * config.HeadDim];
        for (var i = 0; i < values.Length; i++) values[i] = (float)(((rng.Next() >> 11) * (1.0 / (1UL << 53)) * 2 - 1) * spread);
        return new DeepPrompt(values, virtualTokens, config.NumLayers, config.NumKvHeads, config.HeadDim, new Dictionary<string, string>
        {
            [PromptMetadata.Method] = PromptMetadata.MethodPrefix,
            [PromptMetadata.InitMethod] = "random",
            [PromptMetadata.InitSeed] = seed.ToString(CultureInfo.InvariantCulture),
            [PromptMetadata.InitSpread] = spread.ToString("R", CultureInfo.InvariantCulture),
        });
    }
}

/// <summary>The project's own deep-prompt files: a prompt file (safetensors, tensor <c>prompt_embeddings</c>) whose
/// metadata carries the method tag <c>"method": "prefix"</c> and the shape (num_layers, num_key_value_heads, head_dim);
/// the tensor is (Pv, L·2·KV·hs) in PEFT's PREFIX_TUNING layout. Plain prompt files have no tag, or "prompt".</summary>
public static class DeepPromptFile
{
    /// <summary>Writes <paramref name="prompt"/> atomically; with <paramref name="model"/>, checks that it fits and records
    /// the model's description (<see cref="PromptMetadata.ForModel"/>).</summary>
    /// <exception cref="PromptFormatException">Malformed or non-finite (the old file is left as it was).</exception>
    /// <exception cref="PromptCompatibilityException">The prompt does not fit <paramref name="model"/>.</exception>
    /// <param name="path">The file to write (replaced atomically).</param>
    /// <param name="prompt">The deep prompt.</param>
    /// <param name="model">The model it was trained on, or null to skip the fit check and the model's description.</param>
    /// <param name="head">A classifier head trained with the prompt, saved beside it as in <see cref="PromptFile.Save(string, float[], int, int, IReadOnlyDictionary{string, string}?, bool, ClassifierHeadWeights?)"/>.</param>
    public static void Save(string path, DeepPrompt prompt, ModelFolder? model = null, ClassifierHeadWeights? head = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        (prompt with { Source = path }).Validate();
        var metadata = new Dictionary<string, string>(prompt.Metadata, StringComparer.Ordinal);
        if (model is not null)
        {
            prompt.CheckFits(model.Config, path);
            foreach (var (key, value) in PromptMetadata.ForModel(model)) metadata[key] = value;
        }
        metadata.Remove(PromptMetadata.Content);
        metadata[PromptMetadata.Method] = PromptMetadata.MethodPrefix;
        metadata[PromptMetadata.VirtualTokens] = PromptMetadata.Invariant(prompt.VirtualTokens);
        metadata[PromptMetadata.NumLayers] = PromptMetadata.Invariant(prompt.NumLayers);
        metadata[PromptMetadata.NumKeyValueHeads] = PromptMetadata.Invariant(prompt.KvHeads);
        metadata[PromptMetadata.HeadDim] = PromptMetadata.Invariant(prompt.HeadDim);
        metadata["format"] = "pt";
        List<TensorToWrite> tensors = [TensorToWrite.F32(PromptFile.TensorName, [prompt.VirtualTokens, prompt.Width], prompt.Values)];
        if (head is not null)
        {
            head.Validate(path);
            if (model is not null && head.Width != model.Config.HiddenSize)
                throw new PromptCompatibilityException(path, $"'{ClassifierHeadWeights.WeightTensor}' reads width {head.Width}, the model's hidden size is {model.Config.HiddenSize}");
            head.AddMetadata(metadata);
            tensors.AddRange(head.Tensors());
        }
        SafetensorsWriter.Write(path, tensors, metadata, integrityHash: true);
    }

    /// <summary>The method a prompt file's metadata declares: <see cref="PromptMethod.Prefix"/> for "prefix", else
    /// <see cref="PromptMethod.Prompt"/> (untagged files are plain prompts).</summary>
    public static PromptMethod MethodOf(string path)
    {
        using var file = SafetensorsFile.Open(path);
        return file.Metadata.GetValueOrDefault(PromptMetadata.Method) == PromptMetadata.MethodPrefix ? PromptMethod.Prefix : PromptMethod.Prompt;
    }

    /// <summary>Reads a deep-prompt file; F32, F16 and BF16 are accepted.</summary>
    /// <param name="path">The file.</param>
    /// <param name="expected">The model's configuration, when known: another layer count, kv-head count or head size is refused.</param>
    /// <exception cref="PromptFormatException">A plain prompt file, a missing tensor or field, or a shape that disagrees with the metadata.</exception>
    /// <exception cref="PromptCompatibilityException">The prompt does not fit <paramref name="expected"/>.</exception>
    public static DeepPrompt Load(string path, TransformerConfig? expected = null)
    {
        using var file = SafetensorsFile.Open(path);
        file.VerifyIntegrity();
        var metadata = file.Metadata;
        var method = metadata.GetValueOrDefault(PromptMetadata.Method);
        if (method is null or PromptMetadata.MethodPrompt)
            throw new PromptKindException(path, PromptMetadata.Method, PromptMethod.Prompt, "this is a plain prompt file (no \"method\": \"prefix\" tag); load it as a plain prompt (PromptFile)");
        if (method != PromptMetadata.MethodPrefix)
            throw new PromptFormatException(path, PromptMetadata.Method, $"unknown method '{method}'; expected \"prefix\"");
        int Field(string key)
        {
            if (!metadata.TryGetValue(key, out var text)) throw new PromptFormatException(path, key, "missing from the metadata of a deep-prompt file");
            if (!int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var value) || value <= 0)
                throw new PromptFormatException(path, key, $"'{text}' is not a positive integer");
            return value;
        }
        int layers = Field(PromptMetadata.NumLayers), kvHeads = Field(PromptMetadata.NumKeyValueHeads), headDim = Field(PromptMetadata.HeadDim);
        var flat = PromptFile.ReadTensor(file, PromptFile.TensorName, path, null, metadata);
        if ((long)layers * 2 * kvHeads * headDim != flat.Width)
            throw new PromptFormatException(path, PromptFile.TensorName,
                $"width {flat.Width}, but num_layers·2·num_key_value_heads·head_dim = {layers}·2·{kvHeads}·{headDim} = {(long)layers * 2 * kvHeads * headDim}");
        var prompt = new DeepPrompt(flat.Values, flat.VirtualTokens, layers, kvHeads, headDim, flat.Metadata) { Source = path };
        if (expected is not null) prompt.CheckFits(expected, path);
        return prompt;
    }
}
