namespace PromptEngine.Tests.Reference;

/// <summary>The hand-written backward pass of <see cref="ModelReference"/>: from dLogits back through
/// every block to the input embeddings, then gathered into the prompt rows. No weight gradients.
/// Each step mirrors one forward line, in reverse order; gradients are named d….</summary>
public sealed partial class ModelReference
{
    /// <summary>dPrompt (P, C) from dLogits (N, V); with a deep prompt, also ADDS dPrefix (L, 2, Pv, KV·hs) into <paramref name="dPrefix"/>.</summary>
    double[] Backward(Trace trace, double[] dLogits, int promptTableRows, double[]? dPrefix)
    {
        int N = trace.N;
        var dFinal = LinearBackward(dLogits, N, V, head, C);
        var dx = NormBackward(dFinal, trace.ResidualOut, N, finalNorm, trace.FinalMean, trace.FinalRstd);

        for (int l = blocks.Length - 1; l >= 0; l--)
        {
            var w = blocks[l];
            var t = trace.Blocks[l];

            // x2 = x1 + down(hidden): the residual passes dx straight through to x1.
            var dHidden = LinearBackward(dx, N, C, w.MlpDown, I);
            var dUp = new double[N * I];
            double[]? dGate = null;
            if (IsGpt2)
            {
                for (int j = 0; j < dUp.Length; j++) dUp[j] = dHidden[j] * GeluTanhDerivative(t.Up[j]);
            }
            else
            {
                dGate = new double[N * I];
                for (int j = 0; j < dUp.Length; j++)
                {
                    dUp[j] = dHidden[j] * Silu(t.Gate![j]);
                    dGate[j] = dHidden[j] * t.Up[j] * SiluDerivative(t.Gate[j]);
                }
            }
            var dNormed2 = LinearBackward(dUp, N, I, w.MlpUp, C);
            if (dGate is not null) AddInPlace(dNormed2, LinearBackward(dGate, N, I, w.MlpGate!, C));
            var dx1 = Add(dx, NormBackward(dNormed2, t.X1, N, w.MlpNorm, t.Mean2, t.Rstd2));

            // x1 = x + o(attention(q, k, v)).
            var dAttended = LinearBackward(dx1, N, C, w.AttentionOutput, H * HS);
            int Pv = trace.DeepVirtualTokens, part = Pv * KV * HS;
            var (dq, dk, dv, dPrefixK, dPrefixV) = AttentionBackward(dAttended, t, trace.KeyMask, trace.B, trace.T,
                PrefixPart(trace.Prefix, Pv, l, 0), PrefixPart(trace.Prefix, Pv, l, 1), Pv);
            if (dPrefix is not null && Pv > 0)
                for (int e = 0; e < part; e++)
                {
                    dPrefix[2 * l * part + e] += dPrefixK[e];
                    dPrefix[(2 * l + 1) * part + e] += dPrefixV[e];
                }
            if (!IsGpt2)
            {
                // RoPE is a rotation, so its transpose is the rotation by the opposite angle.
                Rope(dq, N, H, trace.PositionIds, inverse: true);
                Rope(dk, N, KV, trace.PositionIds, inverse: true);
            }
            var dNormed1 = LinearBackward(dq, N, H * HS, w.Query, C);
            AddInPlace(dNormed1, LinearBackward(dk, N, KV * HS, w.Key, C));
            AddInPlace(dNormed1, LinearBackward(dv, N, KV * HS, w.Value, C));
            dx = Add(dx1, NormBackward(dNormed1, t.X, N, w.AttentionNorm, t.Mean1, t.Rstd1));
        }

        // The embedding: only prompt rows receive gradient; a row used at several positions sums them.
        // GPT-2's position row is added, so it passes the gradient unchanged.
        var dPrompt = new double[promptTableRows * C];
        for (int i = 0; i < N; i++)
        {
            int s = trace.SourceMap[i];
            if (s >= 0) continue;
            int p = -1 - s;
            for (int c = 0; c < C; c++) dPrompt[p * C + c] += dx[i * C + c];
        }
        return dPrompt;
    }

    /// <summary>dx (N, in) = dy (N, out) · W with W (out, in).</summary>
    static double[] LinearBackward(double[] dy, int N, int outDim, double[] weight, int inDim)
    {
        var dx = new double[N * inDim];
        Parallel.For(0, N, n =>
        {
            for (int j = 0; j < outDim; j++)
            {
                double g = dy[n * outDim + j];
                if (g == 0) continue;
                for (int i = 0; i < inDim; i++) dx[n * inDim + i] += g * weight[j * inDim + i];
            }
        });
        return dx;
    }

