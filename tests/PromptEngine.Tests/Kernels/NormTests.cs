using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class RmsNormTests(KernelShape shape) : KernelTestBase(shape)
{
    // A row sum of C squares in float, a rsqrt and a product: relative rounding ~√C·ε₃₂; inputs are O(1),
    // so 1e-5 absolute + 1e-5 relative. The backward adds one more C-term reduction: 2e-5.
    const double ForwardAtol = 1e-5, BackwardAtol = 2e-5, Rtol = 1e-5;
    const float Eps = 1e-5f;

    [TestCase(5, 13)]  // C < group size on the GPU shape: idle threads
    [TestCase(3, 37)]  // C > group size: strided loop, not a multiple of 16
    public void ForwardAndBackwardMatchReference(int n, int c)
    {
        var random = new Random(n * 100 + c);
        var x = RandomValues(random, n * c);
        var w = RandomValues(random, c);
        var dOut = RandomValues(random, n * c);
        var expectedOut = new double[n * c];
        var expectedRstd = new double[n];
        var expectedDx = new double[n * c];
        RmsNormReference.Forward(expectedOut, x, w, expectedRstd, n, c, Eps);
        RmsNormReference.Backward(expectedDx, dOut, x, w, expectedRstd, n, c);

        using var xBuffer = Upload(x);
        using var wBuffer = Upload(w);
        using var dOutBuffer = Upload(dOut);
        using var outBuffer = Poisoned(n * c);
        using var rstdBuffer = Poisoned(n);
        using var dXBuffer = Poisoned(n * c);
        Kernels.RmsNorm.Forward(outBuffer.View, xBuffer.View, wBuffer.View, rstdBuffer.View, n, c, Eps);
        Kernels.RmsNorm.Backward(dXBuffer.View, dOutBuffer.View, xBuffer.View, wBuffer.View, rstdBuffer.View, n, c);
        TensorAssert.Close($"RmsNorm.Forward out {Shape}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        TensorAssert.Close($"RmsNorm.Forward rstd {Shape}", Download(rstdBuffer), expectedRstd, ForwardAtol, Rtol);
        TensorAssert.Close($"RmsNorm.Backward dX {Shape}", Download(dXBuffer), expectedDx, BackwardAtol, Rtol);

        // Accumulating: dX += the same gradient, onto a residual stream's gradient already there (one float add more).
        var residualGradient = RandomValues(random, n * c);
        using var accumulated = Upload(residualGradient);
        Kernels.RmsNorm.Backward(accumulated.View, dOutBuffer.View, xBuffer.View, wBuffer.View, rstdBuffer.View, n, c, accumulate: true);
        TensorAssert.Close($"RmsNorm.Backward dX += {Shape}", Download(accumulated), residualGradient.Zip(expectedDx, (a, d) => a + d).ToArray(), BackwardAtol, Rtol);
    }
}

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class LayerNormTests(KernelShape shape) : KernelTestBase(shape)
{
    // Mean and variance in two float passes, then as RMSNorm: 1e-5 forward; the backward's two C-term
    // reductions are scaled by rstd (up to ~2 for these inputs): 5e-5.
    const double ForwardAtol = 1e-5, BackwardAtol = 5e-5, Rtol = 1e-5;
    const float Eps = 1e-5f;

    [TestCase(5, 13, true)]
    [TestCase(3, 37, false)]
    public void ForwardAndBackwardMatchReference(int n, int c, bool withBias)
    {
        var random = new Random(n * 100 + c + 7);
        var x = RandomValues(random, n * c);
        var w = RandomValues(random, c);
        var b = withBias ? RandomValues(random, c) : null;
        var dOut = RandomValues(random, n * c);
        var expectedOut = new double[n * c];
        var expectedMean = new double[n];
        var expectedRstd = new double[n];
        var expectedDx = new double[n * c];
        LayerNormReference.Forward(expectedOut, x, w, b, expectedMean, expectedRstd, n, c, Eps);
        LayerNormReference.Backward(expectedDx, dOut, x, w, expectedMean, expectedRstd, n, c);

        using var xBuffer = Upload(x);
        using var wBuffer = Upload(w);
        using var bBuffer = b is null ? null : Upload(b);
        using var dOutBuffer = Upload(dOut);
        using var outBuffer = Poisoned(n * c);
        using var meanBuffer = Poisoned(n);
        using var rstdBuffer = Poisoned(n);
        using var dXBuffer = Poisoned(n * c);
        Kernels.LayerNorm.Forward(outBuffer.View, xBuffer.View, wBuffer.View, bBuffer?.View ?? default, meanBuffer.View, rstdBuffer.View, n, c, Eps);
        Kernels.LayerNorm.Backward(dXBuffer.View, dOutBuffer.View, xBuffer.View, wBuffer.View, meanBuffer.View, rstdBuffer.View, n, c);
        TensorAssert.Close($"LayerNorm.Forward out {Shape}", Download(outBuffer), expectedOut, ForwardAtol, Rtol);
        TensorAssert.Close($"LayerNorm.Forward mean {Shape}", Download(meanBuffer), expectedMean, ForwardAtol, Rtol);
        TensorAssert.Close($"LayerNorm.Forward rstd {Shape}", Download(rstdBuffer), expectedRstd, ForwardAtol, Rtol);
        TensorAssert.Close($"LayerNorm.Backward dX {Shape}", Download(dXBuffer), expectedDx, BackwardAtol, Rtol);
    }
}
