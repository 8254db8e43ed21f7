namespace PromptEngine.Tests.Reference;

/// <summary>Naive double-precision RMSNorm, same argument order as the launcher.</summary>
public static class RmsNormReference
{
    /// <summary>out (N, C) = x·rstd·w; rstd (N) = 1/√(mean(x²)+ε).</summary>
    public static void Forward(double[] output, double[] input, double[] weight, double[] rstd, int n, int c, double eps)
    {
        for (int row = 0; row < n; row++)
        {
            double sumSquares = 0;
            for (int i = 0; i < c; i++)
                sumSquares += input[row * c + i] * input[row * c + i];
            rstd[row] = 1 / Math.Sqrt(sumSquares / c + eps);
            for (int i = 0; i < c; i++)
                output[row * c + i] = input[row * c + i] * rstd[row] * weight[i];
        }
    }

    /// <summary>dX (N, C) by the chain rule through rstd, written out term by term.</summary>
    public static void Backward(double[] dX, double[] dOut, double[] input, double[] weight, double[] rstd, int n, int c)
    {
        for (int row = 0; row < n; row++)
        {
            double r = rstd[row];
            // ∂out_i/∂x_j = w_i·(r·δij − x_i·r³·x_j/C)
            for (int j = 0; j < c; j++)
            {
                double sum = 0;
                for (int i = 0; i < c; i++)
                {
                    double delta = i == j ? r : 0;
                    sum += dOut[row * c + i] * weight[i] * (delta - input[row * c + i] * r * r * r * input[row * c + j] / c);
                }
                dX[row * c + j] = sum;
            }
        }
    }
}
