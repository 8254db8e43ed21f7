using ScottPlot;

namespace PromptEngine.Cli.Reporting;

/// <summary>Training curves as a PNG: the training loss per step, and the evaluation metric at each
/// evaluation on a second axis.</summary>
internal static class CurvePlot
{
    public static void Save(string path, IReadOnlyList<(int Step, double Loss)> loss, IReadOnlyList<(int Step, double Metric)> metric, string metricName, string title)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("optimizer step");
        if (loss.Count > 0)
        {
            var line = plot.Add.Scatter(loss.Select(p => (double)p.Step).ToArray(), loss.Select(p => p.Loss).ToArray());
            line.LegendText = "training loss";
            line.MarkerSize = 0;
            plot.Axes.Left.Label.Text = "loss (nats)";
        }
        if (metric.Count > 0)
        {
            var points = plot.Add.Scatter(metric.Select(p => (double)p.Step).ToArray(), metric.Select(p => p.Metric).ToArray());
            points.LegendText = $"eval {metricName}";
            points.Axes.YAxis = plot.Axes.Right;
            plot.Axes.Right.Label.Text = metricName;
        }
        plot.ShowLegend();
        var temp = path + ".tmp.png";
        try
        {
            plot.SavePng(temp, 900, 500);
            File.Move(temp, path, overwrite: true);
        }
        finally
        {
            // A failed write (a full disk, a folder in the way) leaves the previous curves, not a half-written temp file.
            if (File.Exists(temp)) File.Delete(temp);
        }
    }
}
