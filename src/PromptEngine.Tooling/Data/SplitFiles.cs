using System.Text.Encodings.Web;
using System.Text.Json;

namespace PromptEngine.Data;

/// <summary>Writes the files of a prepared split: one <c>{"text", "label"}</c> JSON object per line,
/// each file under a temp name renamed into place.</summary>
internal static class SplitFiles
{
    // Relaxed escaping keeps non-ASCII text readable; quotes, backslashes and control characters are
    // still escaped, so every line is one valid JSON object.
    static readonly JsonWriterOptions LineOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes <paramref name="rows"/> of (text, label) to <paramref name="path"/> as JSONL.</summary>
    public static void WriteJsonl(string path, IEnumerable<(string Text, string Label)> rows)
    {
        WriteAtomically(path, stream =>
        {
            using var json = new Utf8JsonWriter(stream, LineOptions);
            foreach (var (text, label) in rows)
            {
                json.WriteStartObject();
                json.WriteString("text", text);
                json.WriteString("label", label);
                json.WriteEndObject();
                json.Flush();
                stream.WriteByte((byte)'\n');
                json.Reset();
            }
        });
    }

    /// <summary>Writes the summary's "shuffle" line and its "splits" object: per split its file, row count and rows per
    /// class, in the order given.</summary>
    public static void WriteSplits(Utf8JsonWriter json, params (string Name, int Count, (string Label, int Rows)[] Classes)[] splits)
    {
        json.WriteString("shuffle", "SplitMix64 Fisher-Yates, stratified by label");
        json.WriteStartObject("splits");
        foreach (var (name, count, classes) in splits)
        {
            json.WriteStartObject(name);
            json.WriteString("file", name + ".jsonl");
            json.WriteNumber("count", count);
            foreach (var (label, rows) in classes) json.WriteNumber(label, rows);
            json.WriteEndObject();
        }
        json.WriteEndObject();
    }

    /// <summary>Runs <paramref name="write"/> on a temp file beside <paramref name="path"/>, then renames it
    /// over <paramref name="path"/>; the temp file is removed if writing fails.</summary>
    public static void WriteAtomically(string path, Action<Stream> write)
    {
        var temp = Path.Combine(Path.GetDirectoryName(path)!, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var stream = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            File.Delete(temp);
            throw;
        }
    }
}
