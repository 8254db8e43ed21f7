using System.Formats.Tar;
using System.Text.Json;

namespace PromptEngine.Data;

/// <summary>Counts of one split.</summary>
/// <param name="Count">Examples.</param>
/// <param name="Ham">Examples labelled "ham".</param>
/// <param name="Spam">Examples labelled "spam".</param>
public sealed record SpamSplitCounts(int Count, int Ham, int Spam);

/// <summary>What <see cref="SpamAssassinPreparer.Prepare"/> wrote (also recorded in split.json).</summary>
/// <param name="OutDir">The folder holding train.jsonl, validation.jsonl, test.jsonl and split.json.</param>
/// <param name="Seed">The shuffle seed.</param>
/// <param name="MaxChars">The cap on each row's text, in UTF-16 characters.</param>
/// <param name="Messages">Messages read from the corpus.</param>
/// <param name="DuplicatesDropped">Messages left out because an earlier message gave the same text (or,
/// for texts that occur under both labels, every copy).</param>
/// <param name="Train">Counts of train.jsonl.</param>
/// <param name="Validation">Counts of validation.jsonl.</param>
/// <param name="Test">Counts of test.jsonl.</param>
public sealed record SpamSplitSummary(string OutDir, int Seed, int MaxChars, int Messages, int DuplicatesDropped,
    SpamSplitCounts Train, SpamSplitCounts Validation, SpamSplitCounts Test);

/// <summary>
/// Turns the SpamAssassin public corpus (messages.tar from <see cref="Assets.AssetStore.EnsureSpamAssassin"/>:
/// entries <c>GROUP/NNNNN.MD5.txt</c> holding each message's original bytes) into stratified, shuffled
/// train / validation / test files of <c>{"text": ..., "label": "ham"|"spam"}</c>, the layout of the
/// IMDB split.
/// <para>Label: <c>spam</c> for the groups spam-1 and spam-2, <c>ham</c> for easy-ham-1, easy-ham-2 and
/// hard-ham-1. Text: <see cref="EmailText.Convert"/> ("Subject: …" then the first plain-text body,
/// HTML stripped, whitespace collapsed, cut to <c>maxChars</c>). Messages whose text repeats an earlier
/// one are dropped, so no text is both trained and tested on; a text that occurs as ham and as spam is
/// dropped entirely, having no single right answer. Split: <see cref="StratifiedSplit"/> with the seed,
/// classes in the order ham, spam.</para>
/// </summary>
public static class SpamAssassinPreparer
{
    /// <summary>Label names, in class-index order.</summary>
    public static readonly IReadOnlyList<string> Labels = ["ham", "spam"];

    /// <summary>The row template the spam task uses: the texts already begin with "Subject:", so the
    /// template names the whole as an e-mail and asks the question the label words answer.</summary>
    public const string Template = "{prompt}Email: {text}\nIs this email spam?{answer}";

    /// <summary>The label word of each label in <see cref="Labels"/> order: " no" for ham, " yes" for spam.
    /// The verbalizer scores one token per label, and " spam" is not one token in stories15M's 32,000-piece
    /// vocabulary (it splits into "▁sp" "am", so its scored token would be "▁sp"); " yes" and " no" are
    /// single, frequent tokens the model has seen answer questions in its stories.</summary>
    public static readonly IReadOnlyList<string> LabelWords = [" no", " yes"];

    /// <summary>The default cap on a row's text. stories15M's tokenizer spends about 3.2 characters per
    /// token on these texts (train split: median 138 tokens, 90th percentile 173), so a row fits in 192
    /// positions with a template around it; most rows reach the cap.</summary>
    public const int DefaultMaxChars = 480;

