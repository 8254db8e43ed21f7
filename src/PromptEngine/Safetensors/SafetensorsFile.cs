using System.Buffers.Binary;
using System.IO.MemoryMappedFiles;
using System.Runtime.InteropServices;

namespace PromptEngine.Safetensors;

/// <summary>One safetensors file, memory-mapped read-only. <see cref="Open"/> validates the whole header
/// against the file size before anything is mapped, so every later read stays inside the file.
/// Layout: u64 little-endian header length N, N bytes of UTF-8 JSON, then the data section.
/// Reads are thread-safe with each other, not with <see cref="Dispose"/>. Like every memory-mapped
/// reader, it trusts the file not to shrink while open: another process truncating it would make a
/// later read fault (SIGBUS) rather than throw.</summary>
public sealed unsafe class SafetensorsFile : IDisposable
{
    private readonly MemoryMappedFile _map;
    private readonly MemoryMappedViewAccessor _view;
    private readonly Dictionary<string, TensorInfo> _byName;
    private readonly long _dataLength;
    private byte* _data;

    private SafetensorsFile(string path, SafetensorsHeader.Parsed header, MemoryMappedFile map, MemoryMappedViewAccessor view, long dataOffset, long dataLength)
    {
        Path = path;
        Metadata = header.Metadata;
        Tensors = header.TensorsByName;
        _byName = header.TensorsByName.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _map = map;
        _view = view;
        _dataLength = dataLength;
        byte* basePointer = null;
        view.SafeMemoryMappedViewHandle.AcquirePointer(ref basePointer);
        _data = basePointer + view.PointerOffset + dataOffset;
    }

    /// <summary>Largest JSON header accepted (100 MB, as in the Rust safetensors crate).</summary>
    public const long MaxHeaderBytes = SafetensorsHeader.MaxHeaderBytes;

    /// <summary>The path the file was opened with.</summary>
    public string Path { get; }

    /// <summary>The header's <c>__metadata__</c> (empty when absent).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>All tensors, sorted by name (ordinal).</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>The metadata key of the integrity hash our own files carry: lower-case hex SHA-256 of every tensor's name,
    /// dtype, shape and bytes and of the other metadata entries. Files written by other tools have none.</summary>
    public const string IntegrityKey = "integrity_sha256";

    /// <summary>Checks the tensors and metadata against <see cref="IntegrityKey"/> when the metadata has one (files written
    /// by other tools, such as PEFT, have none and pass unchecked).</summary>
    /// <returns>True when a hash was present and matched; false when there was none.</returns>
    /// <exception cref="SafetensorsException">The file does not match its hash: it was changed or damaged after it was written.</exception>
    public bool VerifyIntegrity()
    {
        if (!Metadata.TryGetValue(IntegrityKey, out var recorded)) return false;
        ObjectDisposedException.ThrowIf(_data == null, this);
        using var digest = new IntegrityDigest();
        const int Chunk = 1 << 30;
        foreach (var t in Tensors) // sorted by name (ordinal)
        {
            digest.Tensor(t.Name, t.DType, t.Shape);
            for (long done = 0; done < t.ByteLength; done += Chunk)
                digest.Bytes(new ReadOnlySpan<byte>(_data + t.DataStart + done, (int)Math.Min(Chunk, t.ByteLength - done)));
        }
        digest.Metadata(Metadata);
        if (!string.Equals(digest.Finish(), recorded, StringComparison.OrdinalIgnoreCase))
            throw new SafetensorsException(Path, null, $"the file does not match its integrity hash ({IntegrityKey}); it was damaged or changed after it was written");
        return true;
    }

    /// <summary>Opens, validates and maps <paramref name="path"/>.</summary>
    /// <exception cref="SafetensorsException">The file cannot be opened or is not a valid safetensors file.</exception>
    public static SafetensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        FileStream stream;
        try
        {
            stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new SafetensorsException(path, null, $"cannot open: {e.Message}", e);
        }

        MemoryMappedFile? map = null;
        MemoryMappedViewAccessor? view = null;
        try
        {
            long fileLength = stream.Length;
            if (fileLength < 8)
                throw new SafetensorsException(path, null, $"the file has {fileLength} bytes, fewer than the 8-byte header length");
            Span<byte> prefix = stackalloc byte[8];
            ReadExactly(stream, 0, prefix);
            ulong headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > (ulong)SafetensorsHeader.MaxHeaderBytes)
                throw new SafetensorsException(path, null, $"the header length {headerLength} exceeds the {SafetensorsHeader.MaxHeaderBytes}-byte limit");
            if (headerLength > (ulong)(fileLength - 8))
                throw new SafetensorsException(path, null, $"the header length {headerLength} runs past the end of the {fileLength}-byte file");

