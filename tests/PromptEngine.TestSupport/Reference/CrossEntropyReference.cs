namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision LM head + softmax + cross-entropy at selected rows, same argument order as the
/// launcher (no dLogits scratch: the backward recomputes the softmax from the hidden rows).</summary>
public static class CrossEntropyReference
{
    static int Width(int v, int r) => r > 0 ? r : v;

    static int VocabularyRow(int[] allowed, int r, int column) => r > 0 ? allowed[column] : column;

    /// <summary>logits (S, width) = hidden[rows[s]] · W[allowed[j] or j].</summary>
    public static void Logits(double[] logits, double[] hidden, int[] rows, double[] weight, int[] allowed, int n, int c, int s, int v, int r)
    {
        int width = Width(v, r);
        for (int i = 0; i < s; i++)
            for (int j = 0; j < width; j++)
            {
                double dot = 0;
                for (int ch = 0; ch < c; ch++)
                    dot += hidden[rows[i] * c + ch] * weight[VocabularyRow(allowed, r, j) * c + ch];
                logits[i * width + j] = dot;
            }
    }

    /// <summary>Softmax (S, width) of the logits, each row computed as exp(l)/Σexp(l) after subtracting its max.</summary>
    static double[] Softmax(double[] logits, int s, int width)
    {
        var p = new double[s * width];
        for (int i = 0; i < s; i++)
        {
            double max = double.NegativeInfinity;
            for (int j = 0; j < width; j++) max = Math.Max(max, logits[i * width + j]);
            double sum = 0;
            for (int j = 0; j < width; j++) sum += Math.Exp(logits[i * width + j] - max);
            for (int j = 0; j < width; j++) p[i * width + j] = Math.Exp(logits[i * width + j] - max) / sum;
        }
        return p;
    }

    /// <summary>losses (S) = −log softmax[target] (0 for target −1); meanLoss[0] = mean over non-ignored rows.</summary>
    public static void Forward(double[] losses, double[] meanLoss, double[] hidden, int[] rows, int[] targets, double[] weight, int[] allowed,
        int n, int c, int s, int v, int r)
    {
        int width = Width(v, r);
        var logits = new double[s * width];
        Logits(logits, hidden, rows, weight, allowed, n, c, s, v, r);
        var p = Softmax(logits, s, width);
        double sum = 0;
        int count = 0;
        for (int i = 0; i < s; i++)
        {
            if (targets[i] < 0) { losses[i] = 0; continue; }
            int column = r > 0 ? Array.IndexOf(allowed, targets[i]) : targets[i];
            losses[i] = -Math.Log(p[i * width + column]);
            sum += losses[i];
            count++;
        }
        meanLoss[0] = count > 0 ? sum / count : 0;
    }

    /// <summary>dHidden (N, C) of the mean loss: Σ_j (p_j − 1[j = target]) · W[u_j] / count on selected rows, 0 elsewhere.</summary>
    public static void Backward(double[] dHidden, double[] hidden, int[] rows, int[] targets, double[] weight, int[] allowed,
        int n, int c, int s, int v, int r)
    {
        int width = Width(v, r);
        var logits = new double[s * width];
        Logits(logits, hidden, rows, weight, allowed, n, c, s, v, r);
        var p = Softmax(logits, s, width);
        int count = targets.Count(target => target >= 0);
        Array.Clear(dHidden);
        for (int i = 0; i < s; i++)
        {
            if (targets[i] < 0) continue;
            for (int j = 0; j < width; j++)
            {
                int vocabularyRow = VocabularyRow(allowed, r, j);
                double g = (p[i * width + j] - (vocabularyRow == targets[i] ? 1 : 0)) / count;
                for (int ch = 0; ch < c; ch++)
                    dHidden[rows[i] * c + ch] += g * weight[vocabularyRow * c + ch];
            }
        }
    }
}
