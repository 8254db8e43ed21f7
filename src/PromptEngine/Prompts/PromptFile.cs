using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>A soft prompt: <see cref="VirtualTokens"/> rows of the model's width.</summary>
/// <param name="Values">(n_virtual_tokens, hidden) row-major.</param>
/// <param name="VirtualTokens">Rows n.</param>
/// <param name="Width">Hidden size of the model it was made for.</param>
/// <param name="Metadata">The file's string metadata (e.g. the base model's fingerprint).</param>
public sealed record SoftPrompt(float[] Values, int VirtualTokens, int Width, IReadOnlyDictionary<string, string> Metadata);

/// <summary>Prompt files: safetensors with one tensor <c>prompt_embeddings</c> of shape
/// (n_virtual_tokens, hidden), the name and layout Hugging Face PEFT uses for prompt tuning.
/// Gradient files (<c>loss --grad-out</c>) have the same layout, marked <c>"content": "gradient"</c>
/// in the metadata so that one is never mistaken for a prompt.</summary>
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
        if (!file.TryGetTensor(TensorName, out var info))
            throw new PromptEngineException($"{path}: no tensor '{TensorName}' (found: {string.Join(", ", file.Tensors.Select(t => t.Name))})");
        if (file.Metadata.TryGetValue("content", out var content) && content == "gradient")
            throw new PromptEngineException($"{path}: this is a gradient file (dLoss/dPrompt), not a prompt");
        if (info.Shape.Length != 2 || info.Shape[0] <= 0 || info.Shape[1] <= 0)
            throw new PromptEngineException($"{path}: tensor '{TensorName}' has shape [{string.Join(", ", info.Shape)}], expected (n_virtual_tokens, hidden)");
        if (info.DType is not (DType.F32 or DType.F16 or DType.BF16))
            throw new PromptEngineException($"{path}: tensor '{TensorName}' is {info.DType}; a prompt must be F32, F16 or BF16");
        int rows = checked((int)info.Shape[0]), width = checked((int)info.Shape[1]);
        if (expectedWidth is { } w && w != width)
            throw new PromptEngineException($"{path}: prompt width {width} does not match the model's hidden size {w}");
        var values = file.ReadF32(TensorName);
        for (var i = 0; i < values.Length; i++)
            if (!float.IsFinite(values[i]))
                throw new PromptEngineException($"{path}: tensor '{TensorName}' holds a non-finite value at row {i / width}, column {i % width}");
        return new SoftPrompt(values, rows, width, file.Metadata);
    }

    /// <summary>Writes a prompt (or, with <paramref name="isGradient"/>, its gradient) atomically.</summary>
    public static void Save(string path, float[] values, int virtualTokens, int width, IReadOnlyDictionary<string, string>? metadata = null, bool isGradient = false)
    {
        if (values.Length != (long)virtualTokens * width)
            throw new ArgumentException($"{values.Length} values do not make ({virtualTokens}, {width})");
        var meta = new Dictionary<string, string>(metadata ?? new Dictionary<string, string>()) { ["format"] = "pt" };
        if (isGradient) meta["content"] = "gradient";
        SafetensorsWriter.Write(path, [TensorToWrite.F32(TensorName, [virtualTokens, width], values)], meta);
    }
}
