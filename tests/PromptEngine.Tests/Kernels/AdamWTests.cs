using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class AdamWTests(KernelShape shape) : KernelTestBase(shape)
{
    // Each step moves a parameter by at most ~lr (1e-2) through a handful of float operations; m and v carry
    // ~1e-7 relative error into the quotient. Three steps: 1e-6 absolute + 1e-5 relative on all three buffers.
    const double Atol = 1e-6, Rtol = 1e-5;
    const float Lr = 1e-2f, Beta1 = 0.9f, Beta2 = 0.999f, Eps = 1e-8f, WeightDecay = 0.1f;

    [TestCase(1037, 0.5f)]  // odd length; the gradient norm (≈ 18) is clipped to 0.5 on the device
    [TestCase(5, 100f)]     // fewer elements than partitions; no clipping (scale 1)
    public void ClippedStepsMatchReference(int count, float maxNorm)
    {
        var random = new Random(count);
        var param = RandomValues(random, count);
        var m = new double[count];
        var v = new double[count];
        using var paramBuffer = Upload(param);
        using var mBuffer = Upload(m);
        using var vBuffer = Upload(v);
        using var sumSquares = Poisoned(1);
        using var clipScale = Poisoned(1);
        using var partials = Poisoned(GradNorm.Partitions);
        for (int t = 1; t <= 3; t++)
        {
            var grad = RandomValues(random, count);
            var (expectedSum, expectedScale) = GradNormReference.Forward(grad, maxNorm);
            AdamWReference.Step(param, m, v, grad, expectedScale, Lr, Beta1, Beta2, Eps, WeightDecay, t);

            using var gradBuffer = Upload(grad);
            Kernels.GradNorm.Forward(sumSquares.View, clipScale.View, partials.View, gradBuffer.View, count, maxNorm);
            Kernels.AdamW.Step(paramBuffer.View, mBuffer.View, vBuffer.View, gradBuffer.View, clipScale.View, count, Lr, Beta1, Beta2, Eps, WeightDecay, t);
            // Σ of N float squares: ~N·ε₃₂ relative at worst.
            TensorAssert.Close($"GradNorm sumSquares {Shape} N{count} t{t}", Download(sumSquares), [expectedSum], 0, 1e-7 * count + 1e-6);
            TensorAssert.Close($"GradNorm clipScale {Shape} N{count} t{t}", Download(clipScale), [expectedScale], 0, 1e-6);
        }
        TensorAssert.Close($"AdamW param {Shape} N{count}", Download(paramBuffer), param, Atol, Rtol);
        TensorAssert.Close($"AdamW m {Shape} N{count}", Download(mBuffer), m, Atol, Rtol);
        TensorAssert.Close($"AdamW v {Shape} N{count}", Download(vBuffer), v, Atol, Rtol);
        if (maxNorm < 1)
            Assert.That(Download(clipScale)[0], Is.LessThan(0.1f), "the test meant to exercise clipping");
    }

    [Test]
    public void StepWithoutScaleUsesTheRawGradient()
    {
        const int count = 17;
        var random = new Random(3);
        var param = RandomValues(random, count);
        var m = RandomValues(random, count, 0.1);
        var v = Array.ConvertAll(RandomValues(random, count, 0.01), x => Math.Abs(x));
        var grad = RandomValues(random, count);
        using var paramBuffer = Upload(param);
        using var mBuffer = Upload(m);
        using var vBuffer = Upload(v);
        using var gradBuffer = Upload(grad);
        AdamWReference.Step(param, m, v, grad, 1, Lr, Beta1, Beta2, Eps, WeightDecay, 7);
        Kernels.AdamW.Step(paramBuffer.View, mBuffer.View, vBuffer.View, gradBuffer.View, default, count, Lr, Beta1, Beta2, Eps, WeightDecay, 7);
        TensorAssert.Close($"AdamW param unscaled {Shape}", Download(paramBuffer), param, Atol, Rtol);
        TensorAssert.Close($"AdamW m unscaled {Shape}", Download(mBuffer), m, Atol, Rtol);
        TensorAssert.Close($"AdamW v unscaled {Shape}", Download(vBuffer), v, Atol, Rtol);
    }

    [Test]
    public void GradNormIsBitwiseReproducible()
    {
        const int count = 4099;
        var values = RandomValues(new Random(9), count);
        using var input = Upload(values);
        using var partials = Poisoned(GradNorm.Partitions);
        using var first = Poisoned(1);
        using var second = Poisoned(1);
        Kernels.GradNorm.Forward(first.View, default, partials.View, input.View, count, 0);
        Kernels.GradNorm.Forward(second.View, default, partials.View, input.View, count, 0);
        Assert.That(BitConverter.SingleToInt32Bits(Download(second)[0]), Is.EqualTo(BitConverter.SingleToInt32Bits(Download(first)[0])));
        TensorAssert.Close($"GradNorm sumSquares {Shape}", Download(first), [GradNormReference.Forward(values, 1).SumSquares], 0, 1e-5);
    }

    [Test]
    public void BadArgumentsAreNamed()
    {
        using var buffer = Poisoned(4);
        var shapeError = Assert.Throws<KernelShapeException>(() =>
            Kernels.AdamW.Step(buffer.View, buffer.View, buffer.View.SubView(0, 3), buffer.View, default, 4, Lr, Beta1, Beta2, Eps, 0, 1));
        Assert.That(shapeError!.Message, Does.Contain("v has 3 elements"));
        Assert.Throws<ArgumentOutOfRangeException>(() =>
            Kernels.AdamW.Step(buffer.View, buffer.View, buffer.View, buffer.View, default, 4, Lr, Beta1, Beta2, Eps, 0, 0));
        var partialsError = Assert.Throws<KernelShapeException>(() =>
            Kernels.GradNorm.Forward(buffer.View.SubView(0, 1), default, buffer.View, buffer.View, 4, 1));
        Assert.That(partialsError!.Message, Does.Contain("partials"));
    }
}
