using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.Kernels;

/// <summary>
/// Runs an op's kernels on ILGPU's CPU accelerator in one <see cref="KernelShape"/> (derived fixtures are
/// instantiated for both). Outputs are poisoned with NaN before each launch, so an element a kernel forgets
/// to write fails the comparison.
/// </summary>
public abstract class KernelTestBase(KernelShape shape)
{
    protected KernelShape Shape { get; } = shape;

    protected KernelContext Kernels { get; private set; } = null!;

    [OneTimeSetUp]
    public void CreateContext() => Kernels = KernelContext.Create(KernelBackend.Cpu, Shape);

    [OneTimeTearDown]
    public void DisposeContext() => Kernels?.Dispose();

    protected MemoryBuffer1D<float, Stride1D.Dense> Upload(double[] values) =>
        Kernels.Accelerator.Allocate1D(Array.ConvertAll(values, v => (float)v));

    protected MemoryBuffer1D<int, Stride1D.Dense> Upload(int[] values) => Kernels.Accelerator.Allocate1D(values);

    protected MemoryBuffer1D<float, Stride1D.Dense> Poisoned(long length)
    {
        var values = new float[length];
        Array.Fill(values, float.NaN);
        return Kernels.Accelerator.Allocate1D(values);
    }

    protected float[] Download(MemoryBuffer1D<float, Stride1D.Dense> buffer)
    {
        Kernels.Synchronize();
        return buffer.GetAsArray1D();
    }

    /// <summary>Random values already rounded to float (so kernel and reference see identical inputs),
    /// with magnitudes in [0.05, 1): never zero, never degenerate.</summary>
    protected static double[] RandomValues(Random random, int length, double scale = 1)
    {
        var values = new double[length];
        for (int i = 0; i < length; i++)
        {
            double magnitude = 0.05 + 0.95 * random.NextDouble();
            values[i] = (float)(scale * (random.Next(2) == 0 ? -magnitude : magnitude));
        }
        return values;
    }
}

/// <summary>Comparison of a kernel's float output with a double reference, element by element.</summary>
public static class TensorAssert
{
    /// <summary>Asserts |actual − expected| ≤ atol + rtol·|expected| everywhere (NaN always fails);
    /// on failure lists the first mismatches and the largest error. Returns the largest error.</summary>
    public static double Close(string what, float[] actual, double[] expected, double atol, double rtol)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), $"{what}: length");
        double maxError = 0;
        int worst = -1, failures = 0;
        var report = new System.Text.StringBuilder();
        for (int i = 0; i < expected.Length; i++)
        {
            double error = Math.Abs(actual[i] - expected[i]);
            if (double.IsNaN(error)) error = double.PositiveInfinity;
            if (worst < 0 || error > maxError) { maxError = error; worst = i; }
            if (!(error <= atol + rtol * Math.Abs(expected[i])))
            {
                if (failures < 5)
                    report.AppendLine($"  [{i}] kernel {actual[i]:R} reference {expected[i]:R} error {error:E3}");
                failures++;
            }
        }
        TestContext.Out.WriteLine($"{what}: max |error| = {maxError:E3} at [{worst}] over {expected.Length} elements");
        if (failures > 0)
            Assert.Fail($"{what}: {failures} of {expected.Length} elements outside {atol:E1} + {rtol:E1}·|ref|; max |error| {maxError:E3} at [{worst}]\n{report}");
        return maxError;
    }

    /// <summary>Asserts two double arrays agree (reference backward vs finite differences).</summary>
    public static void Close(string what, double[] actual, double[] expected, double atol, double rtol) =>
        Close(what, Array.ConvertAll(actual, v => (float)v), expected, atol, rtol);
}
