namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision causal, masked, grouped-query attention, written with explicit
/// probability matrices (no log-sum-exp trick in the backward), same argument order as the launcher.</summary>
public static class AttentionReference
{
    /// <summary>Softmax probabilities P (T, T) of one (batch, head); all-zero rows where every allowed key is masked.</summary>
    static double[,] Probabilities(double[] q, double[] k, int[] mask, int batch, int head, int t, int h, int kv, int headSize)
    {
        int kvHead = head / (h / kv);
        double scale = 1 / Math.Sqrt(headSize);
        var p = new double[t, t];
        for (int i = 0; i < t; i++)
        {
            var scores = new double[t];
            double max = double.NegativeInfinity;
            for (int j = 0; j <= i; j++)
            {
                if (mask[batch * t + j] == 0) continue;
                double dot = 0;
                for (int d = 0; d < headSize; d++)
                    dot += q[((batch * t + i) * h + head) * headSize + d] * k[((batch * t + j) * kv + kvHead) * headSize + d];
                scores[j] = dot * scale;
                max = Math.Max(max, scores[j]);
            }
            if (double.IsNegativeInfinity(max)) continue;
            double sum = 0;
            for (int j = 0; j <= i; j++)
                if (mask[batch * t + j] != 0) sum += Math.Exp(scores[j] - max);
            for (int j = 0; j <= i; j++)
                if (mask[batch * t + j] != 0) p[i, j] = Math.Exp(scores[j] - max) / sum;
        }
        return p;
    }

    /// <summary>out (B, T, H, hs) = P·V per (batch, head); lse (B, H, T) = log Σ exp(scores), +∞ for fully masked rows.</summary>
    public static void Forward(double[] output, double[] lse, double[] q, double[] k, double[] v, int[] mask, int b, int t, int h, int kv, int headSize)
    {
        int kvHead(int head) => head / (h / kv);
        double scale = 1 / Math.Sqrt(headSize);
        for (int batch = 0; batch < b; batch++)
            for (int head = 0; head < h; head++)
            {
                var p = Probabilities(q, k, mask, batch, head, t, h, kv, headSize);
                for (int i = 0; i < t; i++)
                {
                    double sum = 0;
                    for (int j = 0; j <= i; j++)
                    {
                        if (mask[batch * t + j] == 0) continue;
                        double dot = 0;
                        for (int d = 0; d < headSize; d++)
                            dot += q[((batch * t + i) * h + head) * headSize + d] * k[((batch * t + j) * kv + kvHead(head)) * headSize + d];
                        sum += Math.Exp(dot * scale);
                    }
                    lse[(batch * h + head) * t + i] = sum > 0 ? Math.Log(sum) : double.PositiveInfinity;
                    for (int d = 0; d < headSize; d++)
                    {
                        double acc = 0;
                        for (int j = 0; j < t; j++)
                            acc += p[i, j] * v[((batch * t + j) * kv + kvHead(head)) * headSize + d];
                        output[((batch * t + i) * h + head) * headSize + d] = acc;
                    }
                }
            }
    }

    /// <summary>dQ, dK, dV through dS = P∘(dP − rowsum(P∘dP)), dP = dOut·Vᵀ; dK, dV accumulate over the heads sharing a kv head.</summary>
    public static void Backward(double[] dQ, double[] dK, double[] dV, double[] dOut, double[] q, double[] k, double[] v, int[] mask,
        int b, int t, int h, int kv, int headSize)
    {
        double scale = 1 / Math.Sqrt(headSize);
        Array.Clear(dQ);
        Array.Clear(dK);
        Array.Clear(dV);
        for (int batch = 0; batch < b; batch++)
            for (int head = 0; head < h; head++)
            {
                int kvHead = head / (h / kv);
                var p = Probabilities(q, k, mask, batch, head, t, h, kv, headSize);
                int Q(int i, int d) => ((batch * t + i) * h + head) * headSize + d;
                int K(int j, int d) => ((batch * t + j) * kv + kvHead) * headSize + d;
                for (int i = 0; i < t; i++)
                {
                    var dP = new double[t];
                    double rowSum = 0;
                    for (int j = 0; j < t; j++)
                    {
                        for (int d = 0; d < headSize; d++) dP[j] += dOut[Q(i, d)] * v[K(j, d)];
                        rowSum += p[i, j] * dP[j];
                    }
                    for (int j = 0; j < t; j++)
                    {
                        double dS = p[i, j] * (dP[j] - rowSum);
                        for (int d = 0; d < headSize; d++)
                        {
                            dQ[Q(i, d)] += scale * dS * k[K(j, d)];
                            dK[K(j, d)] += scale * dS * q[Q(i, d)];
                            dV[K(j, d)] += p[i, j] * dOut[Q(i, d)];
                        }
                    }
                }
            }
    }
}
