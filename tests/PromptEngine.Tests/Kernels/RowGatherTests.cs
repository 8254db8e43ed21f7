using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class RowGatherTests(KernelShape shape) : KernelTestBase(shape)
{
    // A gather copies floats and its backward adds one float to another: exact but for the one rounding of that add.
    const double Atol = 1e-7, Rtol = 1e-7;

    [TestCase(11, 7, 5)]
    [TestCase(1, 3, 1)]
    [TestCase(40, 33, 9)]
    public void GatherAndItsGradientMatchTheReference(int n, int width, int s)
    {
        var random = new Random(n * 31 + s);
        var input = RandomValues(random, n * width);
        var dOut = RandomValues(random, s * width);
        var dInStart = RandomValues(random, n * width); // the backward adds into what is there
        var rows = Enumerable.Range(0, n).OrderBy(_ => random.Next()).Take(s).ToArray(); // distinct, unordered

        var expected = new double[s * width];
        RowGatherReference.Forward(expected, input, rows, width);
        var expectedDIn = (double[])dInStart.Clone();
        RowGatherReference.Backward(expectedDIn, dOut, rows, width);

        using var inputBuffer = Upload(input);
        using var rowsBuffer = Upload(rows);
        using var output = Poisoned(s * width);
        using var dOutBuffer = Upload(dOut);
        using var dIn = Upload(dInStart);
        Kernels.RowGather.Forward(output.View, inputBuffer.View, rowsBuffer.View, n, s, width);
        Kernels.RowGather.Backward(dIn.View, dOutBuffer.View, rowsBuffer.View, n, s, width);
        TensorAssert.Close($"RowGather.Forward {Shape}", Download(output), expected, Atol, Rtol);
        TensorAssert.Close($"RowGather.Backward {Shape}", Download(dIn), expectedDIn, Atol, Rtol);
    }

    [Test]
    public void ReferenceGradientMatchesFiniteDifferences()
    {
        const int n = 6, width = 4;
        int[] rows = [4, 1, 5];
        var random = new Random(5);
        var input = RandomValues(random, n * width);
        var probe = RandomValues(random, rows.Length * width);
        double[] Forward(double[] x)
        {
            var y = new double[rows.Length * width];
            RowGatherReference.Forward(y, x, rows, width);
            return y;
        }
        var numeric = FiniteDifference.Gradient(Forward, input, probe);
        var analytic = new double[n * width];
        RowGatherReference.Backward(analytic, probe, rows, width);
        for (var i = 0; i < analytic.Length; i++)
            Assert.That(analytic[i], Is.EqualTo(numeric[i]).Within(1e-8), $"element {i}");
    }

    [Test]
    public void MismatchedLengthsAreRefusedNamingTheTensor()
    {
        using var input = Poisoned(12);
        using var rows = Upload(new[] { 0, 2 });
        using var output = Poisoned(5);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.RowGather.Forward(output.View, input.View, rows.View, 3, 2, 4));
        Assert.That(error!.Message, Does.Contain("RowGather.Forward").And.Contain("out"));
    }
}
