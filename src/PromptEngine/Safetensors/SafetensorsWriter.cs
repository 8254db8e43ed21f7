using System.Buffers;
using System.Buffers.Binary;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace PromptEngine.Safetensors;

/// <summary>One tensor to be written: raw little-endian bytes of <paramref name="DType"/> in row-major order.</summary>
public sealed record TensorToWrite(string Name, DType DType, long[] Shape, ReadOnlyMemory<byte> Data)
{
    /// <summary>A float32 tensor.</summary>
    public static TensorToWrite F32(string name, long[] shape, float[] values) =>
        new(name, DType.F32, shape, ToLittleEndianBytes(values));

    /// <summary>An F16 tensor from floats, rounded to nearest even.</summary>
    public static TensorToWrite F16(string name, long[] shape, float[] values) =>
        Raw16(name, DType.F16, shape, Narrow(values, HalfConversions.FloatToF16));

    /// <summary>A BF16 tensor from floats, rounded to nearest even.</summary>
    public static TensorToWrite BF16(string name, long[] shape, float[] values) =>
        Raw16(name, DType.BF16, shape, Narrow(values, HalfConversions.FloatToBF16));

    /// <summary>An F16 or BF16 tensor from its 16-bit patterns, unconverted.</summary>
    public static TensorToWrite Raw16(string name, DType dtype, long[] shape, ushort[] bits)
    {
        if (dtype is not (DType.F16 or DType.BF16))
            throw new ArgumentException($"tensor '{name}': {dtype} is not a 16-bit float type", nameof(dtype));
        return new(name, dtype, shape, ToLittleEndianBytes(bits));
    }

    /// <summary>A tensor of any fixed-size element type whose values are given as their in-memory
    /// representation (e.g. <c>long[]</c> for I64, <c>byte[]</c> for U8 or BOOL).</summary>
    public static TensorToWrite Of<T>(string name, DType dtype, long[] shape, T[] values) where T : unmanaged
    {
        if (Unsafe.SizeOf<T>() != DTypes.SizeOf(dtype))
            throw new ArgumentException($"tensor '{name}': {typeof(T).Name} has {Unsafe.SizeOf<T>()} bytes but {dtype} has {DTypes.SizeOf(dtype)}", nameof(values));
        return new(name, dtype, shape, ToLittleEndianBytes(values));
    }

    private static ushort[] Narrow(float[] values, Func<float, ushort> convert) => Array.ConvertAll(values, v => convert(v));

    private static byte[] ToLittleEndianBytes<T>(T[] values) where T : unmanaged
    {
        var bytes = MemoryMarshal.AsBytes(values.AsSpan()).ToArray();
        if (!BitConverter.IsLittleEndian && Unsafe.SizeOf<T>() > 1)
        {
            int size = Unsafe.SizeOf<T>();
            for (int i = 0; i < bytes.Length; i += size) bytes.AsSpan(i, size).Reverse();
        }
        return bytes;
    }
}

