using System.Text.Json;
using System.Text.RegularExpressions;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>Several named prompts of one width in one safetensors file, e.g. one per task or class.
/// <para>Layout: one F32 tensor <c>prompts.&lt;name&gt;</c> of shape (n_i, hidden) per prompt; metadata
/// <c>content = "prompt_bank"</c>, <c>prompt_names</c> (JSON array: the bank's order, which the tensor
/// order of safetensors — sorted by name — cannot keep), <c>base_model_width</c>, and per prompt
/// <c>prompt_metadata.&lt;name&gt;</c>, a JSON object of that prompt's own metadata.</para>
/// <para>An engine bank holds all prompts <see cref="Stack">stacked</see> (ΣP rows); a batch row uses
/// its prompt's rows FirstRow..FirstRow+Rows−1 (<c>Slot.Prompt(row)</c>).</para></summary>
public sealed partial class PromptBank
{
    /// <summary>The metadata value of <see cref="PromptMetadata.Content"/> marking a bank.</summary>
    public const string ContentValue = "prompt_bank";
    /// <summary>Prefix of each prompt's tensor name.</summary>
    public const string TensorPrefix = "prompts.";
    /// <summary>Metadata key of the JSON array of names in bank order.</summary>
    public const string NamesKey = "prompt_names";
    /// <summary>Prefix of the metadata key holding one prompt's own metadata (a JSON object).</summary>
    public const string PromptMetadataPrefix = "prompt_metadata.";

    readonly List<string> names = [];
    readonly Dictionary<string, SoftPrompt> prompts = new(StringComparer.Ordinal);

    /// <summary>The file the bank was loaded from, or null for one built in memory.</summary>
    public string? Source { get; private set; }

    /// <summary>Prompt names in the order they were added (and are stacked).</summary>
    public IReadOnlyList<string> Names => names;

    /// <summary>Number of prompts.</summary>
    public int Count => names.Count;

    /// <summary>The common width of the prompts, or null while the bank is empty.</summary>
    public int? Width => names.Count == 0 ? null : prompts[names[0]].Width;

