using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Seeded random device tensors for one op benchmark, freed together.</summary>
public sealed class DeviceBuffers(KernelContext kernels, int seed) : IDisposable
{
    readonly List<IDisposable> owned = [];
    readonly Random rng = new(seed);

    /// <summary>A tensor of <paramref name="length"/> values uniform in centre ± radius.</summary>
    public ArrayView<float> Random(long length, float radius = 1f, float centre = 0f)
    {
        var values = new float[length];
        for (long i = 0; i < length; i++) values[i] = centre + radius * (float)(2 * rng.NextDouble() - 1);
        var buffer = kernels.Accelerator.Allocate1D(values);
        owned.Add(buffer);
        return buffer.View;
    }

    /// <summary>A zeroed float tensor.</summary>
    public ArrayView<float> Zeros(long length)
    {
        var buffer = kernels.Accelerator.Allocate1D<float>(length);
        buffer.MemSetToZero();
        owned.Add(buffer);
        return buffer.View;
    }

    /// <summary>An int tensor holding <paramref name="values"/>.</summary>
    public ArrayView<int> Ints(int[] values)
    {
        var buffer = kernels.Accelerator.Allocate1D(values);
        owned.Add(buffer);
        return buffer.View;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        foreach (var buffer in owned) buffer.Dispose();
        owned.Clear();
    }
}
