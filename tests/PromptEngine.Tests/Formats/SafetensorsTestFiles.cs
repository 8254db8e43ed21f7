using System.Buffers.Binary;
using System.Text;

namespace PromptEngine.Tests.Formats;

/// <summary>A per-test temporary folder and builders for hand-made (often broken) safetensors files.</summary>
public sealed class SafetensorsTestFiles : IDisposable
{
    public SafetensorsTestFiles()
    {
        Folder = Path.Combine(Path.GetTempPath(), $"pe-st-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Folder);
    }

    public string Folder { get; }

    public string PathOf(string fileName) => Path.Combine(Folder, fileName);

    /// <summary>Writes [u64 header length][header][data]; the length is the header's unless overridden.</summary>
    public string WriteRaw(string fileName, string headerJson, byte[]? data = null, ulong? headerLengthOverride = null)
    {
        var header = Encoding.UTF8.GetBytes(headerJson);
        return WriteRaw(fileName, header, data ?? [], headerLengthOverride);
    }

    public string WriteRaw(string fileName, byte[] header, byte[] data, ulong? headerLengthOverride = null)
    {
        var bytes = new byte[8 + header.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, headerLengthOverride ?? (ulong)header.Length);
        header.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + header.Length);
        var path = PathOf(fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public string WriteBytes(string fileName, byte[] bytes)
    {
        var path = PathOf(fileName);
        File.WriteAllBytes(path, bytes);
        return path;
    }

    public static byte[] Sequence(int length, int seed = 1)
    {
        var bytes = new byte[length];
        new Random(seed).NextBytes(bytes);
        return bytes;
    }

    public void Dispose()
    {
        try { Directory.Delete(Folder, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
