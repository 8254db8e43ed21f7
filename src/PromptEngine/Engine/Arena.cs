using ILGPU;
using ILGPU.Runtime;

namespace PromptEngine.Engine;

/// <summary>A device arena planned up front: callers reserve named ranges, then one buffer is
/// allocated and each reservation becomes a view. Nothing is allocated after that.</summary>
/// <typeparam name="T">Element type (float for tensors, int for maps and indices).</typeparam>
public sealed class Arena<T> : IDisposable where T : unmanaged
{
    readonly List<(string Name, long Offset, long Length)> reservations = [];
    MemoryBuffer1D<T, Stride1D.Dense>? buffer;
    long total;

    /// <summary>Names this arena in memory reports.</summary>
    public string Name { get; }

    /// <summary>Creates an empty plan.</summary>
    public Arena(string name) => Name = name;

    /// <summary>Reserves <paramref name="length"/> elements; returns a handle that becomes a view after <see cref="Allocate"/>.</summary>
    public int Reserve(string name, long length)
    {
        if (buffer is not null) throw new InvalidOperationException($"arena {Name} is already allocated");
        if (length < 0) throw new ArgumentOutOfRangeException(nameof(length));
        reservations.Add((name, total, length));
        total += length;
        return reservations.Count - 1;
    }

    /// <summary>Allocates the one buffer on <paramref name="accelerator"/>.</summary>
    public void Allocate(Accelerator accelerator) => buffer = accelerator.Allocate1D<T>(Math.Max(1, total));

    /// <summary>The view of a reservation; an empty view for a zero-length one.</summary>
    public ArrayView<T> this[int handle]
    {
        get
        {
            var (_, offset, length) = reservations[handle];
            if (buffer is null) throw new InvalidOperationException($"arena {Name} is not allocated");
            return length == 0 ? default : buffer.View.SubView(offset, length);
        }
    }

    /// <summary>Bytes the arena holds on the device.</summary>
    public long Bytes => buffer?.LengthInBytes ?? total * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();

    /// <summary>Reservations by name with their sizes in bytes, for memory reports.</summary>
    public IEnumerable<(string Name, long Bytes)> Contents =>
        reservations.Select(r => (r.Name, r.Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>()));

    /// <inheritdoc/>
    public void Dispose() => buffer?.Dispose();
}

/// <summary>Copies between the host and a device view.</summary>
internal static class DeviceViews
{
    /// <summary>The view's elements, copied to the host.</summary>
    public static T[] ToHost<T>(this ArrayView<T> view) where T : unmanaged
    {
        var result = new T[view.Length];
        view.CopyToCPU(result);
        return result;
    }
}
