using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>Prompt files: safetensors with one tensor <c>prompt_embeddings</c> of shape
/// (n_virtual_tokens, hidden), the name and layout Hugging Face PEFT uses for prompt tuning.
/// Gradient files (<c>loss --grad-out</c>) have the same layout, marked <c>"content": "gradient"</c>
/// in the metadata so that one is never mistaken for a prompt. Every save is atomic (temp file +
/// rename), and a prompt that fails its checks is refused before the old file is touched.</summary>
public static class PromptFile
{
    /// <summary>The tensor name PEFT uses.</summary>
    public const string TensorName = "prompt_embeddings";

    /// <summary>Reads a prompt; F32, F16 and BF16 are accepted (widened to float).</summary>
    /// <param name="path">The file.</param>
    /// <param name="expectedWidth">The model's hidden size; a prompt of another width is refused.</param>
    /// <exception cref="PromptEngineException">Missing tensor, wrong rank or width, a gradient file, or a broken file; the message names the file.</exception>
    public static SoftPrompt Load(string path, int? expectedWidth = null)
    {
        using var file = SafetensorsFile.Open(path);
        file.VerifyIntegrity();
        if (!file.TryGetTensor(TensorName, out _))
        {
            var hint = file.Metadata.GetValueOrDefault(PromptMetadata.Content) == PromptBank.ContentValue
                ? " — this is a prompt bank; load it with PromptBank.Load and pick a prompt by name" : "";
            throw new PromptFormatException(path, TensorName, $"no such tensor (found: {string.Join(", ", file.Tensors.Select(t => t.Name))}){hint}");
        }
        if (file.Metadata.GetValueOrDefault(PromptMetadata.Method) == PromptMetadata.MethodPrefix)
            throw new PromptKindException(path, PromptMetadata.Method, PromptMethod.Prefix, "this is a deep prompt (prefix tuning) file, not a plain prompt; load it as a deep prompt (DeepPromptFile)");
        if (file.Metadata.TryGetValue(PromptMetadata.Content, out var content) && content == "gradient")
            throw new PromptFormatException(path, null, "this is a gradient file (dLoss/dPrompt), not a prompt");
        return ReadTensor(file, TensorName, path, expectedWidth, file.Metadata) with { Source = path };
    }

    /// <summary>Writes a prompt (or, with <paramref name="isGradient"/>, its gradient) atomically.
    /// A prompt (not a gradient) with a non-finite value is refused and the old file left as it was.</summary>
    /// <exception cref="ArgumentException">The values do not make (virtualTokens, width).</exception>
    /// <exception cref="PromptFormatException">A prompt value is NaN or infinite.</exception>
    /// <param name="path">The file to write (replaced atomically).</param>
    /// <param name="values">The prompt (or gradient) values, row-major (virtualTokens, width).</param>
    /// <param name="virtualTokens">Rows: the prompt's virtual tokens.</param>
    /// <param name="width">Columns: the model's hidden size.</param>
    /// <param name="metadata">String metadata stored in the safetensors header (model description, init, template…).</param>
    /// <param name="isGradient">Whether the values are a gradient (marked as such in the metadata; not refused for non-finite values).</param>
    /// <param name="head">A classifier head trained with the prompt, saved beside it (<see cref="ClassifierHeadWeights.WeightTensor"/>,
    /// <see cref="ClassifierHeadWeights.BiasTensor"/>, labels in the metadata); read it back with <see cref="ClassifierHeadWeights.Read(string, int, IReadOnlyList{string}?)"/>.</param>
    public static void Save(string path, float[] values, int virtualTokens, int width, IReadOnlyDictionary<string, string>? metadata = null, bool isGradient = false,
        ClassifierHeadWeights? head = null)
    {
        if (values.Length != (long)virtualTokens * width)
            throw new ArgumentException($"{values.Length} values do not make ({virtualTokens}, {width})");
        if (!isGradient) new SoftPrompt(values, virtualTokens, width, new Dictionary<string, string>()) { Source = path }.Validate();
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["format"] = "pt" };
        if (isGradient) meta[PromptMetadata.Content] = "gradient";
        else meta.Remove(PromptMetadata.Content);
        List<TensorToWrite> tensors = [TensorToWrite.F32(TensorName, [virtualTokens, width], values)];
        if (head is not null)
        {
            head.Validate(path);
            if (head.Width != width) throw new PromptCompatibilityException(path, $"'{ClassifierHeadWeights.WeightTensor}' reads width {head.Width}, the prompt is {width} wide");
            head.AddMetadata(meta);
            tensors.AddRange(head.Tensors());
        }
        SafetensorsWriter.Write(path, tensors, meta, integrityHash: true);
    }

    /// <summary>Writes <paramref name="prompt"/> atomically with its metadata; with <paramref name="model"/>,
    /// the base model's description (<see cref="PromptMetadata.ForModel"/>) is written over it, after
    /// checking that the widths agree.</summary>
    /// <exception cref="PromptFormatException">The prompt is malformed or holds a non-finite value (the old file is untouched).</exception>
    /// <exception cref="PromptCompatibilityException">The prompt's width is not the model's hidden size.</exception>
    public static void Save(string path, SoftPrompt prompt, ModelFolder? model = null)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        (prompt with { Source = path }).Validate();
        var metadata = new Dictionary<string, string>(prompt.Metadata, StringComparer.Ordinal);
        if (model is not null)
        {
            if (model.Config.HiddenSize != prompt.Width)
                throw new PromptCompatibilityException(path, $"prompt width {prompt.Width} does not match the model's hidden size {model.Config.HiddenSize} ({model.Path})");
            foreach (var (key, value) in PromptMetadata.ForModel(model)) metadata[key] = value;
        }
        metadata[PromptMetadata.VirtualTokens] = prompt.VirtualTokens.ToString(System.Globalization.CultureInfo.InvariantCulture);
        Save(path, prompt.Values, prompt.VirtualTokens, prompt.Width, metadata);
    }

    /// <summary>Reads the (n, C) float tensor <paramref name="tensorName"/> of an open file as a prompt.</summary>
    internal static SoftPrompt ReadTensor(SafetensorsFile file, string tensorName, string path, int? expectedWidth, IReadOnlyDictionary<string, string> metadata)
    {
        var info = file.GetTensor(tensorName);
        if (info.Shape.Length != 2 || info.Shape[0] <= 0 || info.Shape[1] <= 0)
            throw new PromptFormatException(path, tensorName, $"shape {info.ShapeText}, expected (n_virtual_tokens, hidden) with both ≥ 1");
        if (info.DType is not (DType.F32 or DType.F16 or DType.BF16))
            throw new PromptFormatException(path, tensorName, $"dtype {info.DType}; a prompt must be F32, F16 or BF16");
        if (info.Shape[0] > int.MaxValue || info.Shape[1] > int.MaxValue || info.ElementCount > Array.MaxLength)
            throw new PromptFormatException(path, tensorName, $"shape {info.ShapeText} is too large for a prompt");
        int rows = (int)info.Shape[0], width = (int)info.Shape[1];
        if (expectedWidth is { } w && w != width)
            throw new PromptCompatibilityException(path, $"prompt width {width} (tensor '{tensorName}') does not match the model's hidden size {w}");
        var values = file.ReadF32(tensorName);
        for (var i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new PromptFormatException(path, tensorName, $"non-finite value at row {i / width}, column {i % width}");
        var kept = metadata.Where(kv => kv.Key != SafetensorsFile.IntegrityKey).ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        return new SoftPrompt(values, rows, width, kept);
    }
}
