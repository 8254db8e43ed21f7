namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision Linear, same argument order as the kernels' launcher.</summary>
public static class LinearReference
{
    /// <summary>Y = X·Wᵀ + b. y (N, M), x (N, K), w (M, K), bias (M) or null.</summary>
    public static void Forward(double[] y, double[] x, double[] w, double[]? bias, int n, int k, int m)
    {
        for (int row = 0; row < n; row++)
            for (int col = 0; col < m; col++)
            {
                double sum = bias?[col] ?? 0;
                for (int i = 0; i < k; i++)
                    sum += x[row * k + i] * w[col * k + i];
                y[row * m + col] = sum;
            }
    }

    /// <summary>dX = dY·W. dX (N, K), dY (N, M), w (M, K).</summary>
    public static void Backward(double[] dX, double[] dY, double[] w, int n, int k, int m)
    {
        for (int row = 0; row < n; row++)
            for (int i = 0; i < k; i++)
            {
                double sum = 0;
                for (int col = 0; col < m; col++)
                    sum += dY[row * m + col] * w[col * k + i];
                dX[row * k + i] = sum;
            }
    }

    /// <summary>dW = dYᵀ·X and db = Σₙ dY. dW (M, K), dBias (M) or null, dY (N, M), x (N, K).</summary>
    public static void BackwardWeights(double[] dW, double[]? dBias, double[] dY, double[] x, int n, int k, int m)
    {
        for (int col = 0; col < m; col++)
        {
            for (int i = 0; i < k; i++)
            {
                double sum = 0;
                for (int row = 0; row < n; row++)
                    sum += dY[row * m + col] * x[row * k + i];
                dW[col * k + i] = sum;
            }
            if (dBias is not null)
            {
                double sum = 0;
                for (int row = 0; row < n; row++)
                    sum += dY[row * m + col];
                dBias[col] = sum;
            }
        }
    }
}