    /// <summary>Reads <paramref name="messagesTar"/>, converts and de-duplicates the messages, and writes
    /// <c>train.jsonl</c>, <c>validation.jsonl</c> (<paramref name="validation"/> rows), <c>test.jsonl</c>
    /// (<paramref name="test"/> rows) and <c>split.json</c> into <paramref name="outDir"/>. Each file is
    /// written under a temp name and renamed; split.json is removed first and written last, so its
    /// presence means the three files beside it belong to it.</summary>
    /// <exception cref="DataFormatException">The file is not a tar, or an entry is not GROUP/NAME.txt of a known group.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The requested sizes do not fit the data, or the cap is not positive.</exception>
    public static SpamSplitSummary Prepare(string messagesTar, string outDir, int seed = 1234, int validation = 1000, int test = 1000, int maxChars = DefaultMaxChars)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxChars);
        var messages = ReadMessages(messagesTar, maxChars);
        var (rows, dropped) = Deduplicate(messages);
        var (trainRows, validationRows, testRows) = StratifiedSplit.Split(rows.Select(r => r.Label).ToArray(), Labels, seed, validation, test);

        var folder = Path.GetFullPath(outDir);
        Directory.CreateDirectory(folder);
        var splitJson = Path.Combine(folder, "split.json");
        File.Delete(splitJson);
        var summary = new SpamSplitSummary(folder, seed, maxChars, messages.Count, dropped,
            WriteSplit(Path.Combine(folder, "train.jsonl"), rows, trainRows),
            WriteSplit(Path.Combine(folder, "validation.jsonl"), rows, validationRows),
            WriteSplit(Path.Combine(folder, "test.jsonl"), rows, testRows));
        SplitFiles.WriteAtomically(splitJson, stream => WriteSummary(stream, summary, Path.GetFileName(messagesTar)));
        return summary;
    }

    /// <summary>One message: where it came from, its class index and its row text.</summary>
    internal readonly record struct Message(string Entry, int Label, string Text);

    /// <summary>Every message of the tar, in entry order, converted.</summary>
    internal static List<Message> ReadMessages(string messagesTar, int maxChars)
    {
        var fullPath = Path.GetFullPath(messagesTar);
        var messages = new List<Message>();
        long row = 0;
        try
        {
            using var file = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            using var reader = new TarReader(file);
            var buffer = new MemoryStream();
            while (reader.GetNextEntry() is { } entry)
            {
                if (entry.EntryType == TarEntryType.Directory) continue;
                if (entry.EntryType is not (TarEntryType.RegularFile or TarEntryType.V7RegularFile))
                    throw new DataFormatException(fullPath, row, $"entry '{entry.Name}' is a {entry.EntryType}, not a message file");
                var label = LabelOf(entry.Name) ?? throw new DataFormatException(fullPath, row,
                    $"entry '{entry.Name}' is not GROUP/NAME.txt with GROUP one of easy-ham-1, easy-ham-2, hard-ham-1, spam-1, spam-2");
                buffer.SetLength(0);
                entry.DataStream?.CopyTo(buffer);
                messages.Add(new Message(entry.Name, label, EmailText.Convert(buffer.GetBuffer().AsSpan(0, (int)buffer.Length), maxChars)));
                row++;
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException)
        {
            throw new DataFormatException(fullPath, row, $"not a valid tar of messages: {e.Message}", e);
        }
        if (messages.Count == 0) throw new DataFormatException(fullPath, null, "holds no messages");
        return messages;
    }

    /// <summary>The class index of an entry named GROUP/NAME.txt, or null for another shape or group.</summary>
    internal static int? LabelOf(string entryName)
    {
        var segments = entryName.Split('/');
        if (segments.Length != 2 || !segments[1].EndsWith(".txt", StringComparison.Ordinal)) return null;
        return segments[0] switch
        {
            "easy-ham-1" or "easy-ham-2" or "hard-ham-1" => 0,
            "spam-1" or "spam-2" => 1,
            _ => null,
        };
    }

    /// <summary>The first message of each text, in order; texts seen under both labels are left out.</summary>
    internal static (List<Message> Kept, int Dropped) Deduplicate(List<Message> messages)
    {
        var labelsByText = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var message in messages)
            labelsByText[message.Text] = labelsByText.TryGetValue(message.Text, out var seen) ? seen | (1 << message.Label) : 1 << message.Label;
        var emitted = new HashSet<string>(StringComparer.Ordinal);
        var kept = messages.Where(m => labelsByText[m.Text] == 1 << m.Label && emitted.Add(m.Text)).ToList();
        return (kept, messages.Count - kept.Count);
    }

    static SpamSplitCounts WriteSplit(string path, List<Message> messages, int[] rows)
    {
        SplitFiles.WriteJsonl(path, rows.Select(row => (messages[row].Text, Labels[messages[row].Label])));
        var spam = rows.Count(r => messages[r].Label == 1);
        return new SpamSplitCounts(rows.Length, rows.Length - spam, spam);
    }

    static void WriteSummary(Stream stream, SpamSplitSummary summary, string source)
    {
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
        json.WriteStartObject();
        json.WriteString("source", source);
        json.WriteNumber("messages", summary.Messages);
        json.WriteNumber("duplicatesDropped", summary.DuplicatesDropped);
        json.WriteNumber("rows", summary.Train.Count + summary.Validation.Count + summary.Test.Count);
        json.WriteNumber("seed", summary.Seed);
        json.WriteNumber("maxChars", summary.MaxChars);
        json.WriteString("text", "\"Subject: \" + subject + \"\\n\" + first text/plain body (else text/html, tags stripped), decoded, whitespace collapsed, capped");
        SplitFiles.WriteSplits(json, [.. new[] { ("train", summary.Train), ("validation", summary.Validation), ("test", summary.Test) }
            .Select(s => (s.Item1, s.Item2.Count, new[] { ("ham", s.Item2.Ham), ("spam", s.Item2.Spam) }))]);
        json.WriteEndObject();
    }
}
