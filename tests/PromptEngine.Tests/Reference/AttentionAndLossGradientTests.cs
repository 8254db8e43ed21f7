using PromptEngine.Tests.Kernels;

namespace PromptEngine.Tests.Reference;

/// <summary>
/// Finite-difference checks (central, double) of the attention and loss reference backwards, as
/// <see cref="ReferenceGradientTests"/> does for the other ops: step 1e-6, tolerance 1e-7 + 1e-6·|ref|.
/// </summary>
public sealed class AttentionAndLossGradientTests
{
    const double Atol = 1e-7, Rtol = 1e-6;

    static double[] Random(int seed, int length, double scale = 1)
    {
        var random = new Random(seed);
        var values = new double[length];
        for (int i = 0; i < length; i++)
            values[i] = scale * (0.05 + 0.95 * random.NextDouble()) * (random.Next(2) == 0 ? -1 : 1);
        return values;
    }

    [Test]
    public void Attention()
    {
        const int b = 2, t = 4, h = 4, kv = 2, hs = 3;
        int[] mask = [0, 1, 1, 1, 1, 1, 0, 1]; // a fully masked first query in row 0, a masked key in row 1
        var q = Random(30, b * t * h * hs, 2);
        var k = Random(31, b * t * kv * hs, 2);
        var v = Random(32, b * t * kv * hs);
        var probe = Random(33, q.Length);
        double[] Run(double[] qs, double[] ks, double[] vs)
        {
            var y = new double[q.Length];
            AttentionReference.Forward(y, new double[b * h * t], qs, ks, vs, mask, b, t, h, kv, hs);
            return y;
        }
        var dQ = new double[q.Length];
        var dK = new double[k.Length];
        var dV = new double[v.Length];
        AttentionReference.Backward(dQ, dK, dV, probe, q, k, v, mask, b, t, h, kv, hs);
        TensorAssert.Close("Attention reference dQ vs finite differences", dQ, FiniteDifference.Gradient(x => Run(x, k, v), q, probe), Atol, Rtol);
        TensorAssert.Close("Attention reference dK vs finite differences", dK, FiniteDifference.Gradient(x => Run(q, x, v), k, probe), Atol, Rtol);
        TensorAssert.Close("Attention reference dV vs finite differences", dV, FiniteDifference.Gradient(x => Run(q, k, x), v, probe), Atol, Rtol);
    }

    [TestCase(7, new int[0])]
    [TestCase(9, new[] { 6, 1 })]
    public void CrossEntropy(int v, int[] allowed)
    {
        const int n = 5, c = 4;
        int[] rows = [3, 0, 4];
        int[] targets = [v > 7 ? 1 : 2, -1, v > 7 ? 6 : 5];
        int r = allowed.Length;
        var hidden = Random(40, n * c, 2);
        var weight = Random(41, v * c, 2);
        var numeric = FiniteDifference.Gradient(hs =>
        {
            var mean = new double[1];
            CrossEntropyReference.Forward(new double[rows.Length], mean, hs, rows, targets, weight, allowed, n, c, rows.Length, v, r);
            return mean;
        }, hidden, [1.0]);
        var analytic = new double[n * c];
        CrossEntropyReference.Backward(analytic, hidden, rows, targets, weight, allowed, n, c, rows.Length, v, r);
        TensorAssert.Close($"CrossEntropy reference dHidden vs finite differences (R = {r})", analytic, numeric, Atol, Rtol);
    }
}
