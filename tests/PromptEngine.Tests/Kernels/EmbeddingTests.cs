using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class EmbeddingTests(KernelShape shape) : KernelTestBase(shape)
{
    // The forward is a copy: exact. The backward sums at most B·T float terms per element: 1e-6.
    const double BackwardAtol = 1e-6, Rtol = 1e-6;
    const int B = 3, T = 6, C = 7, V = 11, P = 6;

    // Row 0: prefix of prompt rows 0..2; row 1: interleaved/suffix use of rows 0 and 5 (row 0 used twice
    // across the batch); row 2: a different prompt from the bank (rows 3, 4). Prompt row 5 is used once,
    // and no row is unused except through the bank choice, so accumulation and bank routing both show.
    static readonly int[] SourceMap =
    [
        -1, -2, -3, 4, 9, 0,
        7, -1, 3, 10, -6, -6,
        -4, -5, 2, 2, 8, 1,
    ];

    [Test]
    public void ForwardMatchesReference()
    {
        var random = new Random(11);
        var table = RandomValues(random, V * C);
        var prompt = RandomValues(random, P * C);
        var expected = new double[B * T * C];
        EmbeddingReference.Forward(expected, SourceMap, table, prompt, B * T, C, V, P);

        using var mapBuffer = Upload(SourceMap);
        using var tableBuffer = Upload(table);
        using var promptBuffer = Upload(prompt);
        using var outBuffer = Poisoned(B * T * C);
        Kernels.Embedding.Forward(outBuffer.View, mapBuffer.View, tableBuffer.View, promptBuffer.View, B * T, C, V, P);
        TensorAssert.Close($"Embedding.Forward {Shape}", Download(outBuffer), expected, 0, 0);
    }

    [Test]
    public void BackwardAccumulatesIntoThePromptOnly()
    {
        var random = new Random(12);
        var dOut = RandomValues(random, B * T * C);
        var initial = RandomValues(random, P * C); // dPrompt accumulates: start from non-zero values
        var expected = (double[])initial.Clone();
        EmbeddingReference.Backward(expected, dOut, SourceMap, B * T, C, P);

        var uses = Embedding.BuildPromptUses(SourceMap, V, P);
        using var dOutBuffer = Upload(dOut);
        using var offsets = Upload(uses.Offsets);
        using var positions = Upload(uses.Positions);
        using var dPromptBuffer = Upload(initial);
        Kernels.Embedding.Backward(dPromptBuffer.View, dOutBuffer.View, offsets.View, positions.View, B * T, C, P);
        TensorAssert.Close($"Embedding.Backward {Shape}", Download(dPromptBuffer), expected, BackwardAtol, Rtol);
    }

    [Test]
    public void OutOfRangeSourceYieldsNaNOnDeviceAndThrowsOnHost()
    {
        int[] map = [0, V, -1 - P, -1];
        var random = new Random(13);
        using var mapBuffer = Upload(map);
        using var tableBuffer = Upload(RandomValues(random, V * C));
        using var promptBuffer = Upload(RandomValues(random, P * C));
        using var outBuffer = Poisoned(map.Length * C);
        Kernels.Embedding.Forward(outBuffer.View, mapBuffer.View, tableBuffer.View, promptBuffer.View, map.Length, C, V, P);
        var output = Download(outBuffer);
        Assert.That(output[..C], Has.All.Not.NaN, "valid token row");
        Assert.That(output[C..(3 * C)], Has.All.NaN, "token and prompt rows out of range");
        Assert.That(output[(3 * C)..], Has.All.Not.NaN, "valid prompt row");

        var error = Assert.Throws<ArgumentException>(() => Embedding.BuildPromptUses(map, V, P));
        Assert.That(error!.Message, Does.Contain("position 1").And.Contain("token 11"));
    }

    [Test]
    public void PromptUsesListPositionsPerPromptRow()
    {
        var uses = Embedding.BuildPromptUses(SourceMap, V, P);
        Assert.That(uses.Offsets, Is.EqualTo(new[] { 0, 2, 3, 4, 5, 6, 8 }));
        Assert.That(uses.Positions, Is.EqualTo(new[] { 0, 7, 1, 2, 12, 13, 10, 11 }));
    }
}
