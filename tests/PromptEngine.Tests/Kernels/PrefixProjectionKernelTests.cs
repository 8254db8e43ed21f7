using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>The kernels of prefix tuning's reparameterisation MLP — Tanh, Linear.BackwardWeights and the PrefixLayout
/// permutation — against their double references (each reference's backward also against finite differences of its
/// forward), in both kernel shapes.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class PrefixProjectionKernelTests(KernelShape shape) : KernelTestBase(shape)
{
    // Pointwise float tanh and one product on O(1) inputs: a few ulps; 2e-6 + 1e-5·|ref| (as the other elementwise ops).
    const double PointwiseAtol = 2e-6, PointwiseRtol = 1e-5;

    [Test]
    public void TanhMatchesReferenceInAndOutOfPlace()
    {
        const int count = 101;
        var random = new Random(31);
        var x = RandomValues(random, count, scale: 3); // into the saturating tails
        var dOut = RandomValues(random, count);
        var expectedOut = new double[count];
        var expectedDx = new double[count];
        TanhReference.Forward(expectedOut, x, count);
        // The kernel's backward reads its own float output; feed the reference the same rounded values.
        var outputAsFloat = expectedOut.Select(v => (double)(float)v).ToArray();
        TanhReference.Backward(expectedDx, dOut, outputAsFloat, count);

        using var xBuffer = Upload(x);
        using var dOutBuffer = Upload(dOut);
        using var outBuffer = Poisoned(count);
        using var dXBuffer = Poisoned(count);
        Kernels.Tanh.Forward(outBuffer.View, xBuffer.View, count);
        TensorAssert.Close($"Tanh.Forward {Shape}", Download(outBuffer), expectedOut, PointwiseAtol, PointwiseRtol);
        using var savedOutput = Upload(outputAsFloat);
        Kernels.Tanh.Backward(dXBuffer.View, dOutBuffer.View, savedOutput.View, count);
        TensorAssert.Close($"Tanh.Backward {Shape}", Download(dXBuffer), expectedDx, PointwiseAtol, PointwiseRtol);

        Kernels.Tanh.Forward(xBuffer.View, xBuffer.View, count); // in place
        TensorAssert.Close($"Tanh.Forward in place {Shape}", Download(xBuffer), expectedOut, PointwiseAtol, PointwiseRtol);
        Kernels.Tanh.Backward(dOutBuffer.View, dOutBuffer.View, savedOutput.View, count);
        TensorAssert.Close($"Tanh.Backward in place {Shape}", Download(dOutBuffer), expectedDx, PointwiseAtol, PointwiseRtol);
    }

    [Test]
    public void TanhReferenceBackwardMatchesFiniteDifferences()
    {
        // h = 1e-6 in double: truncation ~1e-12, rounding ~1e-10; 1e-8 + 1e-7·|g| is far below any wrong formula.
        const int count = 17;
        var random = new Random(32);
        var x = RandomValues(random, count, scale: 2);
        var dOut = RandomValues(random, count);
        var output = new double[count];
        TanhReference.Forward(output, x, count);
        var analytic = new double[count];
        TanhReference.Backward(analytic, dOut, output, count);
        var numeric = FiniteDifference.Gradient(v => { var y = new double[count]; TanhReference.Forward(y, v, count); return y; }, x, dOut);
        TensorAssert.Close("Tanh reference backward vs finite differences", analytic, numeric, 1e-8, 1e-7);
    }

    [TestCase(5, 13, 9, true)]
    [TestCase(5, 13, 9, false)]
    [TestCase(1, 5, 3, true)]
    [TestCase(20, 7, 33, true)]
    public void LinearBackwardWeightsMatchesReference(int n, int k, int m, bool withBias)
    {
        var random = new Random(n * 1000 + k * 10 + m + 5);
        var dY = RandomValues(random, n * m);
        var x = RandomValues(random, n * k);
        var expectedDw = new double[m * k];
        var expectedDb = withBias ? new double[m] : null;
        LinearReference.BackwardWeights(expectedDw, expectedDb, dY, x, n, k, m);

        using var dYBuffer = Upload(dY);
        using var xBuffer = Upload(x);
        // NaN-poisoned outputs: a kernel that accumulated instead of overwriting, or skipped an element, fails.
        using var dWBuffer = Poisoned(m * k);
        using var dBBuffer = withBias ? Poisoned(m) : null;
        Kernels.Linear.BackwardWeights(dWBuffer.View, dBBuffer?.View ?? default, dYBuffer.View, xBuffer.View, n, k, m);
        // A reduction over N float products of magnitude < 1: 1e-6·N + 1e-5·|ref| (as Linear's other tests).
        TensorAssert.Close($"Linear.BackwardWeights dW {Shape} {n}x{k}x{m}", Download(dWBuffer), expectedDw, 1e-6 * n, 1e-5);
        if (dBBuffer is not null)
            TensorAssert.Close($"Linear.BackwardWeights db {Shape} {n}x{k}x{m}", Download(dBBuffer), expectedDb!, 1e-6 * n, 1e-5);
    }

    [Test]
    public void LinearReferenceWeightGradientMatchesFiniteDifferences()
    {
        // L = Σ Y·probe with Y = X·Wᵀ + b, differentiated in W and b; double, h = 1e-6 (see above for the tolerance).
        const int n = 4, k = 5, m = 3;
        var random = new Random(33);
        var x = RandomValues(random, n * k);
        var w = RandomValues(random, m * k);
        var b = RandomValues(random, m);
        var probe = RandomValues(random, n * m);
        var dW = new double[m * k];
        var dB = new double[m];
        LinearReference.BackwardWeights(dW, dB, probe, x, n, k, m);
        double[] Y(double[] weights, double[] bias) { var y = new double[n * m]; LinearReference.Forward(y, x, weights, bias, n, k, m); return y; }
        TensorAssert.Close("Linear reference dW vs finite differences", dW, FiniteDifference.Gradient(v => Y(v, b), w, probe), 1e-8, 1e-7);
        TensorAssert.Close("Linear reference db vs finite differences", dB, FiniteDifference.Gradient(v => Y(w, v), b, probe), 1e-8, 1e-7);
    }

    [Test]
    public void LinearBackwardWeightsRefusesWrongLengthsNamingTheTensor()
    {
        using var dW = Poisoned(3 * 5);
        using var dB = Poisoned(4);
        using var dY = Poisoned(2 * 3);
        using var x = Poisoned(2 * 5);
        var error = Assert.Throws<KernelShapeException>(() => Kernels.Linear.BackwardWeights(dW.View, dB.View, dY.View, x.View, 2, 5, 3))!;
        Assert.That(error.Message, Does.Contain("Linear.BackwardWeights").And.Contain("db has 4 elements"));
        error = Assert.Throws<KernelShapeException>(() => Kernels.Linear.BackwardWeights(dW.View, default, dY.View, x.View, 2, 4, 3))!;
        Assert.That(error.Message, Does.Contain("dW has 15 elements"));
    }

    [TestCase(3, 4, 5)] // Pv 3, L·2 = 4, d 5
    [TestCase(1, 2, 7)]
    [TestCase(6, 2, 1)]
    public void PrefixLayoutMatchesReferenceBothWays(int pv, int parts, int d)
    {
        var random = new Random(pv * 100 + parts * 10 + d);
        var peft = RandomValues(random, pv * parts * d);
        var dEngine = RandomValues(random, pv * parts * d);
        var expectedEngine = PrefixProjectionReference.ToEngineLayout(peft, pv, parts, d);
        var expectedDPeft = PrefixProjectionReference.ToPeftLayout(dEngine, pv, parts, d);

        using var peftBuffer = Upload(peft);
        using var dEngineBuffer = Upload(dEngine);
        using var engineBuffer = Poisoned(peft.Length);
        using var dPeftBuffer = Poisoned(peft.Length);
        Kernels.PrefixLayout.Forward(engineBuffer.View, peftBuffer.View, pv, parts, d);
        Kernels.PrefixLayout.Backward(dPeftBuffer.View, dEngineBuffer.View, pv, parts, d);
        // A permutation copies floats: exact.
        TensorAssert.Close($"PrefixLayout.Forward {Shape}", Download(engineBuffer), expectedEngine, 0, 0);
        TensorAssert.Close($"PrefixLayout.Backward {Shape}", Download(dPeftBuffer), expectedDPeft, 0, 0);

        // The backward undoes the forward.
        Kernels.PrefixLayout.Backward(dPeftBuffer.View, engineBuffer.View, pv, parts, d);
        TensorAssert.Close($"PrefixLayout.Backward ∘ Forward {Shape}", Download(dPeftBuffer), peft, 0, 0);
    }

    [Test]
    public void PrefixLayoutForwardAgreesWithTheDeepPromptFileLayout()
    {
        // An independent statement of the same permutation: DeepPrompt.ToEngineLayout, used to load saved deep prompts.
        var config = TransformerConfig.Parse(ModelReferenceTinyModels.LlamaConfig(), "config.json"); // L 2, KV 2, hs 4
        const int pv = 3;
        var prompt = DeepPrompt.Random(config, pv, seed: 4);
        int parts = 2 * config.NumLayers, d = config.NumKvHeads * config.HeadDim;
        using var peftBuffer = Kernels.Accelerator.Allocate1D(prompt.Values);
        using var engineBuffer = Poisoned(prompt.Values.Length);
        Kernels.PrefixLayout.Forward(engineBuffer.View, peftBuffer.View, pv, parts, d);
        Assert.That(Download(engineBuffer), Is.EqualTo(prompt.ToEngineLayout()));
    }
}
