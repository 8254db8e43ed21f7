using System.Text.Json;
using System.Text.Unicode;

namespace PromptEngine.Safetensors;

/// <summary>Parses and validates a safetensors JSON header against the size of the data section that
/// follows it, with the same rules Python's safetensors applies: every entry well typed, every dtype
/// known, shape × dtype size equal to the byte range, and the ranges tiling the data section exactly
/// (no gap, no overlap, nothing after the last tensor). Everything is checked here, once, so that
/// reads later need no checks beyond bounds that are then already known to hold.</summary>
internal static class SafetensorsHeader
{
    /// <summary>Largest header accepted, as in the Rust safetensors crate: bigger means hostile.</summary>
    internal const long MaxHeaderBytes = 100_000_000;

    internal const string MetadataKey = "__metadata__";

    /// <summary>Real headers nest three deep (root → entry → array); anything deeper is rejected early.</summary>
    private static readonly JsonDocumentOptions JsonOptions = new()
    {
        MaxDepth = 8,
        AllowTrailingCommas = false,
        CommentHandling = JsonCommentHandling.Disallow,
    };

    internal sealed record Parsed(IReadOnlyDictionary<string, string> Metadata, TensorInfo[] TensorsByName);

    /// <param name="path">File named in errors.</param>
    /// <param name="header">The header's bytes (N bytes after the 8-byte length).</param>
    /// <param name="dataLength">Bytes in the file after the header.</param>
    internal static Parsed Parse(string path, ReadOnlyMemory<byte> header, long dataLength)
    {
        var span = header.Span;
        if (span.Length == 0 || span[0] != (byte)'{')
            throw new SafetensorsException(path, null, "the JSON header does not start with '{'");
        if (!Utf8.IsValid(span))
            throw new SafetensorsException(path, null, "the JSON header is not valid UTF-8");

        JsonDocument document;
        try { document = JsonDocument.Parse(header, JsonOptions); }
        catch (JsonException e) { throw new SafetensorsException(path, null, $"the header is not valid JSON: {e.Message}", e); }

        string? currentTensor = null;
        try
        {
            return Walk(path, document, dataLength, ref currentTensor);
        }
        catch (InvalidOperationException e)
        {
            // JsonDocument accepts escapes such as "\ud800" (half a UTF-16 pair) and only fails when the
            // string is read; such a string cannot be a faithful name or value.
            throw new SafetensorsException(path, currentTensor, $"the header holds a string that is not valid UTF-16 (lone surrogate escape): {e.Message}", e);
        }
        finally
        {
            document.Dispose();
        }
    }

    private static Parsed Walk(string path, JsonDocument document, long dataLength, ref string? currentTensor)
    {
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, null, $"the header is a JSON {Kind(root)}, not an object");

