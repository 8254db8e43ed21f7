using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class LinearTests(KernelShape shape) : KernelTestBase(shape)
{
    // Float accumulation of K products of magnitude < 1: rounding grows at most ~K·ε₃₂·Σ|terms|,
    // in practice ~√K·ε; 1e-6·K absolute (plus 1e-5 relative) leaves headroom without hiding a wrong term.
    static double Atol(int reduction) => 1e-6 * reduction;
    const double Rtol = 1e-5;

    [TestCase(7, 13, 9, true)]
    [TestCase(7, 13, 9, false)]
    [TestCase(1, 5, 3, true)]
    [TestCase(18, 21, 11, true)]
    public void ForwardMatchesReference(int n, int k, int m, bool withBias)
    {
        var random = new Random(n * 1000 + k * 10 + m);
        var x = RandomValues(random, n * k);
        var w = RandomValues(random, m * k);
        var b = withBias ? RandomValues(random, m) : null;
        var expected = new double[n * m];
        LinearReference.Forward(expected, x, w, b, n, k, m);

        using var xBuffer = Upload(x);
        using var wBuffer = Upload(w);
        using var bBuffer = b is null ? null : Upload(b);
        using var yBuffer = Poisoned(n * m);
        Kernels.Linear.Forward(yBuffer.View, xBuffer.View, wBuffer.View, bBuffer?.View ?? default, n, k, m);
        TensorAssert.Close($"Linear.Forward {Shape} {n}x{k}x{m}", Download(yBuffer), expected, Atol(k), Rtol);
    }

    [TestCase(7, 13, 9)]
    [TestCase(1, 5, 3)]
    [TestCase(18, 21, 11)]
    public void BackwardMatchesReference(int n, int k, int m)
    {
        var random = new Random(n * 1000 + k * 10 + m + 1);
        var dY = RandomValues(random, n * m);
        var w = RandomValues(random, m * k);
        var expected = new double[n * k];
        LinearReference.Backward(expected, dY, w, n, k, m);

        using var dYBuffer = Upload(dY);
        using var wBuffer = Upload(w);
        using var dXBuffer = Poisoned(n * k);
        Kernels.Linear.Backward(dXBuffer.View, dYBuffer.View, wBuffer.View, n, k, m);
        TensorAssert.Close($"Linear.Backward {Shape} {n}x{k}x{m}", Download(dXBuffer), expected, Atol(m), Rtol);
    }

    [TestCase(7, 13, 9)]
    [TestCase(18, 21, 11)]
    public void BackwardAccumulatesWhenAsked(int n, int k, int m)
    {
        var random = new Random(n * 1000 + k * 10 + m + 2);
        var dY = RandomValues(random, n * m);
        var w = RandomValues(random, m * k);
        var existing = RandomValues(random, n * k);
        var expected = new double[n * k];
        LinearReference.Backward(expected, dY, w, n, k, m);
        for (var i = 0; i < expected.Length; i++) expected[i] += existing[i];

        using var dYBuffer = Upload(dY);
        using var wBuffer = Upload(w);
        using var dXBuffer = Upload(existing);
        Kernels.Linear.Backward(dXBuffer.View, dYBuffer.View, wBuffer.View, n, k, m, accumulate: true);
        TensorAssert.Close($"Linear.Backward+= {Shape} {n}x{k}x{m}", Download(dXBuffer), expected, Atol(m), Rtol);
    }

    [Test]
    public void WrongShapeNamesTheTensor()
    {
        using var x = Poisoned(6);
        using var w = Poisoned(6);
        using var y = Poisoned(5);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.Linear.Forward(y.View, x.View, w.View, default, 2, 3, 2));
        Assert.That(error!.Message, Does.Contain("Y").And.Contain("N*M = 4"));
    }
}
