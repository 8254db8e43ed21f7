using System.Text;
using System.Text.Json;

namespace PromptEngine.Safetensors;

/// <summary>One tensor to be written: raw little-endian bytes of <paramref name="DType"/> in row-major order.</summary>
public sealed record TensorToWrite(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data)
{
    /// <summary>A float32 tensor.</summary>
    public static TensorToWrite F32(string name, long[] shape, float[] values) =>
        new(name, DType.F32, shape, System.Runtime.InteropServices.MemoryMarshal.AsBytes(values.AsSpan()).ToArray());
}

/// <summary>Writes safetensors files in canonical layout: tensors sorted by name, data offsets
/// contiguous from 0, header padded with spaces to a multiple of 8 bytes (what Python's
/// safetensors library writes and accepts). The file appears atomically (temp file + rename).</summary>
public static class SafetensorsWriter
{
    /// <summary>Writes <paramref name="tensors"/> (and optional string metadata) to <paramref name="path"/>.</summary>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var sorted = tensors.OrderBy(t => t.Name, StringComparer.Ordinal).ToList();
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in sorted)
        {
            if (!names.Add(t.Name)) throw new ArgumentException($"duplicate tensor name '{t.Name}'", nameof(tensors));
            long elements = 1;
            foreach (var d in t.Shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{t.Name}': negative dimension {d}", nameof(tensors));
                elements = checked(elements * d);
            }
            if (checked(elements * DTypes.SizeOf(t.DType)) != t.Data.Length)
                throw new ArgumentException($"tensor '{t.Name}': {t.Data.Length} bytes given, shape [{string.Join(", ", t.Shape)}] of {t.DType} needs {elements * DTypes.SizeOf(t.DType)}", nameof(tensors));
        }

        using var headerStream = new MemoryStream();
        using (var json = new Utf8JsonWriter(headerStream))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (k, v) in metadata.OrderBy(p => p.Key, StringComparer.Ordinal)) json.WriteString(k, v);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in sorted)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", DTypes.Name(t.DType));
                json.WriteStartArray("shape");
                foreach (var d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                json.WriteNumberValue(offset + t.Data.Length);
                json.WriteEndArray();
                json.WriteEndObject();
                offset += t.Data.Length;
            }
            json.WriteEndObject();
        }
        var header = headerStream.ToArray().ToList();
        while (header.Count % 8 != 0) header.Add((byte)' ');

        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> length = stackalloc byte[8];
                System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Count);
                file.Write(length);
                file.Write(header.ToArray());
                foreach (var t in sorted) file.Write(t.Data.Span);
                file.Flush(flushToDisk: true);
            }
            File.Move(temp, path, overwrite: true);
        }
        catch
        {
            try { File.Delete(temp); } catch (IOException) { }
            throw;
        }
    }
}
