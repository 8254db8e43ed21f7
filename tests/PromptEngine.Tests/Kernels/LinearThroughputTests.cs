using System.Diagnostics;
using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

/// <summary>Measures the CPU-shaped Linear at 512³ (validated first against the reference on a sample of
/// rows); slow and machine-dependent, so it reports rather than asserts a speed.</summary>
[Category("Slow")]
public sealed class LinearThroughputTests() : KernelTestBase(KernelShape.Cpu)
{
    [Test]
    public void CpuShapedLinear512()
    {
        const int n = 512, k = 512, m = 512, repeats = 5;
        var random = new Random(5);
        var x = RandomValues(random, n * k);
        var w = RandomValues(random, m * k);
        using var xBuffer = Upload(x);
        using var wBuffer = Upload(w);
        using var yBuffer = Poisoned(n * m);
        using var dXBuffer = Poisoned(n * k);

        Kernels.Linear.Forward(yBuffer.View, xBuffer.View, wBuffer.View, default, n, k, m); // warm-up (JIT)
        var y = Download(yBuffer);
        var expected = new double[8 * m];
        LinearReference.Forward(expected, x[..(8 * k)], w, null, 8, k, m);
        TensorAssert.Close("Linear 512 forward, first 8 rows", y[..(8 * m)], expected, 1e-6 * k, 1e-5);

        double flops = 2.0 * n * k * m * repeats;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++)
            Kernels.Linear.Forward(yBuffer.View, xBuffer.View, wBuffer.View, default, n, k, m);
        Kernels.Synchronize();
        double forwardSeconds = clock.Elapsed.TotalSeconds;

        Kernels.Linear.Backward(dXBuffer.View, yBuffer.View, wBuffer.View, n, k, m); // warm-up
        Kernels.Synchronize();
        clock.Restart();
        for (int i = 0; i < repeats; i++)
            Kernels.Linear.Backward(dXBuffer.View, yBuffer.View, wBuffer.View, n, k, m);
        Kernels.Synchronize();
        double backwardSeconds = clock.Elapsed.TotalSeconds;

        TestContext.Out.WriteLine($"CPU-shaped Linear 512x512x512 on {Environment.ProcessorCount} cores: forward {flops / forwardSeconds / 1e9:F2} GFLOP/s " +
            $"({forwardSeconds / repeats * 1e3:F1} ms), backward {flops / backwardSeconds / 1e9:F2} GFLOP/s ({backwardSeconds / repeats * 1e3:F1} ms)");
    }
}
