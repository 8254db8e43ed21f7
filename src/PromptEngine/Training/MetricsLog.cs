using System.Globalization;
using System.Text.Json;

namespace PromptEngine.Training;

/// <summary>Format of the metrics file.</summary>
public enum MetricsFormat
{
    /// <summary>Comma-separated, one header line, one row per step.</summary>
    Csv,
    /// <summary>One JSON object per line and step.</summary>
    Jsonl,
}

/// <summary>One row of the metrics file: a training step, with the evaluation when one ran at that step.</summary>
public sealed record MetricsRow(int Step, double Loss, double GradNorm, double LearningRate, double TokensPerSecond, double ElapsedSeconds,
    double? EvalLoss = null, double? EvalMetric = null);

/// <summary>Appends metrics rows to a CSV or JSONL file, flushed per row so a crash loses nothing. On a
/// resumed run the rows after the checkpoint's step are dropped first, so the file reads as one run.</summary>
public sealed class MetricsLog : IDisposable
{
    const string Header = "step,loss,grad_norm,learning_rate,tokens_per_s,elapsed_s,eval_loss,eval_metric";
    readonly StreamWriter writer;
    readonly MetricsFormat format;

    /// <summary>The file.</summary>
    public string Path { get; }

    /// <summary>Opens (or, with <paramref name="resumeAfterStep"/>, trims and reopens) the metrics file.</summary>
    public MetricsLog(string path, MetricsFormat format, int? resumeAfterStep = null)
    {
        Path = path;
        this.format = format;
        var kept = new List<string>();
        if (resumeAfterStep is { } last && File.Exists(path))
            kept = File.ReadAllLines(path).Where(line => line.Length > 0 && line != Header && StepOf(line) is { } s && s <= last).ToList();
        var temp = path + ".tmp";
        using (var rewrite = new StreamWriter(temp, false))
        {
            if (format == MetricsFormat.Csv) rewrite.WriteLine(Header);
            foreach (var line in kept) rewrite.WriteLine(line);
        }
        File.Move(temp, path, overwrite: true);
        writer = new StreamWriter(path, append: true) { AutoFlush = true };
    }

    int? StepOf(string line)
    {
        if (format == MetricsFormat.Csv)
            return int.TryParse(line.Split(',')[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out var s) ? s : null;
        try
        {
            using var doc = JsonDocument.Parse(line);
            return doc.RootElement.TryGetProperty("step", out var step) && step.TryGetInt32(out var v) ? v : null;
        }
        catch (JsonException) { return null; }
    }

    /// <summary>Appends a row.</summary>
    public void Write(MetricsRow row)
    {
        string F(double? v) => v?.ToString("R", CultureInfo.InvariantCulture) ?? "";
        if (format == MetricsFormat.Csv)
            writer.WriteLine(string.Join(',', row.Step.ToString(CultureInfo.InvariantCulture), F(row.Loss), F(row.GradNorm), F(row.LearningRate),
                F(row.TokensPerSecond), F(row.ElapsedSeconds), F(row.EvalLoss), F(row.EvalMetric)));
        else
            writer.WriteLine(JsonSerializer.Serialize(new
            {
                step = row.Step, loss = row.Loss, grad_norm = row.GradNorm, learning_rate = row.LearningRate,
                tokens_per_s = row.TokensPerSecond, elapsed_s = row.ElapsedSeconds, eval_loss = row.EvalLoss, eval_metric = row.EvalMetric,
            }));
    }

    /// <inheritdoc/>
    public void Dispose() => writer.Dispose();
}
