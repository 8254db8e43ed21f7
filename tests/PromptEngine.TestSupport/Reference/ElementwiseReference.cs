namespace PromptEngine.Tests.Reference;

/// <summary>Naive SwiGLU in double, same argument order as the launcher.</summary>
public static class SwiGluReference
{
    static double Sigmoid(double x) => 1 / (1 + Math.Exp(-x));

    /// <summary>out = g·σ(g)·up over (N·H).</summary>
    public static void Forward(double[] output, double[] gate, double[] up, int n, int h)
    {
        for (int i = 0; i < n * h; i++)
            output[i] = gate[i] * Sigmoid(gate[i]) * up[i];
    }

    /// <summary>dGate, dUp from dOut over (N·H).</summary>
    public static void Backward(double[] dGate, double[] dUp, double[] dOut, double[] gate, double[] up, int n, int h)
    {
        for (int i = 0; i < n * h; i++)
        {
            double s = Sigmoid(gate[i]);
            dGate[i] = dOut[i] * up[i] * (s + gate[i] * s * (1 - s));
            dUp[i] = dOut[i] * gate[i] * s;
        }
    }
}

/// <summary>Naive GELU (tanh) in double, same argument order as the launcher.</summary>
public static class GeluReference
{
    static readonly double K = Math.Sqrt(2 / Math.PI);

    /// <summary>out = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).</summary>
    public static void Forward(double[] output, double[] input, long count)
    {
        for (long i = 0; i < count; i++)
        {
            double x = input[i];
            output[i] = 0.5 * x * (1 + Math.Tanh(K * (x + 0.044715 * x * x * x)));
        }
    }

    /// <summary>dX = dOut·gelu′(x).</summary>
    public static void Backward(double[] dX, double[] dOut, double[] input, long count)
    {
        for (long i = 0; i < count; i++)
        {
            double x = input[i];
            double t = Math.Tanh(K * (x + 0.044715 * x * x * x));
            dX[i] = dOut[i] * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x));
        }
    }
}

/// <summary>Residual add in double.</summary>
public static class ResidualReference
{
    /// <summary>out = a + b.</summary>
    public static void Forward(double[] output, double[] a, double[] b, long count)
    {
        for (long i = 0; i < count; i++)
            output[i] = a[i] + b[i];
    }
}

/// <summary>Naive RoPE (HF rotate_half) in double, written as the HF formula: out = x·cos + rotate_half(x)·sin.</summary>
public static class RopeReference
{
    /// <summary>x (B, T, H, hs) rotated by position ids (B, T).</summary>
    public static void Forward(double[] output, double[] input, int[] positions, int b, int t, int h, int headSize, double theta)
    {
        int half = headSize / 2;
        for (int row = 0; row < b * t; row++)
            for (int head = 0; head < h; head++)
            {
                int offset = (row * h + head) * headSize;
                for (int i = 0; i < headSize; i++)
                {
                    // emb = cat(freqs, freqs): channel i uses frequency index i mod hs/2.
                    double angle = positions[row] * Math.Pow(theta, -2.0 * (i % half) / headSize);
                    double rotated = i < half ? -input[offset + i + half] : input[offset + i - half];
                    output[offset + i] = input[offset + i] * Math.Cos(angle) + rotated * Math.Sin(angle);
                }
            }
    }

    /// <summary>dX = Rᵀ·dOut, computed as the explicit transpose of the forward's linear map.</summary>
    public static void Backward(double[] dX, double[] dOut, int[] positions, int b, int t, int h, int headSize, double theta)
    {
        int half = headSize / 2;
        int size = b * t * h * headSize;
        Array.Clear(dX, 0, size);
        for (int row = 0; row < b * t; row++)
            for (int head = 0; head < h; head++)
            {
                int offset = (row * h + head) * headSize;
                for (int i = 0; i < headSize; i++)
                {
                    double angle = positions[row] * Math.Pow(theta, -2.0 * (i % half) / headSize);
                    // out_i = cos·x_i + sin·(i < half ? −x_{i+half} : x_{i−half}); scatter its transpose.
                    dX[offset + i] += Math.Cos(angle) * dOut[offset + i];
                    if (i < half) dX[offset + i + half] -= Math.Sin(angle) * dOut[offset + i];
                    else dX[offset + i - half] += Math.Sin(angle) * dOut[offset + i];
                }
            }
    }
}