    /// <summary>Adds a prompt under <paramref name="name"/> (letters, digits, '_', '-', '.'; at most 128 characters).</summary>
    /// <exception cref="ArgumentException">The name is invalid or already used, or the width differs from the bank's.</exception>
    /// <exception cref="PromptFormatException">The prompt is malformed or holds a non-finite value.</exception>
    public void Add(string name, SoftPrompt prompt)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        var where = Source ?? "prompt bank";
        if (!IsValidName(name))
            throw new ArgumentException($"{where}: prompt name '{name}' is invalid; use 1–128 letters, digits, '_', '-' or '.'", nameof(name));
        if (prompts.ContainsKey(name))
            throw new ArgumentException($"{where}: a prompt named '{name}' is already in the bank", nameof(name));
        (prompt with { Source = prompt.Source ?? $"{where}#{name}" }).Validate();
        if (Width is { } width && prompt.Width != width)
            throw new ArgumentException($"{where}: prompt '{name}' is {prompt.Width} wide, the bank's prompts are {width} wide (prompt '{names[0]}')", nameof(prompt));
        names.Add(name);
        prompts[name] = prompt;
    }

    /// <summary>The prompt named <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No such prompt; the message lists the names there are.</exception>
    public SoftPrompt Get(string name) =>
        prompts.TryGetValue(name, out var prompt) ? prompt
            : throw new KeyNotFoundException($"{Source ?? "prompt bank"}: no prompt named '{name}' (the bank has: {string.Join(", ", names)})");

    /// <summary>Whether a prompt named <paramref name="name"/> is in the bank.</summary>
    public bool Contains(string name) => prompts.ContainsKey(name);

    /// <summary>All prompts stacked in bank order: (ΣP, C) row-major values, and each name's rows in them.</summary>
    /// <exception cref="InvalidOperationException">The bank is empty.</exception>
    public (float[] Values, Dictionary<string, (int FirstRow, int Rows)> Rows) Stack()
    {
        if (names.Count == 0) throw new InvalidOperationException($"{Source ?? "prompt bank"}: the bank is empty; there is nothing to stack");
        int width = Width!.Value;
        int total = names.Sum(n => prompts[n].VirtualTokens);
        var values = new float[(long)total * width];
        var rows = new Dictionary<string, (int FirstRow, int Rows)>(StringComparer.Ordinal);
        int first = 0;
        foreach (var name in names)
        {
            var p = prompts[name];
            p.Values.CopyTo(values, (long)first * width);
            rows[name] = (first, p.VirtualTokens);
            first += p.VirtualTokens;
        }
        return (values, rows);
    }

    /// <summary>Writes the bank atomically (temp file + rename): a failed save leaves an old file intact.</summary>
    /// <exception cref="InvalidOperationException">The bank is empty.</exception>
    /// <exception cref="PromptFormatException">A prompt holds a non-finite value (the old file is untouched).</exception>
    public void Save(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (names.Count == 0) throw new InvalidOperationException($"{path}: refusing to save an empty prompt bank");
        // The arrays are the caller's and may have changed since Add; check again before replacing a good file.
        foreach (var name in names) (prompts[name] with { Source = $"{path}#{name}" }).Validate();
        var metadata = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["format"] = "pt",
            [PromptMetadata.Content] = ContentValue,
            [NamesKey] = JsonSerializer.Serialize(names),
            [PromptMetadata.BaseModelWidth] = PromptMetadata.Invariant(Width!.Value),
        };
        // One fingerprint for the whole bank when all prompts agree on it, so tools can check the file at a glance.
        var fingerprints = names.Select(n => prompts[n].Meta(PromptMetadata.BaseModelFingerprint)).Distinct().ToList();
        if (fingerprints is [{ } common]) metadata[PromptMetadata.BaseModelFingerprint] = common;
        var tensors = new List<TensorToWrite>();
        foreach (var name in names)
        {
            var p = prompts[name];
            metadata[PromptMetadataPrefix + name] = JsonSerializer.Serialize(p.Metadata.Where(kv => kv.Key != "format").ToDictionary(kv => kv.Key, kv => kv.Value));
            tensors.Add(TensorToWrite.F32(TensorPrefix + name, [p.VirtualTokens, p.Width], p.Values));
        }
        SafetensorsWriter.Write(path, tensors, metadata, integrityHash: true);
    }

    /// <summary>Reads a bank written by <see cref="Save"/>.</summary>
    /// <exception cref="PromptFormatException">Not a bank, a broken name list, a missing or extra tensor, widths
    /// that differ, a non-finite value; the message names the file and the prompt.</exception>
    public static PromptBank Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        file.VerifyIntegrity();
        if (file.Metadata.GetValueOrDefault(PromptMetadata.Content) != ContentValue)
        {
            var hint = file.TryGetTensor(PromptFile.TensorName, out _) ? " — it is a single prompt file; load it with PromptFile.Load or add it to a bank" : "";
            throw new PromptFormatException(path, PromptMetadata.Content, $"not a prompt bank (metadata content = \"{file.Metadata.GetValueOrDefault(PromptMetadata.Content)}\", expected \"{ContentValue}\"){hint}");
        }
        if (!file.Metadata.TryGetValue(NamesKey, out var namesJson))
            throw new PromptFormatException(path, NamesKey, "missing from the metadata");
        List<string>? order;
        try { order = JsonSerializer.Deserialize<List<string>>(namesJson); }
        catch (JsonException e) { throw new PromptFormatException(path, NamesKey, $"not a JSON array of strings: {e.Message}", e); }
        if (order is null || order.Count == 0) throw new PromptFormatException(path, NamesKey, "the bank lists no prompts");

        var listed = new HashSet<string>(StringComparer.Ordinal);
        foreach (var name in order)
        {
            if (!IsValidName(name)) throw new PromptFormatException(path, NamesKey, $"invalid prompt name '{name}'");
            if (!listed.Add(name)) throw new PromptFormatException(path, NamesKey, $"prompt name '{name}' is listed twice");
        }
        foreach (var t in file.Tensors)
            if (!t.Name.StartsWith(TensorPrefix, StringComparison.Ordinal) || !listed.Contains(t.Name[TensorPrefix.Length..]))
                throw new PromptFormatException(path, t.Name, $"tensor is not one of the prompts listed in '{NamesKey}' ({string.Join(", ", order)})");

        var bank = new PromptBank { Source = path };
        foreach (var name in order)
        {
            var tensor = TensorPrefix + name;
            if (!file.TryGetTensor(tensor, out _)) throw new PromptFormatException(path, tensor, $"prompt '{name}' is listed but its tensor is missing");
            var metadata = ReadPromptMetadata(file, path, name);
            var prompt = PromptFile.ReadTensor(file, tensor, path, null, metadata) with { Source = $"{path}#{name}" };
            if (bank.Width is { } width && prompt.Width != width)
                throw new PromptFormatException(path, tensor, $"prompt '{name}' is {prompt.Width} wide, prompt '{order[0]}' is {width} wide; a bank's prompts share one width");
            bank.names.Add(name);
            bank.prompts[name] = prompt;
        }
        return bank;
    }

    static Dictionary<string, string> ReadPromptMetadata(SafetensorsFile file, string path, string name)
    {
        if (!file.Metadata.TryGetValue(PromptMetadataPrefix + name, out var json)) return new(StringComparer.Ordinal);
        try
        {
            return JsonSerializer.Deserialize<Dictionary<string, string>>(json) is { } parsed
                ? new Dictionary<string, string>(parsed, StringComparer.Ordinal)
                : throw new PromptFormatException(path, PromptMetadataPrefix + name, "null instead of a JSON object");
        }
        catch (JsonException e) { throw new PromptFormatException(path, PromptMetadataPrefix + name, $"not a JSON object of strings: {e.Message}", e); }
    }

    /// <summary>Whether <paramref name="name"/> can name a prompt in a bank.</summary>
    public static bool IsValidName(string? name) => name is not null && NamePattern().IsMatch(name);

    [GeneratedRegex(@"^[A-Za-z0-9_.-]{1,128}\z")]
    private static partial Regex NamePattern();
}
