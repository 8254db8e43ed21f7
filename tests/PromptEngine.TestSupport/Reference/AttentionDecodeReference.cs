namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision decode attention, same argument order as the launcher: for each (row, head)
/// the scores against the row's first lengths[b] cached keys, an explicit softmax with the max subtracted,
/// then the probability-weighted sum of the cached values.</summary>
public static class AttentionDecodeReference
{
    /// <summary>out (B, H, hs) from q (B, H, hs) and the caches (B, Tmax, KV, hs); zeros for a row of length 0.</summary>
    public static void Forward(double[] output, double[] q, double[] kCache, double[] vCache, int[] lengths,
        int b, int capacity, int h, int kv, int headSize)
    {
        double scale = 1 / Math.Sqrt(headSize);
        for (int batch = 0; batch < b; batch++)
            for (int head = 0; head < h; head++)
            {
                int kvHead = head / (h / kv);
                int length = Math.Clamp(lengths[batch], 0, capacity);
                int Q(int d) => (batch * h + head) * headSize + d;
                int K(int j, int d) => ((batch * capacity + j) * kv + kvHead) * headSize + d;
                var scores = new double[length];
                for (int j = 0; j < length; j++)
                {
                    double dot = 0;
                    for (int d = 0; d < headSize; d++) dot += q[Q(d)] * kCache[K(j, d)];
                    scores[j] = dot * scale;
                }
                double max = length > 0 ? scores.Max() : 0;
                double sum = scores.Sum(s => Math.Exp(s - max));
                for (int d = 0; d < headSize; d++)
                {
                    double acc = 0;
                    for (int j = 0; j < length; j++) acc += Math.Exp(scores[j] - max) / sum * vCache[K(j, d)];
                    output[Q(d)] = acc;
                }
            }
    }

    /// <summary>The caches after writing k, v (B, T, KV, hs) at [b, slots[b] + i]; negative slots and positions past Tmax are skipped.</summary>
    public static void Append(double[] kCache, double[] vCache, double[] k, double[] v, int[] slots, int b, int t, int capacity, int kv, int headSize)
    {
        int width = kv * headSize;
        for (int batch = 0; batch < b; batch++)
        {
            if (slots[batch] < 0) continue;
            for (int i = 0; i < t && slots[batch] + i < capacity; i++)
                for (int e = 0; e < width; e++)
                {
                    kCache[(batch * capacity + slots[batch] + i) * width + e] = k[(batch * t + i) * width + e];
                    vCache[(batch * capacity + slots[batch] + i) * width + e] = v[(batch * t + i) * width + e];
                }
        }
    }
}
