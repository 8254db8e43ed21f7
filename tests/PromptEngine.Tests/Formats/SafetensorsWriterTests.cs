using System.Buffers.Binary;
using System.Text;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

public class SafetensorsWriterTests
{
    [Test]
    public void WritesCanonicalHeaderPaddedToEightBytes()
    {
        var path = Path.Combine(Path.GetTempPath(), $"pe-{Guid.NewGuid():N}.safetensors");
        try
        {
            SafetensorsWriter.Write(path, new[]
            {
                TensorToWrite.F32("b", new long[] { 2 }, new[] { 1f, 2f }),
                TensorToWrite.F32("a", new long[] { 1, 1 }, new[] { 3f }),
            });
            var bytes = File.ReadAllBytes(path);
            var headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
            Assert.That(headerLength % 8, Is.EqualTo(0));
            var header = Encoding.UTF8.GetString(bytes, 8, (int)headerLength).TrimEnd(' ');
            Assert.That(header, Is.EqualTo("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}"));
            Assert.That(bytes.Length, Is.EqualTo(8 + headerLength + 12));
            Assert.That(BitConverter.ToSingle(bytes, (int)(8 + headerLength)), Is.EqualTo(3f));
        }
        finally { File.Delete(path); }
    }
}