        var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
        var tensors = new List<TensorInfo>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var property in root.EnumerateObject())
        {
            currentTensor = null;  // in case reading the name itself fails
            currentTensor = property.Name == MetadataKey ? null : property.Name;
            // JsonDocument keeps both copies of a duplicated key; Python's safetensors rejects them.
            if (!seen.Add(property.Name))
                throw property.Name == MetadataKey
                    ? new SafetensorsException(path, null, $"'{MetadataKey}' appears more than once in the header")
                    : new SafetensorsException(path, property.Name, "the tensor name appears more than once in the header");
            if (property.Name == MetadataKey)
            {
                ParseMetadata(path, property.Value, metadata);
            }
            else
            {
                tensors.Add(ParseEntry(path, property.Name, property.Value, dataLength));
            }
        }

        CheckCoverage(path, tensors, dataLength);
        tensors.Sort((a, b) => string.CompareOrdinal(a.Name, b.Name));
        return new Parsed(metadata, tensors.ToArray());
    }

    private static void ParseMetadata(string path, JsonElement value, Dictionary<string, string> metadata)
    {
        if (value.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, null, $"'{MetadataKey}' is a JSON {Kind(value)}, not an object of strings");
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsException(path, null, $"'{MetadataKey}' key '{item.Name}' has a JSON {Kind(item.Value)} value; the format allows only strings");
            if (!metadata.TryAdd(item.Name, item.Value.GetString()!))
                throw new SafetensorsException(path, null, $"'{MetadataKey}' key '{item.Name}' appears more than once");
        }
    }

    private static TensorInfo ParseEntry(string path, string name, JsonElement entry, long dataLength)
    {
        if (entry.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(path, name, $"the header entry is a JSON {Kind(entry)}, not an object");

        JsonElement? dtypeElement = null, shapeElement = null, offsetsElement = null;
        var fields = new HashSet<string>(StringComparer.Ordinal);
        foreach (var field in entry.EnumerateObject())
        {
            if (!fields.Add(field.Name))
                throw new SafetensorsException(path, name, $"field '{field.Name}' appears more than once");
            switch (field.Name)
            {
                case "dtype": dtypeElement = field.Value; break;
                case "shape": shapeElement = field.Value; break;
                case "data_offsets": offsetsElement = field.Value; break;
                // Other fields are ignored, as Python's safetensors ignores them.
            }
        }

        if (dtypeElement is not { } dtypeValue)
            throw new SafetensorsException(path, name, "the header entry has no 'dtype'");
        if (dtypeValue.ValueKind != JsonValueKind.String)
            throw new SafetensorsException(path, name, $"'dtype' is a JSON {Kind(dtypeValue)}, not a string");
        var dtypeName = dtypeValue.GetString();
        if (!DTypes.TryParse(dtypeName, out var dtype))
            throw new SafetensorsException(path, name, $"unknown dtype '{dtypeName}' (known: {string.Join(", ", Enum.GetNames<DType>())})");

        if (shapeElement is not { } shapeValue)
            throw new SafetensorsException(path, name, "the header entry has no 'shape'");
        if (shapeValue.ValueKind != JsonValueKind.Array)
            throw new SafetensorsException(path, name, $"'shape' is a JSON {Kind(shapeValue)}, not an array");
        var shape = new long[shapeValue.GetArrayLength()];
        int axis = 0;
        foreach (var dimension in shapeValue.EnumerateArray())
        {
            shape[axis] = NonNegativeInteger(path, name, dimension, $"shape[{axis}]");
            axis++;
        }

        if (offsetsElement is not { } offsetsValue)
            throw new SafetensorsException(path, name, "the header entry has no 'data_offsets'");
        if (offsetsValue.ValueKind != JsonValueKind.Array || offsetsValue.GetArrayLength() != 2)
            throw new SafetensorsException(path, name, $"'data_offsets' must be an array of two integers [begin, end], found {Describe(offsetsValue)}");
        long begin = NonNegativeInteger(path, name, offsetsValue[0], "data_offsets[0]");
        long end = NonNegativeInteger(path, name, offsetsValue[1], "data_offsets[1]");
        if (begin > end)
            throw new SafetensorsException(path, name, $"data_offsets [{begin}, {end}] begin after end");
        if (end > dataLength)
            throw new SafetensorsException(path, name, $"data_offsets [{begin}, {end}] run past the data section, which has {dataLength} bytes");

        long elements = 1;
        long expectedBytes;
        try
        {
            foreach (var dimension in shape) elements = checked(elements * dimension);
            expectedBytes = checked(elements * DTypes.SizeOf(dtype));
        }
        catch (OverflowException e)
        {
            throw new SafetensorsException(path, name, $"shape [{string.Join(", ", shape)}] of {dtype} has more bytes than a 64-bit size can count", e);
        }
        if (end - begin != expectedBytes)
            throw new SafetensorsException(path, name,
                $"data_offsets [{begin}, {end}] hold {end - begin} bytes but shape [{string.Join(", ", shape)}] of {dtype} needs {expectedBytes}");

        return new TensorInfo(name, dtype, shape, begin, end);
    }

    /// <summary>The ranges, taken in order, must start where the previous one ended, beginning at 0 and
    /// ending at the end of the data section: any gap or overlap means a broken or hostile file.</summary>
    private static void CheckCoverage(string path, List<TensorInfo> tensors, long dataLength)
    {
        var byOffset = tensors.ToArray();
        Array.Sort(byOffset, (a, b) =>
            a.DataStart != b.DataStart ? a.DataStart.CompareTo(b.DataStart)
            : a.DataEnd != b.DataEnd ? a.DataEnd.CompareTo(b.DataEnd)
            : string.CompareOrdinal(a.Name, b.Name));
        long expectedStart = 0;
        TensorInfo? previous = null;
        foreach (var tensor in byOffset)
        {
            if (tensor.DataStart < expectedStart)
                throw new SafetensorsException(path, tensor.Name,
                    $"data_offsets [{tensor.DataStart}, {tensor.DataEnd}] overlap tensor '{previous!.Name}' at [{previous.DataStart}, {previous.DataEnd}]");
            if (tensor.DataStart > expectedStart)
                throw new SafetensorsException(path, tensor.Name, previous is null
                    ? $"data_offsets [{tensor.DataStart}, {tensor.DataEnd}] leave a gap of {tensor.DataStart} unused bytes at the start of the data section"
                    : $"data_offsets [{tensor.DataStart}, {tensor.DataEnd}] leave a gap of {tensor.DataStart - expectedStart} unused bytes after tensor '{previous.Name}' at [{previous.DataStart}, {previous.DataEnd}]");
            expectedStart = tensor.DataEnd;
            previous = tensor;
        }
        if (expectedStart != dataLength)
            throw new SafetensorsException(path, previous?.Name, previous is null
                ? $"the header names no tensor data but {dataLength} bytes follow it"
                : $"{dataLength - expectedStart} trailing bytes follow the last tensor's data (the data section has {dataLength} bytes, tensors cover {expectedStart})");
    }

    private static long NonNegativeInteger(string path, string tensor, JsonElement value, string field)
    {
        if (value.ValueKind != JsonValueKind.Number)
            throw new SafetensorsException(path, tensor, $"{field} is a JSON {Kind(value)}, not an integer");
        if (!value.TryGetInt64(out long result))
            throw new SafetensorsException(path, tensor, $"{field} = {Truncate(value.GetRawText())} is not an integer that fits in 64 bits");
        if (result < 0)
            throw new SafetensorsException(path, tensor, $"{field} = {result} is negative");
        return result;
    }

    private static string Kind(JsonElement value) => value.ValueKind switch
    {
        JsonValueKind.Object => "object",
        JsonValueKind.Array => "array",
        JsonValueKind.String => "string",
        JsonValueKind.Number => "number",
        JsonValueKind.True or JsonValueKind.False => "boolean",
        JsonValueKind.Null => "null",
        _ => "value",
    };

    private static string Describe(JsonElement value) =>
        value.ValueKind == JsonValueKind.Array ? $"an array of {value.GetArrayLength()}" : $"a JSON {Kind(value)}";

    private static string Truncate(string text) => text.Length <= 40 ? text : text[..40] + "…";
}
