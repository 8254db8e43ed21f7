using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class PositionEmbeddingTests(KernelShape shape) : KernelTestBase(shape)
{
    // One float add per element of O(1) values: a rounding of the sum at most.
    const double Atol = 1e-6, Rtol = 1e-6;

    [Test]
    public void AddsTheRowOfEachPosition()
    {
        const int n = 11, c = 7, rows = 9;
        var random = new Random(41);
        var x = RandomValues(random, n * c);
        var table = RandomValues(random, rows * c);
        var positions = Enumerable.Range(0, n).Select(r => (r * 5 + 3) % rows).ToArray();
        var expected = (double[])x.Clone();
        PositionEmbeddingReference.Forward(expected, positions, table, n, c);

        using var xBuffer = Upload(x);
        using var tableBuffer = Upload(table);
        using var positionBuffer = Upload(positions);
        Kernels.PositionEmbedding.Forward(xBuffer.View, positionBuffer.View, tableBuffer.View, n, c, rows);
        TensorAssert.Close($"PositionEmbedding {Shape}", Download(xBuffer), expected, Atol, Rtol);
    }

    [Test]
    public void PositionOutsideTheTableGivesNaNNotACrash()
    {
        using var x = Upload(new double[] { 1, 2, 3, 4 });
        using var table = Upload(new double[] { 5, 6 });
        using var positions = Upload(new[] { 0, 3 });
        Kernels.PositionEmbedding.Forward(x.View, positions.View, table.View, 2, 2, 1);
        var result = Download(x);
        Assert.That(result[0], Is.EqualTo(6f));
        Assert.That(float.IsNaN(result[2]), Is.True);
    }
}

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class ScaleTests(KernelShape shape) : KernelTestBase(shape)
{
    [Test]
    public void ScalesEveryElement()
    {
        var random = new Random(43);
        var x = RandomValues(random, 37);
        using var buffer = Upload(x);
        Kernels.Scale.Forward(buffer.View, 0.25f, 37);
        // One float multiply by a power of two: exact.
        TensorAssert.Close($"Scale {Shape}", Download(buffer), x.Select(v => (double)(float)v * 0.25).ToArray(), 0, 0);
    }
}
