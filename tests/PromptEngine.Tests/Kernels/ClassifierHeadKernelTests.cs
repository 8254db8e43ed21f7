using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>The fused cross-entropy with a trainable linear head as its weight (V = R, no allowed subset, a bias) and
/// <see cref="CrossEntropy.HeadGradient"/>, in both kernel shapes, against <see cref="ClassifierHeadReference"/>, whose
/// gradients are first checked against central finite differences of its own loss.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class ClassifierHeadKernelTests(KernelShape shape) : KernelTestBase(shape)
{
    // Logits are C-term float dots of O(1) values plus a bias: 1e-6·C absolute; the loss adds a float log-sum-exp over
    // R = 3 columns. dW and db sum S = 4 rows of (p − 1)/count·h: 2e-6. dHidden sums R terms: 2e-6.
    const int N = 9, C = 13, R = 3;
    const double LogitAtol = 1e-6 * C, LossAtol = 1e-6 * C, GradientAtol = 2e-6, Rtol = 1e-5;
    static readonly int[] Rows = [7, 2, 4, 0];
    static readonly int[] Targets = [2, 0, -1, 1]; // class indices; row 4 ignored

    static (double[] Hidden, double[] Weight, double[] Bias) Inputs(int seed)
    {
        var random = new Random(seed);
        return (RandomValues(random, N * C), RandomValues(random, R * C), RandomValues(random, R));
    }

    [Test]
    public void ReferenceGradientsMatchFiniteDifferences()
    {
        var (hidden, weight, bias) = Inputs(1);
        var (dWeight, dBias, dHidden) = ClassifierHeadReference.Gradients(hidden, Rows, Targets, weight, bias, N, C, R);
        double[] Mean(double[] h, double[] w, double[] b) => [ClassifierHeadReference.Loss(h, Rows, Targets, w, b, C, R).Mean];
        // Central differences in double with step 1e-6: truncation ~1e-12·f''' and rounding ~1e-10 / 1e-6; 1e-8 is a wide margin.
        var fdWeight = FiniteDifference.Gradient(w => Mean(hidden, w, bias), weight, [1.0]);
        var fdBias = FiniteDifference.Gradient(b => Mean(hidden, weight, b), bias, [1.0]);
        var fdHidden = FiniteDifference.Gradient(h => Mean(h, weight, bias), hidden, [1.0]);
        TensorAssert.Close("reference dW vs finite differences", dWeight, fdWeight, 1e-8, 1e-6);
        TensorAssert.Close("reference db vs finite differences", dBias, fdBias, 1e-8, 1e-6);
        TensorAssert.Close("reference dHidden vs finite differences", dHidden, fdHidden, 1e-8, 1e-6);
        Assert.That(dBias.Max(Math.Abs), Is.GreaterThan(1e-2), "a non-trivial gradient");
    }

    [Test]
    public void LossLogitsAndGradientsMatchTheReference()
    {
        var (hidden, weight, bias) = Inputs(2);
        int s = Rows.Length;
        var (expectedLosses, expectedMean) = ClassifierHeadReference.Loss(hidden, Rows, Targets, weight, bias, C, R);
        var (dWeight, dBias, dHidden) = ClassifierHeadReference.Gradients(hidden, Rows, Targets, weight, bias, N, C, R);
        var expectedLogits = ClassifierHeadReference.Logits(hidden, Rows, weight, bias, C, R);

        using var hiddenBuffer = Upload(hidden);
        using var weightBuffer = Upload(weight);
        using var biasBuffer = Upload(bias);
        using var rowsBuffer = Upload(Rows);
        using var targetsBuffer = Upload(Targets);
        using var losses = Poisoned(s);
        using var mean = Poisoned(1);
        using var dLogits = Poisoned(s * R);
        using var logits = Poisoned(s * R);
        using var dHiddenBuffer = Poisoned(N * C);
        // HeadGradient accumulates: start from known values and expect them plus the gradient.
        var previousWeight = Enumerable.Range(0, R * C).Select(i => 0.25 * (i % 5)).ToArray();
        var previousBias = new[] { 0.5, -1.0, 2.0 };
        using var dWeightBuffer = Upload(previousWeight);
        using var dBiasBuffer = Upload(previousBias);

        Kernels.CrossEntropy.Logits(logits.View, hiddenBuffer.View, rowsBuffer.View, weightBuffer.View, default, N, C, s, R, 0, biasBuffer.View);
        Kernels.CrossEntropy.Forward(losses.View, mean.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, targetsBuffer.View,
            weightBuffer.View, default, N, C, s, R, 0, biasBuffer.View);
        Kernels.CrossEntropy.Backward(dHiddenBuffer.View, dLogits.View, weightBuffer.View, rowsBuffer.View, default, N, C, s, R, 0);
        Kernels.CrossEntropy.HeadGradient(dWeightBuffer.View, dBiasBuffer.View, dLogits.View, hiddenBuffer.View, rowsBuffer.View, N, C, s, R);

        TensorAssert.Close($"head logits {Shape}", Download(logits), expectedLogits, LogitAtol, Rtol);
        TensorAssert.Close($"head losses {Shape}", Download(losses), expectedLosses, LossAtol, Rtol);
        TensorAssert.Close($"head mean loss {Shape}", Download(mean), [expectedMean], LossAtol, Rtol);
        TensorAssert.Close($"dHidden through the head {Shape}", Download(dHiddenBuffer), dHidden, GradientAtol, Rtol);
        TensorAssert.Close($"dW accumulated {Shape}", Download(dWeightBuffer), previousWeight.Zip(dWeight, (a, b) => a + b).ToArray(), GradientAtol, Rtol);
        TensorAssert.Close($"db accumulated {Shape}", Download(dBiasBuffer), previousBias.Zip(dBias, (a, b) => a + b).ToArray(), GradientAtol, Rtol);
    }

    [Test]
    public void ABiasOfTheWrongLengthIsRefusedNamingIt()
    {
        using var hidden = Poisoned(N * C);
        using var weight = Poisoned(R * C);
        using var bias = Poisoned(R + 1);
        using var rows = Upload(Rows);
        using var logits = Poisoned(Rows.Length * R);
        var e = Assert.Throws<KernelShapeException>(() =>
            Kernels.CrossEntropy.Logits(logits.View, hidden.View, rows.View, weight.View, default, N, C, Rows.Length, R, 0, bias.View))!;
        Assert.That(e.Message, Does.Contain("CrossEntropy.Logits").And.Contain("bias"));
        using var dWeight = Poisoned(R * C + 1);
        var g = Assert.Throws<KernelShapeException>(() =>
            Kernels.CrossEntropy.HeadGradient(dWeight.View, default, logits.View, hidden.View, rows.View, N, C, Rows.Length, R))!;
        Assert.That(g.Message, Does.Contain("CrossEntropy.HeadGradient").And.Contain("dWeight"));
    }
}
