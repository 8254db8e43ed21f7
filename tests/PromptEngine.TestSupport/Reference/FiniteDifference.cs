namespace PromptEngine.Tests.Reference;

/// <summary>Central finite differences in double, to check reference backwards independently of their algebra.</summary>
public static class FiniteDifference
{
    /// <summary>Gradient of L(x) = Σ forward(x)·probe with respect to x, by central differences.</summary>
    public static double[] Gradient(Func<double[], double[]> forward, double[] x, double[] probe, double step = 1e-6)
    {
        var gradient = new double[x.Length];
        var shifted = (double[])x.Clone();
        for (int i = 0; i < x.Length; i++)
        {
            shifted[i] = x[i] + step;
            double plus = Dot(forward(shifted), probe);
            shifted[i] = x[i] - step;
            double minus = Dot(forward(shifted), probe);
            shifted[i] = x[i];
            gradient[i] = (plus - minus) / (2 * step);
        }
        return gradient;
    }

    static double Dot(double[] a, double[] b)
    {
        double sum = 0;
        for (int i = 0; i < a.Length; i++) sum += a[i] * b[i];
        return sum;
    }
}
