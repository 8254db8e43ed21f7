using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class CrossEntropyTests(KernelShape shape) : KernelTestBase(shape)
{
    // Logits are C-term float dots of O(1) values: 1e-6·C absolute. The loss adds a float log-sum-exp over
    // the width (|logit| < C): 1e-6·C + 1e-5 relative. dHidden sums width terms of (p − 1)/count·w: 2e-6.
    const int N = 9, C = 13;
    const double LogitAtol = 1e-6 * C, LossAtol = 1e-6 * C, GradientAtol = 2e-6, Rtol = 1e-5;

    // Hidden rows 7, 2, 4, 0 are selected, row 4's target ignored; rows 1, 3, 5, 6, 8 get zero gradient.
    static readonly int[] Rows = [7, 2, 4, 0];

    // Five selected rows: not a multiple of the CPU logits kernel's four-row blocks.
    static readonly int[] LogitRows = [7, 2, 4, 0, 8];

    static (double[] Hidden, double[] Weight) Inputs(int v, int seed)
    {
        var random = new Random(seed);
        return (RandomValues(random, N * C), RandomValues(random, v * C));
    }

    [TestCase(37, new int[0], new[] { 5, 36, -1, 0 })]   // the whole (odd-sized) vocabulary
    [TestCase(29, new[] { 17, 3 }, new[] { 3, 17, -1, 3 })] // a two-word verbalizer
    [TestCase(40, new[] { 9, 31, 2, 25, 38, 11, 6, 19, 33, 1, 14, 27, 22, 35, 4, 16, 29, 8 }, new[] { 31, 8, -1, 22 })] // R > the GPU shape's group
    public void ForwardAndBackwardMatchReference(int v, int[] allowed, int[] targets) =>
        CheckForwardAndBackward(Rows, v, allowed, targets);

    // The whole 601-word vocabulary: the CPU backward adds three column chunks of 256 into dHidden. Five selected rows
    // leave a ragged last block of the CPU kernels' four-row blocks in both products, with and without a subset.
    [TestCase(601, new int[0], new[] { 5, 600, -1, 0, 300 })]
    [TestCase(601, new[] { 600, 7, 256, 255, 3, 512 }, new[] { 256, 600, 3, -1, 512 })]
    public void WideVocabularyAndRaggedRowBlockMatchReference(int v, int[] allowed, int[] targets) =>
        CheckForwardAndBackward(LogitRows, v, allowed, targets);

    void CheckForwardAndBackward(int[] rows, int v, int[] allowed, int[] targets)
    {
        int s = rows.Length, r = allowed.Length, width = r > 0 ? r : v;
        CrossEntropy.CheckSelection(rows, targets, allowed, N, v);
        var (hidden, weight) = Inputs(v, v * 10 + r);
        var expectedLosses = new double[s];
        var expectedMean = new double[1];
        var expectedDHidden = new double[N * C];
        CrossEntropyReference.Forward(expectedLosses, expectedMean, hidden, rows, targets, weight, allowed, N, C, s, v, r);
        CrossEntropyReference.Backward(expectedDHidden, hidden, rows, targets, weight, allowed, N, C, s, v, r);

        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var rowsBuffer = Upload(rows);
        using var targetsBuffer = Upload(targets);
        using var allowedBuffer = Upload(allowed.Length > 0 ? allowed : [0]);
        var allowedView = r > 0 ? allowedBuffer.View : allowedBuffer.View.SubView(0, 0);
        using var losses = Poisoned(s);
        using var mean = Poisoned(1);
        using var dLogits = Poisoned(s * width);
        using var dHidden = Poisoned(N * C);
        Kernels.CrossEntropy.Forward(losses.View, mean.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, targetsBuffer.View,
            weightBuffer.View, allowedView, N, C, s, v, r);
        Kernels.CrossEntropy.Backward(dHidden.View, dLogits.View, weightBuffer.View, rowsBuffer.View, allowedView, N, C, s, v, r);

        string name = $"{Shape} V{v} R{r} S{s}";
        TensorAssert.Close($"CrossEntropy.Forward losses {name}", Download(losses), expectedLosses, LossAtol, Rtol);
        TensorAssert.Close($"CrossEntropy.Forward mean {name}", Download(mean), expectedMean, LossAtol, Rtol);
        TensorAssert.Close($"CrossEntropy.Backward dHidden {name}", Download(dHidden), expectedDHidden, GradientAtol, Rtol);
    }

    [TestCase(37, new int[0])]
    [TestCase(29, new[] { 17, 3, 28 })]
    public void LogitsMatchReference(int v, int[] allowed)
    {
        int s = LogitRows.Length, r = allowed.Length, width = r > 0 ? r : v;
        var (hidden, weight) = Inputs(v, v + r);
        var expected = new double[s * width];
        CrossEntropyReference.Logits(expected, hidden, LogitRows, weight, allowed, N, C, s, v, r);

        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var rowsBuffer = Upload(LogitRows);
        using var allowedBuffer = Upload(allowed.Length > 0 ? allowed : [0]);
        using var logits = Poisoned(s * width);
        Kernels.CrossEntropy.Logits(logits.View, hiddenBuffer.View, rowsBuffer.View, weightBuffer.View,
            r > 0 ? allowedBuffer.View : allowedBuffer.View.SubView(0, 0), N, C, s, v, r);
        TensorAssert.Close($"CrossEntropy.Logits {Shape} V{v} R{r}", Download(logits), expected, LogitAtol, Rtol);
    }

    [Test]
    public void AllTargetsIgnoredGivesZeroLossAndGradient()
    {
        const int v = 11;
        int[] targets = [-1, -1, -1, -1];
        var (hidden, weight) = Inputs(v, 3);
        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var rowsBuffer = Upload(Rows);
        using var targetsBuffer = Upload(targets);
        using var losses = Poisoned(Rows.Length);
        using var mean = Poisoned(1);
        using var dLogits = Poisoned(Rows.Length * v);
        using var dHidden = Poisoned(N * C);
        Kernels.CrossEntropy.Forward(losses.View, mean.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, targetsBuffer.View,
            weightBuffer.View, default, N, C, Rows.Length, v, 0);
        Kernels.CrossEntropy.Backward(dHidden.View, dLogits.View, weightBuffer.View, rowsBuffer.View, default, N, C, Rows.Length, v, 0);
        Assert.That(Download(mean), Is.EqualTo(new[] { 0f }));
        Assert.That(Download(losses), Has.All.EqualTo(0f));
        Assert.That(Download(dHidden), Has.All.EqualTo(0f));
    }

    [Test]
    public void TargetOutsideTheAllowedSetIsNaNOnDeviceAndThrowsOnHost()
    {
        const int v = 29;
        int[] allowed = [17, 3];
        int[] targets = [3, 5, -1, 17];
        var (hidden, weight) = Inputs(v, 4);
        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var rowsBuffer = Upload(Rows);
        using var targetsBuffer = Upload(targets);
        using var allowedBuffer = Upload(allowed);
        using var losses = Poisoned(Rows.Length);
        using var mean = Poisoned(1);
        using var dLogits = Poisoned(Rows.Length * allowed.Length);
        Kernels.CrossEntropy.Forward(losses.View, mean.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, targetsBuffer.View,
            weightBuffer.View, allowedBuffer.View, N, C, Rows.Length, v, allowed.Length);
        var lossValues = Download(losses);
        Assert.That(lossValues[1], Is.NaN, "target 5 is not a label word");
        Assert.That(new[] { lossValues[0], lossValues[3] }, Has.All.Not.NaN);
        Assert.That(Download(mean)[0], Is.NaN, "a bad target shows in the mean loss");

        var error = Assert.Throws<ArgumentException>(() => CrossEntropy.CheckSelection(Rows, targets, allowed, N, v));
        Assert.That(error!.Message, Does.Contain("targets[1] = 5"));
        error = Assert.Throws<ArgumentException>(() => CrossEntropy.CheckSelection([1, 1], [0, 0], [], N, v));
        Assert.That(error!.Message, Does.Contain("rows[1] = 1").And.Contain("twice"));
    }

    [Test]
    public void WrongScratchShapeNamesTheTensor()
    {
        using var buffer = Poisoned(N * C);
        using var rows = Upload(Rows);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.CrossEntropy.Forward(buffer.View.SubView(0, 4), buffer.View.SubView(0, 1),
            buffer.View.SubView(0, 7), buffer.View, rows.View, rows.View, buffer.View.SubView(0, 2 * C), default, N, C, 4, 2, 0));
        Assert.That(error!.Message, Does.Contain("dLogits").And.Contain("S*V = 8"));
    }
}