    /// <summary>Backward of <see cref="Norm"/> with x̂ = (x − μ)·r (μ = 0 for RMSNorm):
    /// RMSNorm dx = r·(g − x̂·mean(g·x̂)); LayerNorm dx = r·(g − mean(g) − x̂·mean(g·x̂)), where g = dy·w.</summary>
    double[] NormBackward(double[] dy, double[] x, int N, double[] weight, double[] mean, double[] rstd)
    {
        var dx = new double[N * C];
        for (int n = 0; n < N; n++)
        {
            double r = rstd[n], meanG = 0, meanGXhat = 0;
            for (int c = 0; c < C; c++)
            {
                double g = dy[n * C + c] * weight[c];
                meanG += g;
                meanGXhat += g * (x[n * C + c] - mean[n]) * r;
            }
            meanG /= C;
            meanGXhat /= C;
            if (!IsGpt2) meanG = 0;   // RMSNorm does not subtract the mean, so no mean term
            for (int c = 0; c < C; c++)
            {
                double g = dy[n * C + c] * weight[c];
                double xHat = (x[n * C + c] - mean[n]) * r;
                dx[n * C + c] = r * (g - meanG - xHat * meanGXhat);
            }
        }
        return dx;
    }

    /// <summary>Backward of <see cref="Attention"/> with the saved probabilities P (B, H, T, Pv + T):
    /// dV[s] += P[t,s]·dO[t]; dP[t,s] = dO[t]·V[s]; dScore = P·(dP − Σ P·dP);
    /// dQ[t] += dScore·K[s]·scale; dK[s] += dScore·Q[t]·scale, over the prefix keys and the allowed token keys.
    /// Key/value gradients of a GQA group add up; the prefixes' gradients also add up over the batch rows.</summary>
    (double[] DQ, double[] DK, double[] DV, double[] DPrefixK, double[] DPrefixV) AttentionBackward(double[] dAttended, BlockTrace t, int[] keyMask, int B, int T,
        double[]? prefixK, double[]? prefixV, int deepVirtualTokens)
    {
        int N = B * T, group = H / KV, width = deepVirtualTokens + T;
        double scale = 1 / Math.Sqrt(HS);
        var dq = new double[N * H * HS];
        var dk = new double[N * KV * HS];
        var dv = new double[N * KV * HS];
        var dPrefixK = new double[deepVirtualTokens * KV * HS];
        var dPrefixV = new double[deepVirtualTokens * KV * HS];
        var dP = new double[width];
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
            {
                int kvHead = h / group;
                for (int qt = 0; qt < T; qt++)
                {
                    int qAt = (b * T + qt) * H * HS + h * HS;
                    int pAt = ((b * H + h) * T + qt) * width;
                    // Allowed keys: (column, keys, values, dKeys, dValues, offset).
                    var keys = new List<(int Column, double[] K, double[] V, double[] DK, double[] DV, int At)>();
                    for (int j = 0; j < deepVirtualTokens; j++) keys.Add((j, prefixK!, prefixV!, dPrefixK, dPrefixV, j * KV * HS + kvHead * HS));
                    for (int s = 0; s <= qt; s++)
                        if (keyMask[b * T + s] != 0) keys.Add((deepVirtualTokens + s, t.K, t.V, dk, dv, (b * T + s) * KV * HS + kvHead * HS));
                    double weighted = 0;
                    foreach (var key in keys)
                    {
                        dP[key.Column] = 0;
                        double p = t.Probabilities[pAt + key.Column];
                        for (int d = 0; d < HS; d++)
                        {
                            dP[key.Column] += dAttended[qAt + d] * key.V[key.At + d];
                            key.DV[key.At + d] += p * dAttended[qAt + d];
                        }
                        weighted += p * dP[key.Column];
                    }
                    foreach (var key in keys)
                    {
                        double dScore = t.Probabilities[pAt + key.Column] * (dP[key.Column] - weighted) * scale;
                        for (int d = 0; d < HS; d++)
                        {
                            dq[qAt + d] += dScore * key.K[key.At + d];
                            key.DK[key.At + d] += dScore * t.Q[qAt + d];
                        }
                    }
                }
            }
        return (dq, dk, dv, dPrefixK, dPrefixV);
    }

    static void AddInPlace(double[] target, double[] addend)
    {
        for (int i = 0; i < target.Length; i++) target[i] += addend[i];
    }
}
