namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision attention over Pv shared prefix keys followed by the row's causal, masked token
/// keys (deep prompts as past_key_values), written with explicit probabilities: every query's keys are listed, the
/// softmax taken over the list, and the backward differentiates that list directly.</summary>
public static class AttentionPrefixReference
{
    /// <summary>One query's keys: (is prefix, index into prefix or token rows, probability), over prefix ∪ allowed tokens.</summary>
    static List<(bool Prefix, int Index, double P)> Keys(double[] q, double[] k, double[] prefixK, int[] mask,
        int batch, int i, int head, int t, int h, int kv, int headSize, int prefix)
    {
        int kvHead = head / (h / kv);
        double scale = 1 / Math.Sqrt(headSize);
        long qOffset = ((long)(batch * t + i) * h + head) * headSize;
        double Score(double[] keys, long offset)
        {
            double dot = 0;
            for (int d = 0; d < headSize; d++) dot += q[qOffset + d] * keys[offset + d];
            return dot * scale;
        }
        var scored = new List<(bool, int, double)>();
        for (int j = 0; j < prefix; j++) scored.Add((true, j, Score(prefixK, ((long)j * kv + kvHead) * headSize)));
        for (int j = 0; j <= i; j++)
            if (mask[batch * t + j] != 0) scored.Add((false, batch * t + j, Score(k, ((long)(batch * t + j) * kv + kvHead) * headSize)));
        double max = scored.Max(s => s.Item3);
        double sum = scored.Sum(s => Math.Exp(s.Item3 - max));
        return scored.Select(s => (s.Item1, s.Item2, Math.Exp(s.Item3 - max) / sum)).ToList();
    }

    /// <summary>out (B, T, H, hs); lse (B, H, T) over prefix and token keys (always finite: the prefix is never empty).</summary>
    public static void Forward(double[] output, double[] lse, double[] q, double[] k, double[] v, int[] mask, double[] prefixK, double[] prefixV,
        int b, int t, int h, int kv, int headSize, int prefix)
    {
        double scale = 1 / Math.Sqrt(headSize);
        for (int batch = 0; batch < b; batch++)
            for (int i = 0; i < t; i++)
                for (int head = 0; head < h; head++)
                {
                    int kvHead = head / (h / kv);
                    long qOffset = ((long)(batch * t + i) * h + head) * headSize;
                    var keys = Keys(q, k, prefixK, mask, batch, i, head, t, h, kv, headSize, prefix);
                    for (int d = 0; d < headSize; d++)
                        output[qOffset + d] = keys.Sum(key => key.P * (key.Prefix ? prefixV : v)[((long)key.Index * kv + kvHead) * headSize + d]);
                    // lse = log Σ exp(s): recompute the scores' max-shifted sum from one probability: s_j − log p_j is the same for every j.
                    var first = keys[0];
                    double dot = 0;
                    for (int d = 0; d < headSize; d++) dot += q[qOffset + d] * prefixK[((long)first.Index * kv + kvHead) * headSize + d];
                    lse[((long)batch * h + head) * t + i] = dot * scale - Math.Log(first.P);
                }
    }

    /// <summary>dQ (B, T, H, hs), dK and dV (B, T, KV, hs), dPrefixK and dPrefixV (Pv, KV, hs) of Σ dOut·out, all overwritten.</summary>
    public static void Backward(double[] dQ, double[] dK, double[] dV, double[] dPrefixK, double[] dPrefixV, double[] dOut,
        double[] q, double[] k, double[] v, int[] mask, double[] prefixK, double[] prefixV, int b, int t, int h, int kv, int headSize, int prefix)
    {
        foreach (var array in new[] { dQ, dK, dV, dPrefixK, dPrefixV }) Array.Clear(array);
        double scale = 1 / Math.Sqrt(headSize);
        for (int batch = 0; batch < b; batch++)
            for (int i = 0; i < t; i++)
                for (int head = 0; head < h; head++)
                {
                    int kvHead = head / (h / kv);
                    long qOffset = ((long)(batch * t + i) * h + head) * headSize;
                    var keys = Keys(q, k, prefixK, mask, batch, i, head, t, h, kv, headSize, prefix);
                    // dL/dp_j = dOut·v_j; dL/ds_j = p_j (dL/dp_j − Σ_l p_l dL/dp_l).
                    var dP = keys.Select(key =>
                    {
                        var values = key.Prefix ? prefixV : v;
                        double dot = 0;
                        for (int d = 0; d < headSize; d++) dot += dOut[qOffset + d] * values[((long)key.Index * kv + kvHead) * headSize + d];
                        return dot;
                    }).ToArray();
                    double weighted = keys.Select((key, j) => key.P * dP[j]).Sum();
                    for (int j = 0; j < keys.Count; j++)
                    {
                        var key = keys[j];
                        double dScore = key.P * (dP[j] - weighted) * scale;
                        long kvOffset = ((long)key.Index * kv + kvHead) * headSize;
                        var (keysIn, dKeys, dValues) = key.Prefix ? (prefixK, dPrefixK, dPrefixV) : (k, dK, dV);
                        for (int d = 0; d < headSize; d++)
                        {
                            dQ[qOffset + d] += dScore * keysIn[kvOffset + d];
                            dKeys[kvOffset + d] += dScore * q[qOffset + d];
                            dValues[kvOffset + d] += key.P * dOut[qOffset + d];
                        }
                    }
                }
    }
}
