namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision linear classifier head at selected rows: logits = W·h + b, softmax cross-entropy
/// over the R classes (targets are class indices, −1 ignored), and its gradients with respect to W, b and the hidden rows.</summary>
public static class ClassifierHeadReference
{
    /// <summary>logits (S, R) = hidden[rows[s]] · W[j] + b[j].</summary>
    public static double[] Logits(double[] hidden, int[] rows, double[] weight, double[] bias, int c, int r)
    {
        int s = rows.Length;
        var logits = new double[s * r];
        for (int i = 0; i < s; i++)
            for (int j = 0; j < r; j++)
            {
                double dot = bias[j];
                for (int ch = 0; ch < c; ch++) dot += hidden[rows[i] * c + ch] * weight[j * c + ch];
                logits[i * r + j] = dot;
            }
        return logits;
    }

    /// <summary>Per-row losses (0 where ignored) and their mean over the rows whose target is not −1.</summary>
    public static (double[] Losses, double Mean) Loss(double[] hidden, int[] rows, int[] targets, double[] weight, double[] bias, int c, int r)
    {
        var logits = Logits(hidden, rows, weight, bias, c, r);
        var losses = new double[rows.Length];
        double sum = 0;
        int count = 0;
        for (int i = 0; i < rows.Length; i++)
        {
            if (targets[i] < 0) continue;
            double max = double.NegativeInfinity, total = 0;
            for (int j = 0; j < r; j++) max = Math.Max(max, logits[i * r + j]);
            for (int j = 0; j < r; j++) total += Math.Exp(logits[i * r + j] - max);
            losses[i] = max + Math.Log(total) - logits[i * r + targets[i]];
            sum += losses[i];
            count++;
        }
        return (losses, count > 0 ? sum / count : 0);
    }

    /// <summary>d(mean loss)/dLogits (S, R) = (softmax − one-hot) / count, 0 on ignored rows.</summary>
    public static double[] DLogits(double[] hidden, int[] rows, int[] targets, double[] weight, double[] bias, int c, int r)
    {
        var logits = Logits(hidden, rows, weight, bias, c, r);
        int count = targets.Count(t => t >= 0);
        var d = new double[logits.Length];
        for (int i = 0; i < rows.Length; i++)
        {
            if (targets[i] < 0) continue;
            double max = double.NegativeInfinity, total = 0;
            for (int j = 0; j < r; j++) max = Math.Max(max, logits[i * r + j]);
            for (int j = 0; j < r; j++) total += Math.Exp(logits[i * r + j] - max);
            for (int j = 0; j < r; j++) d[i * r + j] = (Math.Exp(logits[i * r + j] - max) / total - (j == targets[i] ? 1 : 0)) / count;
        }
        return d;
    }

    /// <summary>d(mean loss)/dW (R, C), /db (R) and /dHidden (N, C), the last zero on rows not selected.</summary>
    public static (double[] DWeight, double[] DBias, double[] DHidden) Gradients(double[] hidden, int[] rows, int[] targets, double[] weight, double[] bias,
        int n, int c, int r)
    {
        var d = DLogits(hidden, rows, targets, weight, bias, c, r);
        var dWeight = new double[r * c];
        var dBias = new double[r];
        var dHidden = new double[n * c];
        for (int i = 0; i < rows.Length; i++)
            for (int j = 0; j < r; j++)
            {
                dBias[j] += d[i * r + j];
                for (int ch = 0; ch < c; ch++)
                {
                    dWeight[j * c + ch] += d[i * r + j] * hidden[rows[i] * c + ch];
                    dHidden[rows[i] * c + ch] += d[i * r + j] * weight[j * c + ch];
                }
            }
        return (dWeight, dBias, dHidden);
    }
}
