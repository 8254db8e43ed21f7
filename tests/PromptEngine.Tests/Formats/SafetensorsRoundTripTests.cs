using System.Buffers.Binary;
using System.Text;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

/// <summary>Writer → reader round trips, and reads of hand-laid files whose bytes are known independently.</summary>
public class SafetensorsRoundTripTests
{
    private SafetensorsTestFiles _files = null!;

    [SetUp] public void SetUp() => _files = new SafetensorsTestFiles();
    [TearDown] public void TearDown() => _files.Dispose();

    [Test]
    public void EveryDTypeRoundTripsWithMetadata()
    {
        var path = _files.PathOf("all.safetensors");
        var tensors = new List<TensorToWrite>();
        int seed = 10;
        foreach (var dtype in Enum.GetValues<DType>())
        {
            long[] shape = [2, 3];
            tensors.Add(new TensorToWrite($"t.{dtype}", dtype, shape, SafetensorsTestFiles.Sequence(6 * DTypes.SizeOf(dtype), seed++)));
        }
        var metadata = new Dictionary<string, string> { ["format"] = "pt", ["note"] = "ünïcødé \"quoted\" \\ back", ["empty"] = "" };
        SafetensorsWriter.Write(path, tensors, metadata);

        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Path, Is.EqualTo(path));
        Assert.That(file.Metadata, Is.EquivalentTo(metadata));
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(tensors.Select(t => t.Name).Order(StringComparer.Ordinal)));
        foreach (var written in tensors)
        {
            var info = file.GetTensor(written.Name);
            Assert.That(info.DType, Is.EqualTo(written.DType));
            Assert.That(info.Shape, Is.EqualTo(written.Shape));
            Assert.That(info.ElementCount, Is.EqualTo(6));
            Assert.That(info.ByteLength, Is.EqualTo(written.Data.Length));
            var bytes = new byte[info.ByteLength];
            file.ReadBytes(info, bytes);
            Assert.That(bytes, Is.EqualTo(written.Data.ToArray()), written.Name);
            Assert.That(file.ReadBytes(written.Name), Is.EqualTo(written.Data.ToArray()));
            Assert.That(file.TryGetTensor(written.Name, out var same) && ReferenceEquals(same, info), Is.True);
        }
        // Canonical layout: 8-aligned header, larger elements first, every tensor naturally aligned.
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path));
        Assert.That(headerLength % 8, Is.EqualTo(0));
        var byOffset = file.Tensors.OrderBy(t => t.DataStart).ToList();
        Assert.That(byOffset.Select(t => DTypes.SizeOf(t.DType)), Is.Ordered.Descending);
        Assert.That(byOffset.All(t => (8 + headerLength + t.DataStart) % DTypes.SizeOf(t.DType) == 0), Is.True);
        Assert.That(byOffset[0].DataStart, Is.EqualTo(0));
        Assert.That(byOffset[^1].DataEnd, Is.EqualTo(new FileInfo(path).Length - 8 - headerLength));
    }

    [Test]
    public void FloatTensorsWidenFromKnownBitPatterns()
    {
        // F16 and BF16 patterns with their values by hand: 1, -2, subnormals, ±inf; NaN checked apart.
        ushort[] f16Bits = [0x3C00, 0xC000, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x8000, 0x7E00];
        float[] f16Values = [1f, -2f, 5.9604644775390625e-08f, 6.0975551605224609e-05f, float.PositiveInfinity, float.NegativeInfinity, -0f, float.NaN];
        ushort[] bf16Bits = [0x3F80, 0xC000, 0x0001, 0x4049, 0x7F80, 0xFF80, 0x8000, 0x7FC0];
        float[] bf16Values = [1f, -2f, 9.1835496157991212e-41f, 3.140625f, float.PositiveInfinity, float.NegativeInfinity, -0f, float.NaN];
        float[] f32Values = [1.5f, -0f, float.Epsilon, float.MaxValue, float.NegativeInfinity, 3.14159274f, -1e-30f, float.NaN];
        var path = _files.PathOf("floats.safetensors");
        SafetensorsWriter.Write(path,
        [
            TensorToWrite.Raw16("h", DType.F16, [2, 4], f16Bits),
            TensorToWrite.Raw16("b", DType.BF16, [8], bf16Bits),
            TensorToWrite.F32("f", [4, 2], f32Values),
        ]);

        using var model = SafetensorsModel.Open(path);
        AssertBitsEqual(model.ReadF32("h"), f16Values);
        AssertBitsEqual(model.ReadF32("b"), bf16Values);
        AssertBitsEqual(model.ReadF32("f"), f32Values);
        Assert.That(model.ReadRaw16("h"), Is.EqualTo(f16Bits));
        Assert.That(model.ReadRaw16("b"), Is.EqualTo(bf16Bits));
        var span = new float[8];
        model.ReadF32("h", span);
        AssertBitsEqual(span, f16Values);
        Assert.That(model.FileOf("h"), Is.EqualTo(path));
    }

    [Test]
    public void WriterNarrowsFloatsToF16AndBF16()
    {
        var path = _files.PathOf("narrow.safetensors");
        float[] values = [1f, -2f, 0.1f, 65504f, 1e6f];
        SafetensorsWriter.Write(path, [TensorToWrite.F16("h", [5], values), TensorToWrite.BF16("b", [5], values)]);
        using var file = SafetensorsFile.Open(path);
        // 0.1 → F16 0x2E66, BF16 0x3DCD; 1e6 overflows F16 to inf and is 0x4974 (999424) in BF16.
        Assert.That(file.ReadRaw16("h"), Is.EqualTo(new ushort[] { 0x3C00, 0xC000, 0x2E66, 0x7BFF, 0x7C00 }));
        Assert.That(file.ReadRaw16("b"), Is.EqualTo(new ushort[] { 0x3F80, 0xC000, 0x3DCD, 0x4780, 0x4974 }));
        Assert.That(file.ReadF32("b")[4], Is.EqualTo(999424f));
    }

    [Test]
    public void LongHalfTensorIsConvertedAcrossChunkBoundaries()
    {
        // Longer than the reader's 4096-element staging buffer, and with an odd header length so that the
        // data is not 2-byte aligned in the mapping.
        const int count = 10_007;
        var bits = new ushort[count];
        for (int i = 0; i < count; i++) bits[i] = (ushort)(i * 7919);
        var data = new byte[count * 2];
        for (int i = 0; i < count; i++) BinaryPrimitives.WriteUInt16LittleEndian(data.AsSpan(2 * i), bits[i]);
        var header = $"{{\"x\":{{\"dtype\":\"F16\",\"shape\":[{count}],\"data_offsets\":[0,{count * 2}]}}}}";
        if (Encoding.UTF8.GetByteCount(header) % 2 == 0) header += " ";
        var path = _files.WriteRaw("odd.safetensors", header, data);

        using var file = SafetensorsFile.Open(path);
        var floats = file.ReadF32("x");
        Assert.That(floats, Has.Length.EqualTo(count));
        for (int i = 0; i < count; i++)
        {
            var expected = SafetensorsHalfConversionTests.F16Reference(bits[i]);
            if (double.IsNaN(expected)) Assert.That(float.IsNaN(floats[i]), Is.True, $"element {i}");
            else Assert.That(floats[i], Is.EqualTo((float)expected), $"element {i}");
        }
        Assert.That(file.ReadRaw16("x"), Is.EqualTo(bits));
    }

    [Test]
    public void ZeroSizeAndScalarTensorsAreValid()
    {
        var path = _files.PathOf("zeros.safetensors");
        SafetensorsWriter.Write(path,
        [
            TensorToWrite.F32("empty", [0], []),
            TensorToWrite.F32("empty2d", [3, 0], []),
            new TensorToWrite("emptyI64", DType.I64, [0, 5], Array.Empty<byte>()),
            TensorToWrite.F32("scalar", [], [42f]),
            TensorToWrite.BF16("one", [1], [1f]),
        ]);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Tensors, Has.Count.EqualTo(5));
        Assert.That(file.ReadF32("empty"), Is.Empty);
        Assert.That(file.ReadF32("empty2d"), Is.Empty);
        Assert.That(file.GetTensor("empty2d").ElementCount, Is.EqualTo(0));
        Assert.That(file.ReadBytes("emptyI64"), Is.Empty);
        Assert.That(file.GetTensor("scalar").Shape, Is.Empty);
        Assert.That(file.GetTensor("scalar").ElementCount, Is.EqualTo(1));
        Assert.That(file.ReadF32("scalar"), Is.EqualTo(new[] { 42f }));
        Assert.That(file.ReadF32("one"), Is.EqualTo(new[] { 1f }));
    }

    [Test]
    public void FileOfOnlyZeroSizeTensorsAndEmptyFileAreValid()
    {
        var onlyEmpty = _files.PathOf("only-empty.safetensors");
        SafetensorsWriter.Write(onlyEmpty, [TensorToWrite.F32("a", [0, 4], []), TensorToWrite.F32("b", [0], [])]);
        using (var file = SafetensorsFile.Open(onlyEmpty))
        {
            Assert.That(file.Tensors.Select(t => (t.Name, t.DataStart, t.DataEnd)), Is.EqualTo(new[] { ("a", 0L, 0L), ("b", 0L, 0L) }));
        }

        var empty = _files.PathOf("empty.safetensors");
        SafetensorsWriter.Write(empty, []);
        // Python's safetensors writes exactly this for an empty dict: "{}" padded to 8 bytes.
        Assert.That(File.ReadAllBytes(empty), Is.EqualTo(new byte[] { 8, 0, 0, 0, 0, 0, 0, 0, (byte)'{', (byte)'}', 32, 32, 32, 32, 32, 32 }));
        using (var file = SafetensorsFile.Open(empty))
        {
            Assert.That(file.Tensors, Is.Empty);
            Assert.That(file.Metadata, Is.Empty);
        }
    }

    [Test]
    public void WriterBytesMatchPythonSafetensorsLayout()
    {
        // What safetensors.torch.save_file writes for {"attn0": arange(6).float().reshape(1,1,2,3)} and for
        // an empty dict with metadata {"framework": "pt"}: compact JSON, space padding to 8 bytes.
        var path = _files.PathOf("py.safetensors");
        SafetensorsWriter.Write(path, [TensorToWrite.F32("attn0", [1, 1, 2, 3], [0f, 1f, 2f, 3f, 4f, 5f])]);
        var bytes = File.ReadAllBytes(path);
        var expectedHeader = "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes), Is.EqualTo(72));
        Assert.That(Encoding.UTF8.GetString(bytes, 8, 72), Is.EqualTo(expectedHeader));
        Assert.That(bytes.Length, Is.EqualTo(8 + 72 + 24));
        Assert.That(BitConverter.ToSingle(bytes, 8 + 72 + 20), Is.EqualTo(5f));

        SafetensorsWriter.Write(path, [], new Dictionary<string, string> { ["framework"] = "pt" });
        bytes = File.ReadAllBytes(path);
        Assert.That(BinaryPrimitives.ReadUInt64LittleEndian(bytes), Is.EqualTo(40));
        Assert.That(Encoding.UTF8.GetString(bytes, 8, 40), Is.EqualTo("{\"__metadata__\":{\"framework\":\"pt\"}}     "));
    }

    [Test]
    public void ReaderAcceptsAnyEntryOrderAndUnpaddedHeader()
    {
        // Older writers ordered by name only or not at all; only exact coverage matters.
        var data = SafetensorsTestFiles.Sequence(4 + 8 + 2, 5);
        var header = "{\"z\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[12,14]},\"__metadata__\":{\"k\":\"v\"},"
                     + "\"a\":{\"data_offsets\":[4,12],\"shape\":[1],\"dtype\":\"I64\",\"extra\":true},\"m\":{\"dtype\":\"I32\",\"shape\":[],\"data_offsets\":[0,4]}}";
        var path = _files.WriteRaw("order.safetensors", header, data);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "a", "m", "z" }));
        Assert.That(file.Metadata["k"], Is.EqualTo("v"));
        Assert.That(file.ReadBytes("a"), Is.EqualTo(data[4..12]));
        Assert.That(file.ReadBytes("m"), Is.EqualTo(data[0..4]));
        Assert.That(file.ReadBytes("z"), Is.EqualTo(data[12..14]));
    }

    [Test]
    public void PartialReadsAndCallerErrors()
    {
        var path = _files.PathOf("p.safetensors");
        var values = Enumerable.Range(0, 10).Select(i => (float)i).ToArray();
        SafetensorsWriter.Write(path, [TensorToWrite.F32("w", [10], values), TensorToWrite.Of("ids", DType.I64, [2], new long[] { 7, -1 })]);
        using var file = SafetensorsFile.Open(path);
        var info = file.GetTensor("w");
        var part = new byte[8];
        file.ReadBytes(info, 12, part);
        Assert.That(BitConverter.ToSingle(part, 0), Is.EqualTo(3f));
        Assert.That(BitConverter.ToSingle(part, 4), Is.EqualTo(4f));
        Assert.That(BitConverter.ToInt64(file.ReadBytes("ids"), 8), Is.EqualTo(-1));

        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadBytes(info, 36, new byte[8]));
        Assert.Throws<ArgumentOutOfRangeException>(() => file.ReadBytes(info, -1, new byte[1]));
        Assert.Throws<ArgumentException>(() => file.ReadBytes(info, new byte[39]));
        Assert.Throws<ArgumentException>(() => file.ReadF32("w", new float[9]));
        // A forged TensorInfo cannot steer reads outside the tensor.
        var forged = info with { DataStart = 0, DataEnd = 1000 };
        Assert.Throws<ArgumentException>(() => file.ReadBytes(forged, new byte[1000]));

        var wrongType = Assert.Throws<SafetensorsException>(() => file.ReadF32("ids"))!;
        Assert.That(wrongType.Message, Does.Contain(path).And.Contain("'ids'").And.Contain("I64"));
        Assert.That(wrongType.TensorName, Is.EqualTo("ids"));
        var notHalf = Assert.Throws<SafetensorsException>(() => file.ReadRaw16("w"))!;
        Assert.That(notHalf.Message, Does.Contain(path).And.Contain("'w'"));
        var missing = Assert.Throws<SafetensorsException>(() => file.GetTensor("nope"))!;
        Assert.That(missing.Message, Does.Contain(path).And.Contain("'nope'"));
        Assert.That(missing.FilePath, Is.EqualTo(path));
        Assert.That(file.TryGetTensor("nope", out _), Is.False);
    }

    [Test]
    public void ReadAfterDisposeThrowsObjectDisposed()
    {
        var path = _files.PathOf("d.safetensors");
        SafetensorsWriter.Write(path, [TensorToWrite.F32("w", [1], [1f])]);
        var file = SafetensorsFile.Open(path);
        file.Dispose();
        file.Dispose();
        Assert.Throws<ObjectDisposedException>(() => file.ReadF32("w"));
    }

    [Test]
    public void WriterRejectsBadTensors()
    {
        var path = _files.PathOf("bad.safetensors");
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [TensorToWrite.F32("a", [1], [1f]), TensorToWrite.F32("a", [1], [2f])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [TensorToWrite.F32("__metadata__", [1], [1f])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [TensorToWrite.F32("a", [2], [1f])]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new TensorToWrite("a", DType.F32, [-1], Array.Empty<byte>())]));
        Assert.Throws<ArgumentException>(() => SafetensorsWriter.Write(path, [new TensorToWrite("a", (DType)99, [1], new byte[4])]));
        Assert.Throws<ArgumentException>(() => TensorToWrite.Of("a", DType.I64, [1], new int[] { 1 }));
        Assert.That(File.Exists(path), Is.False);
        Assert.That(Directory.GetFiles(_files.Folder), Is.Empty, "no temp file left behind");
    }

    [Test]
    public void WriterReplacesAnExistingFileWhole()
    {
        var path = _files.PathOf("replace.safetensors");
        SafetensorsWriter.Write(path, [TensorToWrite.F32("old", [1000], new float[1000])]);
        SafetensorsWriter.Write(path, [TensorToWrite.F32("new", [1], [7f])]);
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "new" }));
        Assert.That(file.ReadF32("new"), Is.EqualTo(new[] { 7f }));
        Assert.That(Directory.GetFiles(_files.Folder), Has.Length.EqualTo(1));
    }

    [Test]
    public void UnicodeNamesStayUtf8()
    {
        var path = _files.PathOf("u.safetensors");
        SafetensorsWriter.Write(path, [TensorToWrite.F32("слой.0<weight>+", [1], [1f])]);
        var header = Encoding.UTF8.GetString(File.ReadAllBytes(path), 8, (int)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(path)));
        Assert.That(header, Does.Contain("\"слой.0<weight>+\""));
        using var file = SafetensorsFile.Open(path);
        Assert.That(file.ReadF32("слой.0<weight>+"), Is.EqualTo(new[] { 1f }));
    }

    private static void AssertBitsEqual(float[] actual, float[] expected)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length));
        for (int i = 0; i < expected.Length; i++)
        {
            if (float.IsNaN(expected[i])) Assert.That(float.IsNaN(actual[i]), Is.True, $"element {i}");
            else Assert.That(BitConverter.SingleToUInt32Bits(actual[i]), Is.EqualTo(BitConverter.SingleToUInt32Bits(expected[i])), $"element {i}: {actual[i]:R} vs {expected[i]:R}");
        }
    }
}
