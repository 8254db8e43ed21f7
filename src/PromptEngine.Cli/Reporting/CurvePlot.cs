using ScottPlot;

namespace PromptEngine.Cli.Reporting;

/// <summary>Training curves as a PNG: the training loss per step (faint) with its moving average (bold: a batch of 8 makes
/// the raw loss too noisy to read a trend from), and the evaluation metric at each evaluation on a second axis.</summary>
internal static class CurvePlot
{
    public static void Save(string path, IReadOnlyList<(int Step, double Loss)> loss, IReadOnlyList<(int Step, double Metric)> metric, string metricName, string title)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("optimizer step");
        if (loss.Count > 0)
        {
            var steps = loss.Select(p => (double)p.Step).ToArray();
            var raw = plot.Add.Scatter(steps, loss.Select(p => p.Loss).ToArray());
            raw.LegendText = "training loss";
            raw.MarkerSize = 0;
            raw.LineWidth = 1;
            raw.Color = Colors.Blue.WithAlpha(0.25);
            int window = Math.Max(1, loss.Count / 20);
            var smoothed = plot.Add.Scatter(steps, MovingAverage(loss.Select(p => p.Loss).ToArray(), window));
            smoothed.LegendText = $"training loss, mean of the last {window} steps";
            smoothed.MarkerSize = 0;
            smoothed.LineWidth = 2.5f;
            smoothed.Color = Colors.Blue;
            plot.Axes.Left.Label.Text = "loss (nats)";
        }
        if (metric.Count > 0)
        {
            var points = plot.Add.Scatter(metric.Select(p => (double)p.Step).ToArray(), metric.Select(p => p.Metric).ToArray());
            points.LegendText = $"validation {metricName}";
            points.Color = Colors.OrangeRed;
            points.MarkerSize = 8;
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

    /// <summary>Mean of each value and the up to <paramref name="window"/> − 1 before it.</summary>
    static double[] MovingAverage(double[] values, int window)
    {
        var result = new double[values.Length];
        double sum = 0;
        for (var i = 0; i < values.Length; i++)
        {
            sum += values[i];
            if (i >= window) sum -= values[i - window];
            result[i] = sum / Math.Min(i + 1, window);
        }
        return result;
    }
}
