namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision AdamW (PyTorch's torch.optim.AdamW written out), same argument order as the launcher.</summary>
public static class AdamWReference
{
    /// <summary>One step on param, m, v (N) from grad (N) times scale.</summary>
    public static void Step(double[] param, double[] m, double[] v, double[] grad, double scale,
        double learningRate, double beta1, double beta2, double eps, double weightDecay, int t)
    {
        for (int i = 0; i < param.Length; i++)
        {
            double g = grad[i] * scale;
            param[i] -= learningRate * weightDecay * param[i];
            m[i] = beta1 * m[i] + (1 - beta1) * g;
            v[i] = beta2 * v[i] + (1 - beta2) * g * g;
            double mHat = m[i] / (1 - Math.Pow(beta1, t));
            double vHat = v[i] / (1 - Math.Pow(beta2, t));
            param[i] -= learningRate * mHat / (Math.Sqrt(vHat) + eps);
        }
    }
}

/// <summary>Sum of squares and clipping factor in double.</summary>
public static class GradNormReference
{
    /// <summary>Returns (Σ x², min(1, maxNorm / (√Σx² + 1e-6))).</summary>
    public static (double SumSquares, double ClipScale) Forward(double[] input, double maxNorm)
    {
        double sum = input.Sum(x => x * x);
        return (sum, Math.Min(1, maxNorm / (Math.Sqrt(sum) + 1e-6)));
    }
}
