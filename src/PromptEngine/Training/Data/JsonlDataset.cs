using System.Text;
using System.Text.Json;
using PromptEngine.Data;

namespace PromptEngine.Training.Data;

/// <summary>What a dataset's rows teach: a label out of a fixed set, or free text.</summary>
public enum DatasetKind
{
    /// <summary>A text and its label (e.g. IMDB's "positive"/"negative"); scored through a verbalizer.</summary>
    Classification,
    /// <summary>An input and the output to generate; every output token is scored.</summary>
    Generation,
}

/// <summary>Which JSON fields of a line hold the text and the answer.</summary>
/// <param name="Kind">Classification (text → label) or generation (input → output).</param>
/// <param name="TextField">The field holding the text (classification) or the input (generation).</param>
/// <param name="AnswerField">The field holding the label (classification) or the output (generation).</param>
public sealed record JsonlFieldNames(DatasetKind Kind, string TextField, string AnswerField)
{
    /// <summary>Classification rows <c>{"text": ..., "label": ...}</c>, field names configurable.</summary>
    public static JsonlFieldNames Classification(string text = "text", string label = "label") => new(DatasetKind.Classification, text, label);

    /// <summary>Generation rows <c>{"input": ..., "output": ...}</c>, field names configurable.</summary>
    public static JsonlFieldNames Generation(string input = "input", string output = "output") => new(DatasetKind.Generation, input, output);
}

/// <summary>What to do with a row whose text is empty or only whitespace.</summary>
public enum EmptyTextPolicy
{
    /// <summary>The row is malformed: an error naming the line, or, when malformed lines are skipped,
    /// skipped and counted both as malformed and as empty (the default: an empty review is almost
    /// always a broken export, and training on the template alone teaches the label prior).</summary>
    Malformed,
    /// <summary>Skip the row and count it in <see cref="LoadReport.EmptyTexts"/>, whether or not
    /// malformed lines are skipped.</summary>
    Skip,
    /// <summary>Keep the row (the template's literals still surround the empty text); counted in
    /// <see cref="LoadReport.EmptyTexts"/>.</summary>
    Keep,
}

/// <summary>One row of a dataset.</summary>
/// <param name="Text">The text (classification) or input (generation).</param>
/// <param name="Answer">The label (classification) or output (generation).</param>
/// <param name="Line">1-based line of the file it came from.</param>
public sealed record Example(string Text, string Answer, long Line);

/// <summary>What loading a file found.</summary>
/// <param name="Lines">Lines read, blank ones included.</param>
/// <param name="Loaded">Rows kept.</param>
/// <param name="BlankLines">Empty or whitespace-only lines, ignored.</param>
/// <param name="Malformed">Lines skipped as malformed (0 unless malformed lines are skipped).</param>
/// <param name="EmptyTexts">Rows whose text was empty or whitespace (skipped or kept, per the policy).</param>
/// <param name="MalformedSamples">The first few malformed lines' messages (file, line, what is wrong), for a log.</param>
public sealed record LoadReport(long Lines, int Loaded, long BlankLines, long Malformed, long EmptyTexts, IReadOnlyList<string> MalformedSamples);

/// <summary>
/// A JSONL dataset: one JSON object per line, read whole into memory. Classification rows carry a
/// text and a label (a string, or an integer such as SST-2's 0/1, kept as its decimal text);
/// generation rows an input and an output (strings). Other fields are ignored; blank lines are
/// skipped. Every malformed line (invalid JSON, not an object, a field missing or of the wrong type,
/// an empty label or output) is a <see cref="DataFormatException"/> naming the file and the 1-based
/// line, or, with <c>skipMalformed</c>, is skipped and counted in the <see cref="LoadReport"/>.
/// </summary>
/// <remarks>Bytes that are not UTF-8 stop the load whatever <c>skipMalformed</c> says: the line they
/// are on is named, but a file in the wrong encoding is not a few bad rows to skip.</remarks>
public sealed class JsonlDataset
{
    /// <summary>How many malformed lines' messages a <see cref="LoadReport"/> keeps.</summary>
    public const int MalformedSampleLimit = 10;

    /// <summary>The file, full path.</summary>
    public string Path { get; }

    /// <summary>The field names (and kind) it was read with.</summary>
    public JsonlFieldNames Fields { get; }

    /// <summary>Rows in file order.</summary>
    public IReadOnlyList<Example> Examples { get; }

    /// <summary>Counts of what was read, skipped and kept.</summary>
    public LoadReport Report { get; }

    /// <summary>Classification only: the distinct labels in order of first appearance; empty for generation.</summary>
    public IReadOnlyList<string> Labels { get; }

    JsonlDataset(string path, JsonlFieldNames fields, List<Example> examples, LoadReport report)
    {
        Path = path;
        Fields = fields;
        Examples = examples;
        Report = report;
        Labels = fields.Kind == DatasetKind.Classification ? examples.Select(e => e.Answer).Distinct().ToArray() : [];
    }

