using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>The fused residual + RMSNorm kernels, both shapes, against the double reference (the add in double, then
/// <see cref="RmsNormReference"/>), out of place and in place (residual written over x). Its backward is RmsNorm's,
/// accumulating (RmsNormTests), checked by finite differences through <see cref="RmsNormReference"/>.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class ResidualRmsNormTests(KernelShape shape) : KernelTestBase(shape)
{
    // The float sum differs from the double one by half an ulp; the norm then sums C squares in float: 1e-6 + 1e-5·|ref|.
    const double Atol = 1e-6, Rtol = 1e-5;

    [TestCase(5, 37, false)]
    [TestCase(3, 8, false)]
    [TestCase(4, 50, true)]
    public void ForwardMatchesAddThenRmsNorm(int n, int c, bool inPlace)
    {
        var random = new Random(n * 100 + c);
        var x = RandomValues(random, n * c);
        var delta = RandomValues(random, n * c);
        var weight = RandomValues(random, c);
        var sum = x.Zip(delta, (a, b) => a + b).ToArray();
        var expectedOut = new double[n * c];
        var expectedRstd = new double[n];
        RmsNormReference.Forward(expectedOut, sum, weight, expectedRstd, n, c, 1e-5);

        using var xBuffer = Upload(x);
        using var deltaBuffer = Upload(delta);
        using var weightBuffer = Upload(weight);
        using var residual = inPlace ? null : Poisoned(n * c);
        using var output = Poisoned(n * c);
        using var rstd = Poisoned(n);
        var residualView = residual?.View ?? xBuffer.View;
        Kernels.ResidualRmsNorm.Forward(residualView, output.View, rstd.View, xBuffer.View, deltaBuffer.View, weightBuffer.View, n, c, 1e-5f);
        string name = $"{Shape} {n}x{c}{(inPlace ? " in place" : "")}";
        TensorAssert.Close($"ResidualRmsNorm residual {name}", Download(residual ?? xBuffer), sum, Atol, Rtol);
        TensorAssert.Close($"ResidualRmsNorm out {name}", Download(output), expectedOut, Atol, Rtol);
        TensorAssert.Close($"ResidualRmsNorm rstd {name}", Download(rstd), expectedRstd, Atol, Rtol);
    }

    [Test]
    public void WrongWeightLengthNamesTheTensor()
    {
        using var rows = Poisoned(6);
        using var rstd = Poisoned(2);
        using var weight = Poisoned(4);
        var error = Assert.Throws<KernelShapeException>(() =>
            Kernels.ResidualRmsNorm.Forward(rows.View, rows.View, rstd.View, rows.View, rows.View, weight.View, 2, 3, 1e-5f));
        Assert.That(error!.Message, Does.Contain("w has 4").And.Contain("C = 3"));
    }
}