            var headerBytes = new byte[headerLength];
            ReadExactly(stream, 8, headerBytes);
            long dataOffset = 8 + (long)headerLength;
            long dataLength = fileLength - dataOffset;
            var header = SafetensorsHeader.Parse(path, headerBytes, dataLength);

            map = MemoryMappedFile.CreateFromFile(stream, mapName: null, capacity: 0, MemoryMappedFileAccess.Read, HandleInheritability.None, leaveOpen: false);
            view = map.CreateViewAccessor(0, fileLength, MemoryMappedFileAccess.Read);
            return new SafetensorsFile(path, header, map, view, dataOffset, dataLength);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            view?.Dispose();
            if (map is null) stream.Dispose(); else map.Dispose();
            throw new SafetensorsException(path, null, $"cannot read: {e.Message}", e);
        }
        catch
        {
            view?.Dispose();
            if (map is null) stream.Dispose(); else map.Dispose();
            throw;
        }
    }

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetTensor(string name, out TensorInfo info) => _byName.TryGetValue(name, out info!);

    /// <summary>Looks a tensor up by name.</summary>
    /// <exception cref="SafetensorsException">No tensor has that name; the message names file and tensor.</exception>
    public TensorInfo GetTensor(string name) =>
        _byName.TryGetValue(name, out var info) ? info : throw new SafetensorsException(Path, name, "no such tensor in the file");

    /// <summary>Copies a tensor's raw little-endian bytes; <paramref name="destination"/> must hold exactly
    /// <see cref="TensorInfo.ByteLength"/> bytes.</summary>
    public void ReadBytes(TensorInfo t, Span<byte> destination)
    {
        var own = Resolve(t);
        if (destination.Length != own.ByteLength)
            throw new ArgumentException($"{Where(own)}: destination has {destination.Length} bytes, the tensor has {own.ByteLength}", nameof(destination));
        CopyOut(own.DataStart, destination);
    }

    /// <summary>Copies part of a tensor's raw bytes, starting <paramref name="byteOffset"/> bytes into it;
    /// for tensors too large for one span.</summary>
    public void ReadBytes(TensorInfo t, long byteOffset, Span<byte> destination)
    {
        var own = Resolve(t);
        if (byteOffset < 0 || byteOffset > own.ByteLength || destination.Length > own.ByteLength - byteOffset)
            throw new ArgumentOutOfRangeException(nameof(byteOffset), $"{Where(own)}: bytes [{byteOffset}, {byteOffset + destination.Length}) are not inside its {own.ByteLength} bytes");
        CopyOut(own.DataStart + byteOffset, destination);
    }

    /// <summary>A tensor's raw little-endian bytes, any dtype.</summary>
    public byte[] ReadBytes(string name)
    {
        var info = GetTensor(name);
        var result = new byte[CheckedArrayLength(info, info.ByteLength)];
        CopyOut(info.DataStart, result);
        return result;
    }

    /// <summary>An F32, F16 or BF16 tensor as floats (16-bit types widened exactly).</summary>
    /// <exception cref="SafetensorsException">No such tensor, another dtype, or too many elements for one array.</exception>
    public float[] ReadF32(string name)
    {
        var info = GetTensor(name);
        RequireFloat(info);
        var result = new float[CheckedArrayLength(info, info.ElementCount)];
        ReadF32(info, result);
        return result;
    }

    /// <summary>An F32, F16 or BF16 tensor into <paramref name="destination"/>, which must hold exactly
    /// <see cref="TensorInfo.ElementCount"/> floats.</summary>
    public void ReadF32(string name, Span<float> destination)
    {
        var info = GetTensor(name);
        RequireFloat(info);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"{Where(info)}: destination has {destination.Length} floats, the tensor has {info.ElementCount}", nameof(destination));
        ReadF32(info, destination);
    }

    /// <summary>An F16 or BF16 tensor's 16-bit values unconverted, for upload to a device that widens them itself.</summary>
    /// <exception cref="SafetensorsException">No such tensor, another dtype, or too many elements for one array.</exception>
    public ushort[] ReadRaw16(string name)
    {
        var info = GetTensor(name);
        RequireRaw16(info);
        var result = new ushort[CheckedArrayLength(info, info.ElementCount)];
        CopyRaw16(info.DataStart, result);
        return result;
    }

    /// <summary>An F16 or BF16 tensor's 16-bit values into <paramref name="destination"/> (exactly
    /// <see cref="TensorInfo.ElementCount"/> long).</summary>
    public void ReadRaw16(string name, Span<ushort> destination)
    {
        var info = GetTensor(name);
        RequireRaw16(info);
        if (destination.Length != info.ElementCount)
            throw new ArgumentException($"{Where(info)}: destination has {destination.Length} values, the tensor has {info.ElementCount}", nameof(destination));
        CopyRaw16(info.DataStart, destination);
    }

    /// <summary>Unmaps the file.</summary>
    public void Dispose()
    {
        if (_data == null) return;
        _data = null;
        _view.SafeMemoryMappedViewHandle.ReleasePointer();
        _view.Dispose();
        _map.Dispose();
    }

    private void ReadF32(TensorInfo info, Span<float> destination)
    {
        switch (info.DType)
        {
            case DType.F32:
                CopyOut(info.DataStart, MemoryMarshal.AsBytes(destination));
                if (!BitConverter.IsLittleEndian)
                {
                    var asBits = MemoryMarshal.Cast<float, uint>(destination);
                    BinaryPrimitives.ReverseEndianness(asBits, asBits);
                }
                break;
            case DType.F16:
            case DType.BF16:
                // Stage through a small aligned buffer: the mapped bytes need not be 2-byte aligned.
                Span<ushort> chunk = stackalloc ushort[4096];
                long offset = info.DataStart;
                for (int done = 0; done < destination.Length; done += chunk.Length)
                {
                    var bits = chunk[..Math.Min(chunk.Length, destination.Length - done)];
                    CopyRaw16(offset, bits);
                    offset += 2L * bits.Length;
                    if (info.DType == DType.F16) HalfConversions.F16ToFloat(bits, destination.Slice(done, bits.Length));
                    else HalfConversions.BF16ToFloat(bits, destination.Slice(done, bits.Length));
                }
                break;
        }
    }

    private void CopyRaw16(long dataStart, Span<ushort> destination)
    {
        CopyOut(dataStart, MemoryMarshal.AsBytes(destination));
        if (!BitConverter.IsLittleEndian) BinaryPrimitives.ReverseEndianness(destination, destination);
    }

    /// <summary>The only place mapped memory is touched; offsets were validated at open, this re-checks
    /// them so that a hand-built <see cref="TensorInfo"/> can never reach outside the mapping.</summary>
    private void CopyOut(long dataStart, Span<byte> destination)
    {
        ObjectDisposedException.ThrowIf(_data == null, this);
        if (dataStart < 0 || dataStart > _dataLength || destination.Length > _dataLength - dataStart)
            throw new ArgumentOutOfRangeException(nameof(dataStart), $"'{Path}': bytes [{dataStart}, {dataStart + destination.Length}) lie outside the {_dataLength}-byte data section");
        new ReadOnlySpan<byte>(_data + dataStart, destination.Length).CopyTo(destination);
    }

    /// <summary>The file's own entry for <paramref name="t"/>, which must describe the same bytes.</summary>
    private TensorInfo Resolve(TensorInfo t)
    {
        ArgumentNullException.ThrowIfNull(t);
        var own = GetTensor(t.Name);
        if (!ReferenceEquals(own, t) && (own.DType != t.DType || own.DataStart != t.DataStart || own.DataEnd != t.DataEnd))
            throw new ArgumentException($"{Where(own)}: the TensorInfo given ({t.DType} at [{t.DataStart}, {t.DataEnd}]) is not this file's ({own.DType} at [{own.DataStart}, {own.DataEnd}])", nameof(t));
        return own;
    }

    private void RequireFloat(TensorInfo info)
    {
        if (info.DType is not (DType.F32 or DType.F16 or DType.BF16))
            throw new SafetensorsException(Path, info.Name, $"dtype {info.DType} cannot be read as floats (only F32, F16 and BF16 can)");
    }

    private void RequireRaw16(TensorInfo info)
    {
        if (info.DType is not (DType.F16 or DType.BF16))
            throw new SafetensorsException(Path, info.Name, $"dtype {info.DType} is not a 16-bit float type (F16 or BF16)");
    }

    private int CheckedArrayLength(TensorInfo info, long count) =>
        count <= Array.MaxLength
            ? (int)count
            : throw new SafetensorsException(Path, info.Name, $"{count} elements are too many for one array; read it in parts with ReadBytes(info, offset, span)");

    private string Where(TensorInfo info) => $"safetensors file '{Path}', tensor '{info.Name}'";

    private static void ReadExactly(FileStream stream, long offset, Span<byte> buffer)
    {
        while (!buffer.IsEmpty)
        {
            int read = RandomAccess.Read(stream.SafeFileHandle, buffer, offset);
            if (read == 0) throw new EndOfStreamException($"the file ended at byte {offset}");
            buffer = buffer[read..];
            offset += read;
        }
    }
}
