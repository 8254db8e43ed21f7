namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision LayerNorm, same argument order as the launcher.</summary>
public static class LayerNormReference
{
    /// <summary>out (N, C) = (x−μ)·rstd·w + b; mean, rstd (N).</summary>
    public static void Forward(double[] output, double[] input, double[] weight, double[]? bias, double[] mean, double[] rstd, int n, int c, double eps)
    {
        for (int row = 0; row < n; row++)
        {
            double mu = 0;
            for (int i = 0; i < c; i++) mu += input[row * c + i];
            mu /= c;
            double variance = 0;
            for (int i = 0; i < c; i++) variance += (input[row * c + i] - mu) * (input[row * c + i] - mu);
            variance /= c;
            mean[row] = mu;
            rstd[row] = 1 / Math.Sqrt(variance + eps);
            for (int i = 0; i < c; i++)
                output[row * c + i] = (input[row * c + i] - mu) * rstd[row] * weight[i] + (bias?[i] ?? 0);
        }
    }

    /// <summary>dX (N, C) via the full Jacobian of x̂: ∂x̂_i/∂x_j = r·(δij − 1/C − x̂_i·x̂_j/C).</summary>
    public static void Backward(double[] dX, double[] dOut, double[] input, double[] weight, double[] mean, double[] rstd, int n, int c)
    {
        for (int row = 0; row < n; row++)
        {
            double r = rstd[row];
            for (int j = 0; j < c; j++)
            {
                double xhatJ = (input[row * c + j] - mean[row]) * r;
                double sum = 0;
                for (int i = 0; i < c; i++)
                {
                    double xhatI = (input[row * c + i] - mean[row]) * r;
                    double jacobian = r * ((i == j ? 1 : 0) - 1.0 / c - xhatI * xhatJ / c);
                    sum += dOut[row * c + i] * weight[i] * jacobian;
                }
                dX[row * c + j] = sum;
            }
        }
    }
}