    /// <summary>Reads <paramref name="path"/>.</summary>
    /// <param name="path">A UTF-8 JSONL file (a BOM is allowed).</param>
    /// <param name="fields">Kind and field names.</param>
    /// <param name="skipMalformed">Skip and count malformed lines instead of failing on the first.</param>
    /// <param name="emptyText">What to do with empty texts (see <see cref="EmptyTextPolicy"/>).</param>
    /// <exception cref="DataFormatException">A malformed line (without <paramref name="skipMalformed"/>),
    /// bytes that are not UTF-8, or an unreadable file.</exception>
    public static JsonlDataset Load(string path, JsonlFieldNames fields, bool skipMalformed = false, EmptyTextPolicy emptyText = EmptyTextPolicy.Malformed)
    {
        ArgumentNullException.ThrowIfNull(fields);
        if (string.IsNullOrEmpty(fields.TextField) || string.IsNullOrEmpty(fields.AnswerField) || fields.TextField == fields.AnswerField)
            throw new ArgumentException($"field names must be two different non-empty names (text \"{fields.TextField}\", answer \"{fields.AnswerField}\")", nameof(fields));
        var fullPath = System.IO.Path.GetFullPath(path);
        var examples = new List<Example>();
        var samples = new List<string>();
        long lineNumber = 0, blank = 0, malformed = 0, empty = 0;
        byte[] bytes;
        try { bytes = File.ReadAllBytes(fullPath); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new DataFormatException(fullPath, null, $"cannot read: {e.Message}", e);
        }
        // Lines are cut on '\n' before decoding, so a byte that is not UTF-8 is blamed on its own line.
        var strict = new UTF8Encoding(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
        var start = bytes.AsSpan().StartsWith(Encoding.UTF8.Preamble) ? Encoding.UTF8.Preamble.Length : 0;
        while (start < bytes.Length)
        {
            var length = bytes.AsSpan(start).IndexOf((byte)'\n');
            if (length < 0) length = bytes.Length - start;
            var lineBytes = bytes.AsSpan(start, length);
            start += length + 1;
            lineNumber++;
            string line;
            try { line = strict.GetString(lineBytes); }
            catch (DecoderFallbackException e)
            {
                throw new DataFormatException(fullPath, null, $"line {lineNumber}: not UTF-8 ({e.Message})", e);
            }
            if (string.IsNullOrWhiteSpace(line))
            {
                blank++;
                continue;
            }
            var (example, problem, isEmptyText) = ParseLine(line, lineNumber, fields, emptyText);
            if (isEmptyText) empty++;
            if (example is not null)
            {
                examples.Add(example);
                continue;
            }
            if (problem is null) continue; // skipped by the empty-text policy
            var message = $"line {lineNumber}: {problem}";
            if (!skipMalformed) throw new DataFormatException(fullPath, null, message);
            malformed++;
            if (samples.Count < MalformedSampleLimit) samples.Add($"{fullPath}: {message}");
        }
        return new JsonlDataset(fullPath, fields, examples,
            new LoadReport(lineNumber, examples.Count, blank, malformed, empty, samples));
    }

    /// <summary>One non-blank line: the example, or what is wrong with it (null for a row the
    /// empty-text policy skips), and whether its text was empty.</summary>
    static (Example? Example, string? Problem, bool EmptyText) ParseLine(string line, long lineNumber, JsonlFieldNames fields, EmptyTextPolicy emptyText)
    {
        JsonDocument document;
        try { document = JsonDocument.Parse(line); }
        catch (JsonException e) { return (null, $"invalid JSON: {e.Message}", false); }
        using (document)
        {
            var root = document.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                return (null, $"expected a JSON object with \"{fields.TextField}\" and \"{fields.AnswerField}\", found {Describe(root.ValueKind)}", false);
            if (!root.TryGetProperty(fields.TextField, out var textElement))
                return (null, $"missing \"{fields.TextField}\"", false);
            if (textElement.ValueKind != JsonValueKind.String)
                return (null, $"\"{fields.TextField}\" must be a string, found {Describe(textElement.ValueKind)}", false);
            if (!root.TryGetProperty(fields.AnswerField, out var answerElement))
                return (null, $"missing \"{fields.AnswerField}\"", false);
            string answer;
            if (answerElement.ValueKind == JsonValueKind.String) answer = answerElement.GetString()!;
            else if (fields.Kind == DatasetKind.Classification && answerElement.ValueKind == JsonValueKind.Number && answerElement.TryGetInt64(out var integer))
                answer = integer.ToString(System.Globalization.CultureInfo.InvariantCulture);
            else
                return (null, $"\"{fields.AnswerField}\" must be a string{(fields.Kind == DatasetKind.Classification ? " or an integer" : "")}, found {Describe(answerElement, 40)}", false);
            if (string.IsNullOrWhiteSpace(answer))
                return (null, $"\"{fields.AnswerField}\" is empty", false);

            var text = textElement.GetString()!;
            if (string.IsNullOrWhiteSpace(text))
            {
                return emptyText switch
                {
                    EmptyTextPolicy.Keep => (new Example(text, answer, lineNumber), null, true),
                    EmptyTextPolicy.Skip => (null, null, true),
                    _ => (null, $"\"{fields.TextField}\" is empty", true),
                };
            }
            return (new Example(text, answer, lineNumber), null, false);
        }
    }

    static string Describe(JsonElement value, int maxChars)
    {
        var raw = value.GetRawText();
        return $"{Describe(value.ValueKind)} {(raw.Length <= maxChars ? raw : raw[..maxChars] + "…")}";
    }

    static string Describe(JsonValueKind kind) => kind switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => kind.ToString(),
    };
}