/// <summary>The fused q/k/v projection's split in double: each row [q (H·hs) | k (KV·hs) | v (KV·hs)] becomes q and k,
/// rotated by <see cref="RopeReference"/> when asked, and v; the backward concatenates the rotated-back dq, dk and dv.</summary>
public static class QkvSplitReference
{
    /// <summary>q (N, H·hs), k and v (N, KV·hs) from qkv (N, (H + 2·KV)·hs), N = B·T.</summary>
    public static void Forward(double[] q, double[] k, double[] v, double[] qkv, int[] positions, int b, int t, int heads, int kvHeads, int headSize,
        double theta, bool rotate)
    {
        var (qPart, kPart, vPart) = Split(qkv, b * t, heads * headSize, kvHeads * headSize);
        if (rotate)
        {
            RopeReference.Forward(q, qPart, positions, b, t, heads, headSize, theta);
            RopeReference.Forward(k, kPart, positions, b, t, kvHeads, headSize, theta);
        }
        else
        {
            qPart.CopyTo(q, 0);
            kPart.CopyTo(k, 0);
        }
        vPart.CopyTo(v, 0);
    }

    /// <summary>dQkv (N, (H + 2·KV)·hs) from dq, dk, dv.</summary>
    public static void Backward(double[] dQkv, double[] dq, double[] dk, double[] dv, int[] positions, int b, int t, int heads, int kvHeads, int headSize,
        double theta, bool rotate)
    {
        int n = b * t, qWidth = heads * headSize, kvWidth = kvHeads * headSize, width = qWidth + 2 * kvWidth;
        var (dqBack, dkBack) = (new double[dq.Length], new double[dk.Length]);
        if (rotate)
        {
            RopeReference.Backward(dqBack, dq, positions, b, t, heads, headSize, theta);
            RopeReference.Backward(dkBack, dk, positions, b, t, kvHeads, headSize, theta);
        }
        else (dqBack, dkBack) = (dq, dk);
        for (int row = 0; row < n; row++)
        {
            Array.Copy(dqBack, row * qWidth, dQkv, row * width, qWidth);
            Array.Copy(dkBack, row * kvWidth, dQkv, row * width + qWidth, kvWidth);
            Array.Copy(dv, row * kvWidth, dQkv, row * width + qWidth + kvWidth, kvWidth);
        }
    }

    static (double[] Q, double[] K, double[] V) Split(double[] qkv, int n, int qWidth, int kvWidth)
    {
        int width = qWidth + 2 * kvWidth;
        var (q, k, v) = (new double[n * qWidth], new double[n * kvWidth], new double[n * kvWidth]);
        for (int row = 0; row < n; row++)
        {
            Array.Copy(qkv, row * width, q, row * qWidth, qWidth);
            Array.Copy(qkv, row * width + qWidth, k, row * kvWidth, kvWidth);
            Array.Copy(qkv, row * width + qWidth + kvWidth, v, row * kvWidth, kvWidth);
        }
        return (q, k, v);
    }
}

/// <summary>y = tanh(x); backward from the saved output, dX = dY·(1 − y²).</summary>
public static class TanhReference
{
    /// <summary>output (N) = tanh(input).</summary>
    public static void Forward(double[] output, double[] input, long count)
    {
        for (long i = 0; i < count; i++)
            output[i] = Math.Tanh(input[i]);
    }

    /// <summary>dX (N) = dOut·(1 − output²), output the forward's tanh.</summary>
    public static void Backward(double[] dX, double[] dOut, double[] output, long count)
    {
        for (long i = 0; i < count; i++)
            dX[i] = dOut[i] * (1 - output[i] * output[i]);
    }
}
