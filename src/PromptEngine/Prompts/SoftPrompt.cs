namespace PromptEngine.Prompts;

/// <summary>A soft prompt: <see cref="VirtualTokens"/> rows of the model's width.</summary>
/// <param name="Values">(n_virtual_tokens, hidden) row-major.</param>
/// <param name="VirtualTokens">Rows n.</param>
/// <param name="Width">Hidden size of the model it was made for.</param>
/// <param name="Metadata">The file's string metadata (keys in <see cref="PromptMetadata"/>: the
/// base model's fingerprint, width and name, how the prompt was initialised, ...).</param>
public sealed record SoftPrompt(float[] Values, int VirtualTokens, int Width, IReadOnlyDictionary<string, string> Metadata)
{
    /// <summary>Where the prompt was read from (a file, a PEFT adapter folder, or "bank.safetensors#name"),
    /// for error messages; null for a prompt made in memory.</summary>
    public string? Source { get; init; }

    /// <summary>The metadata value under <paramref name="key"/>, or null.</summary>
    public string? Meta(string key) => Metadata.TryGetValue(key, out var value) ? value : null;

    /// <summary>This prompt with <paramref name="extra"/> merged over its metadata.</summary>
    public SoftPrompt WithMetadata(IReadOnlyDictionary<string, string> extra)
    {
        var merged = new Dictionary<string, string>(Metadata, StringComparer.Ordinal);
        foreach (var (key, value) in extra) merged[key] = value;
        return this with { Metadata = merged };
    }

    /// <summary>Row <paramref name="row"/> (C floats).</summary>
    public ReadOnlySpan<float> Row(int row) =>
        (uint)row < (uint)VirtualTokens ? Values.AsSpan(row * Width, Width) : throw new ArgumentOutOfRangeException(nameof(row), row, $"the prompt has {VirtualTokens} rows");

    /// <summary>Checks that <see cref="Values"/> holds n·C finite values.</summary>
    /// <exception cref="PromptFormatException">Wrong length, non-positive shape or a non-finite value (row and column named).</exception>
    public void Validate()
    {
        var where = Source ?? "prompt";
        if (VirtualTokens <= 0 || Width <= 0)
            throw new PromptFormatException(where, null, $"shape ({VirtualTokens}, {Width}) is not (n_virtual_tokens ≥ 1, hidden ≥ 1)");
        if (Values is null || Values.LongLength != (long)VirtualTokens * Width)
            throw new PromptFormatException(where, null, $"{Values?.LongLength ?? 0} values do not make ({VirtualTokens}, {Width})");
        for (var i = 0; i < Values.Length; i++)
            if (!float.IsFinite(Values[i]))
                throw new PromptFormatException(where, null, $"non-finite value {Values[i]} at row {i / Width}, column {i % Width}");
    }
}

/// <summary>A prompt file, bank or PEFT adapter that cannot be read or written: names the file (and
/// the tensor, field or prompt name at fault).</summary>
public class PromptFormatException(string filePath, string? field, string problem, Exception? inner = null)
    : PromptEngineException($"{filePath}: " + (field is null ? problem : $"'{field}': {problem}"), inner)
{
    /// <summary>The file (or folder) at fault.</summary>
    public string FilePath { get; } = filePath;
    /// <summary>The tensor, field or prompt at fault, when one is.</summary>
    public string? Field { get; } = field;
}

/// <summary>A file or adapter that holds the other kind of prompt than the one asked for (a deep prompt where a plain
/// one was expected, or the other way round).</summary>
public sealed class PromptKindException(string filePath, string? field, PromptMethod found, string problem)
    : PromptFormatException(filePath, field, problem)
{
    /// <summary>The kind of prompt the file holds.</summary>
    public PromptMethod Found { get; } = found;
}
