using System.Security.Cryptography;
using System.Text;

namespace PromptEngine.Safetensors;

/// <summary>The digest behind <see cref="SafetensorsFile.IntegrityKey"/>: SHA-256 over every tensor (by name, ordinal:
/// name, dtype, shape, raw bytes) and every other metadata entry (by key: key, value), so that a changed value, a
/// renamed or reshaped tensor and an edited metadata field (a checkpoint's step, say) are all caught. Writer and reader
/// feed it the same fields in the same order; the file's own layout (header spacing, data order) does not enter.</summary>
internal sealed class IntegrityDigest : IDisposable
{
    readonly IncrementalHash hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);

    public IntegrityDigest() => Text("promptengine-integrity-v1");

    /// <summary>A tensor's name, dtype and shape; its bytes follow through <see cref="Bytes"/>.</summary>
    public void Tensor(string name, DType dtype, long[] shape)
    {
        Text("tensor");
        Text(name);
        Text(DTypes.Name(dtype));
        Text(string.Join(",", shape));
    }

    public void Bytes(ReadOnlySpan<byte> data) => hash.AppendData(data);

    /// <summary>The metadata entries other than the digest itself, by key (ordinal).</summary>
    public void Metadata(IReadOnlyDictionary<string, string>? metadata)
    {
        if (metadata is null) return;
        foreach (var (key, value) in metadata.Where(kv => kv.Key != SafetensorsFile.IntegrityKey).OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            Text("metadata");
            Text(key);
            Text(value);
        }
    }

    public string Finish() => Convert.ToHexStringLower(hash.GetHashAndReset());

    void Text(string text)
    {
        // Length-prefixed, so that no two different sequences of fields give the same bytes.
        var bytes = Encoding.UTF8.GetBytes(text);
        Span<byte> length = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(length, bytes.Length);
        hash.AppendData(length);
        hash.AppendData(bytes);
    }

    public void Dispose() => hash.Dispose();
}