/// <summary>Writes safetensors files in the canonical layout of Python's safetensors: header entries and
/// data ordered by element size descending (I64, F64, F32, I32, BF16, F16, I16, I8, U8, BOOL — the
/// Rust crate's dtype order reversed), then by name; data offsets contiguous from 0; the JSON header
/// compact and padded with spaces to a multiple of 8 bytes. Larger elements first plus the 8-byte
/// padding leave every tensor naturally aligned in the file, so zero-copy readers can map it directly.
/// The file appears atomically (temp file + rename), so a crash mid-write never leaves a truncated
/// file under the final name.</summary>
public static class SafetensorsWriter
{
    /// <summary>Non-ASCII names and metadata stay readable UTF-8 rather than \u escapes; the header is
    /// never embedded in HTML, so the default encoder's HTML-safety escaping buys nothing.</summary>
    private static readonly JsonWriterOptions JsonOptions = new() { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>Writes <paramref name="tensors"/> (and optional string metadata) to <paramref name="path"/>.</summary>
    /// <param name="path">The file.</param>
    /// <param name="tensors">The tensors.</param>
    /// <param name="metadata">String metadata; a stale <see cref="SafetensorsFile.IntegrityKey"/> in it is dropped.</param>
    /// <param name="integrityHash">Add <see cref="SafetensorsFile.IntegrityKey"/>, a SHA-256 of the tensors and the other
    /// metadata, which <see cref="SafetensorsFile.VerifyIntegrity"/> checks.</param>
    /// <exception cref="ArgumentException">A duplicate or reserved name, a negative dimension, an unknown dtype,
    /// or data whose length disagrees with shape × dtype size.</exception>
    public static void Write(string path, IEnumerable<TensorToWrite> tensors, IReadOnlyDictionary<string, string>? metadata = null, bool integrityHash = false)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var sorted = tensors.ToList();
        Validate(sorted, metadata);
        sorted = sorted.OrderBy(t => LayoutRank(t.DType)).ThenBy(t => t.Name, StringComparer.Ordinal).ToList();
        if (integrityHash || metadata?.ContainsKey(SafetensorsFile.IntegrityKey) == true)
        {
            var withHash = metadata is null ? new Dictionary<string, string>(StringComparer.Ordinal) : new Dictionary<string, string>(metadata, StringComparer.Ordinal);
            withHash.Remove(SafetensorsFile.IntegrityKey);
            if (integrityHash)
            {
                using var digest = new IntegrityDigest();
                foreach (var t in sorted.OrderBy(t => t.Name, StringComparer.Ordinal))
                {
                    digest.Tensor(t.Name, t.DType, t.Shape);
                    digest.Bytes(t.Data.Span);
                }
                digest.Metadata(withHash);
                withHash[SafetensorsFile.IntegrityKey] = digest.Finish();
            }
            metadata = withHash;
        }
        var header = EncodeHeader(sorted, metadata);

        var directory = Path.GetDirectoryName(Path.GetFullPath(path))!;
        Directory.CreateDirectory(directory);
        var temp = Path.Combine(directory, $".{Path.GetFileName(path)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            using (var file = new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
            {
                Span<byte> length = stackalloc byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)header.Length);
                file.Write(length);
                file.Write(header);
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

    /// <summary>Position in the canonical layout: Python's safetensors sorts by its Rust dtype enum
    /// (BOOL, U8, I8, I16, F16, BF16, I32, F32, F64, I64 for the types here), descending.</summary>
    internal static int LayoutRank(DType dtype) => dtype switch
    {
        DType.I64 => 0,
        DType.F64 => 1,
        DType.F32 => 2,
        DType.I32 => 3,
        DType.BF16 => 4,
        DType.F16 => 5,
        DType.I16 => 6,
        DType.I8 => 7,
        DType.U8 => 8,
        DType.BOOL => 9,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, null),
    };

    private static void Validate(List<TensorToWrite> sorted, IReadOnlyDictionary<string, string>? metadata)
    {
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var t in sorted)
        {
            ArgumentNullException.ThrowIfNull(t, "tensors[]");
            if (t.Name is null) throw new ArgumentException("a tensor has a null name", "tensors");
            if (t.Name == SafetensorsHeader.MetadataKey) throw new ArgumentException($"'{t.Name}' is reserved for metadata and cannot name a tensor", "tensors");
            if (!names.Add(t.Name)) throw new ArgumentException($"duplicate tensor name '{t.Name}'", "tensors");
            if (!Enum.IsDefined(t.DType)) throw new ArgumentException($"tensor '{t.Name}': unknown dtype {(int)t.DType}", "tensors");
            if (t.Shape is null) throw new ArgumentException($"tensor '{t.Name}': null shape", "tensors");
            long elements = 1;
            foreach (var d in t.Shape)
            {
                if (d < 0) throw new ArgumentException($"tensor '{t.Name}': negative dimension {d}", "tensors");
                elements = checked(elements * d);
            }
            long needed = checked(elements * DTypes.SizeOf(t.DType));
            if (needed != t.Data.Length)
                throw new ArgumentException($"tensor '{t.Name}': {t.Data.Length} bytes given, shape [{string.Join(", ", t.Shape)}] of {t.DType} needs {needed}", "tensors");
        }
        if (metadata is null) return;
        foreach (var (key, value) in metadata)
        {
            if (key is null || value is null) throw new ArgumentException($"metadata entry '{key}' has a null key or value", nameof(metadata));
        }
    }

    /// <summary>The JSON header, space-padded to a multiple of 8 so the data section starts aligned.</summary>
    private static byte[] EncodeHeader(List<TensorToWrite> sorted, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer, JsonOptions))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject(SafetensorsHeader.MetadataKey);
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
        int padded = (buffer.WrittenCount + 7) / 8 * 8;
        if (padded > SafetensorsHeader.MaxHeaderBytes)
            throw new ArgumentException($"the header would have {padded} bytes, over the {SafetensorsHeader.MaxHeaderBytes}-byte limit readers enforce", "tensors");
        var header = new byte[padded];
        buffer.WrittenSpan.CopyTo(header);
        header.AsSpan(buffer.WrittenCount).Fill((byte)' ');
        return header;
    }
}
