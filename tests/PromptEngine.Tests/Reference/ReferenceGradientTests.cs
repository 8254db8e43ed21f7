using PromptEngine.Tests.Kernels;

namespace PromptEngine.Tests.Reference;

/// <summary>
/// Checks each reference backward against central finite differences of L = Σ forward(x)·probe in double,
/// so the kernels' backwards are compared to gradients that are right independently of their algebra.
/// Step 1e-6 in double: truncation ~h²·f‴ ≈ 1e-12, rounding ~ε₆₄/h ≈ 1e-10 per term; 1e-7 tolerance.
/// </summary>
public sealed class ReferenceGradientTests
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
    public void Linear()
    {
        const int n = 3, k = 5, m = 4;
        var x = Random(1, n * k);
        var w = Random(2, m * k);
        var b = Random(3, m);
        var probe = Random(4, n * m);
        var numeric = FiniteDifference.Gradient(xs => { var y = new double[n * m]; LinearReference.Forward(y, xs, w, b, n, k, m); return y; }, x, probe);
        var analytic = new double[n * k];
        LinearReference.Backward(analytic, probe, w, n, k, m);
        TensorAssert.Close("Linear reference dX vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void RmsNorm()
    {
        const int n = 3, c = 7;
        const double eps = 1e-5;
        var x = Random(5, n * c);
        var w = Random(6, c);
        var probe = Random(7, n * c);
        var numeric = FiniteDifference.Gradient(xs => { var y = new double[n * c]; RmsNormReference.Forward(y, xs, w, new double[n], n, c, eps); return y; }, x, probe);
        var rstd = new double[n];
        RmsNormReference.Forward(new double[n * c], x, w, rstd, n, c, eps);
        var analytic = new double[n * c];
        RmsNormReference.Backward(analytic, probe, x, w, rstd, n, c);
        TensorAssert.Close("RmsNorm reference dX vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void LayerNorm()
    {
        const int n = 3, c = 7;
        const double eps = 1e-5;
        var x = Random(8, n * c);
        var w = Random(9, c);
        var b = Random(10, c);
        var probe = Random(11, n * c);
        var numeric = FiniteDifference.Gradient(xs => { var y = new double[n * c]; LayerNormReference.Forward(y, xs, w, b, new double[n], new double[n], n, c, eps); return y; }, x, probe);
        var mean = new double[n];
        var rstd = new double[n];
        LayerNormReference.Forward(new double[n * c], x, w, b, mean, rstd, n, c, eps);
        var analytic = new double[n * c];
        LayerNormReference.Backward(analytic, probe, x, w, mean, rstd, n, c);
        TensorAssert.Close("LayerNorm reference dX vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void EmbeddingPrompt()
    {
        const int rows = 6, c = 3, vocab = 4, promptTableRows = 3;
        int[] map = [-1, 2, -3, -1, 0, -2];
        var table = Random(12, vocab * c);
        var prompt = Random(13, promptTableRows * c);
        var probe = Random(14, rows * c);
        var numeric = FiniteDifference.Gradient(ps => { var y = new double[rows * c]; EmbeddingReference.Forward(y, map, table, ps, rows, c, vocab, promptTableRows); return y; }, prompt, probe);
        var analytic = new double[promptTableRows * c];
        EmbeddingReference.Backward(analytic, probe, map, rows, c, promptTableRows);
        TensorAssert.Close("Embedding reference dPrompt vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void SwiGlu()
    {
        const int n = 2, h = 5;
        var gate = Random(15, n * h, 3);
        var up = Random(16, n * h);
        var probe = Random(17, n * h);
        var numericGate = FiniteDifference.Gradient(g => { var y = new double[n * h]; SwiGluReference.Forward(y, g, up, n, h); return y; }, gate, probe);
        var numericUp = FiniteDifference.Gradient(u => { var y = new double[n * h]; SwiGluReference.Forward(y, gate, u, n, h); return y; }, up, probe);
        var dGate = new double[n * h];
        var dUp = new double[n * h];
        SwiGluReference.Backward(dGate, dUp, probe, gate, up, n, h);
        TensorAssert.Close("SwiGlu reference dGate vs finite differences", dGate, numericGate, Atol, Rtol);
        TensorAssert.Close("SwiGlu reference dUp vs finite differences", dUp, numericUp, Atol, Rtol);
    }

    [Test]
    public void Gelu()
    {
        const int count = 11;
        var x = Random(18, count, 3);
        var probe = Random(19, count);
        var numeric = FiniteDifference.Gradient(xs => { var y = new double[count]; GeluReference.Forward(y, xs, count); return y; }, x, probe);
        var analytic = new double[count];
        GeluReference.Backward(analytic, probe, x, count);
        TensorAssert.Close("Gelu reference dX vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void Rope()
    {
        const int b = 1, t = 3, h = 2, hs = 6;
        int[] positions = [0, 4, 17];
        var x = Random(20, b * t * h * hs);
        var probe = Random(21, x.Length);
        var numeric = FiniteDifference.Gradient(xs => { var y = new double[xs.Length]; RopeReference.Forward(y, xs, positions, b, t, h, hs, 10000); return y; }, x, probe);
        var analytic = new double[x.Length];
        RopeReference.Backward(analytic, probe, positions, b, t, h, hs, 10000);
        TensorAssert.Close("Rope reference dX vs finite differences", analytic, numeric, Atol, Rtol);
    }

    [Test]
    public void AttentionPrefix()
    {
        // Left padding in row 0 (its first query sees only the prefix), grouped-query heads.
        const int b = 2, t = 3, h = 2, kv = 1, hs = 3, prefix = 2;
        int[] mask = [0, 1, 1, 1, 1, 1];
        var q = Random(22, b * t * h * hs);
        var k = Random(23, b * t * kv * hs);
        var v = Random(24, b * t * kv * hs);
        var prefixK = Random(25, prefix * kv * hs);
        var prefixV = Random(26, prefix * kv * hs);
        var probe = Random(27, q.Length);
        double[] Output(double[] qs, double[] ks, double[] vs, double[] pk, double[] pv)
        {
            var y = new double[qs.Length];
            AttentionPrefixReference.Forward(y, new double[b * h * t], qs, ks, vs, mask, pk, pv, b, t, h, kv, hs, prefix);
            return y;
        }
        var (dQ, dK, dV, dPrefixK, dPrefixV) = (new double[q.Length], new double[k.Length], new double[v.Length], new double[prefixK.Length], new double[prefixV.Length]);
        AttentionPrefixReference.Backward(dQ, dK, dV, dPrefixK, dPrefixV, probe, q, k, v, mask, prefixK, prefixV, b, t, h, kv, hs, prefix);
        TensorAssert.Close("AttentionPrefix reference dQ vs finite differences", dQ, FiniteDifference.Gradient(x => Output(x, k, v, prefixK, prefixV), q, probe), Atol, Rtol);
        TensorAssert.Close("AttentionPrefix reference dK vs finite differences", dK, FiniteDifference.Gradient(x => Output(q, x, v, prefixK, prefixV), k, probe), Atol, Rtol);
        TensorAssert.Close("AttentionPrefix reference dV vs finite differences", dV, FiniteDifference.Gradient(x => Output(q, k, x, prefixK, prefixV), v, probe), Atol, Rtol);
        TensorAssert.Close("AttentionPrefix reference dPrefixK vs finite differences", dPrefixK,
            FiniteDifference.Gradient(x => Output(q, k, v, x, prefixV), prefixK, probe), Atol, Rtol);
        TensorAssert.Close("AttentionPrefix reference dPrefixV vs finite differences", dPrefixV,
            FiniteDifference.Gradient(x => Output(q, k, v, prefixK, x), prefixV, probe), Atol, Rtol);
    }
}
