using System.Text;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

/// <summary>Each broken or hostile layout on its own: opening must throw <see cref="SafetensorsException"/>
/// (that exact type) whose message names the file and, where one is involved, the tensor.</summary>
public class SafetensorsHostileFileTests
{
    private SafetensorsTestFiles _files = null!;

    [SetUp] public void SetUp() => _files = new SafetensorsTestFiles();
    [TearDown] public void TearDown() => _files.Dispose();

    private static string Entry(string name, string dtype, string shape, string offsets) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":{offsets}}}";

    /// <summary>Opens <paramref name="path"/>, expecting rejection naming the file, the tensor and the detail.</summary>
    private static SafetensorsException AssertRejected(string path, string? tensor, string detailFragment)
    {
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path).Dispose())!;
        Assert.That(e.FilePath, Is.EqualTo(path));
        Assert.That(e.Message, Does.Contain(path), "message names the file");
        Assert.That(e.TensorName, Is.EqualTo(tensor));
        if (tensor is not null) Assert.That(e.Message, Does.Contain($"'{tensor}'"), "message names the tensor");
        Assert.That(e.Message, Does.Contain(detailFragment).IgnoreCase);
        // The model API reports the same file.
        var viaModel = Assert.Throws<SafetensorsException>(() => SafetensorsModel.Open(path).Dispose())!;
        Assert.That(viaModel.Message, Is.EqualTo(e.Message));
        return e;
    }

    [TestCase(0)]
    [TestCase(1)]
    [TestCase(7)]
    public void FileShorterThanEightBytes(int length) =>
        AssertRejected(_files.WriteBytes("short.safetensors", new byte[length]), null, $"{length} bytes");

    [Test]
    public void HeaderLengthPastEndOfFile() =>
        AssertRejected(_files.WriteRaw("past.safetensors", "{}", [], headerLengthOverride: 3), null, "runs past the end");

    [TestCase(100_000_001UL)]
    [TestCase(ulong.MaxValue)]
    [TestCase(1UL << 63)]
    public void HeaderLengthOverTheCap(ulong length) =>
        AssertRejected(_files.WriteRaw("huge.safetensors", "{}", [], headerLengthOverride: length), null, "limit");

    [Test]
    public void HeaderLengthZero() =>
        AssertRejected(_files.WriteRaw("zero.safetensors", "{}", [], headerLengthOverride: 0), null, "start with '{'");

    [Test]
    public void HeaderNotUtf8()
    {
        var header = Encoding.UTF8.GetBytes("{\"a\xff\":{}}").ToArray();
        header[3] = 0xFF;
        AssertRejected(_files.WriteRaw("utf8.safetensors", header, []), null, "UTF-8");
    }

    [TestCase("{\"a\":", TestName = "InvalidJson_Truncated")]
    [TestCase("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0],}}", TestName = "InvalidJson_TrailingComma")]
    [TestCase("{/*c*/}", TestName = "InvalidJson_Comment")]
    [TestCase("{} x", TestName = "InvalidJson_TrailingGarbage")]
    [TestCase("{'a':1}", TestName = "InvalidJson_SingleQuotes")]
    public void HeaderNotValidJson(string header) =>
        AssertRejected(_files.WriteRaw("json.safetensors", header), null, "not valid JSON");

    [Test]
    public void HeaderNestedTooDeep() =>
        AssertRejected(_files.WriteRaw("deep.safetensors", "{\"a\":" + new string('[', 500) + new string(']', 500) + "}"), null, "not valid JSON");

    [TestCase("[]")]
    [TestCase("\"{}\"")]
    [TestCase("5")]
    [TestCase(" {}")]
    public void HeaderNotAnObject(string header) =>
        AssertRejected(_files.WriteRaw("notobject.safetensors", header), null, "does not start with '{'");

    [TestCase("5", "number")]
    [TestCase("[]", "array")]
    [TestCase("null", "null")]
    [TestCase("\"F32\"", "string")]
    public void EntryNotAnObject(string entry, string kind) =>
        AssertRejected(_files.WriteRaw("entry.safetensors", $"{{\"w\":{entry}}}"), "w", $"JSON {kind}, not an object");

    [TestCase("{\"shape\":[1],\"data_offsets\":[0,4]}", "no 'dtype'")]
    [TestCase("{\"dtype\":\"F32\",\"data_offsets\":[0,4]}", "no 'shape'")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1]}", "no 'data_offsets'")]
    public void EntryMissingField(string entry, string detail) =>
        AssertRejected(_files.WriteRaw("missing.safetensors", $"{{\"w\":{entry}}}", new byte[4]), "w", detail);

    [TestCase("{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}", "'dtype' is a JSON number")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":\"1\",\"data_offsets\":[0,4]}", "'shape' is a JSON string")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,4]}", "'shape' is a JSON object")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}", "shape[0] is a JSON string")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,4]}", "shape[0] is a JSON null")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":\"0,4\"}", "'data_offsets' must be an array of two")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}", "'data_offsets' must be an array of two")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,4]}", "'data_offsets' must be an array of two")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[\"0\",4]}", "data_offsets[0] is a JSON string")]
    [TestCase("{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,true]}", "data_offsets[1] is a JSON boolean")]
    public void EntryFieldWrongType(string entry, string detail) =>
        AssertRejected(_files.WriteRaw("wrongtype.safetensors", $"{{\"w\":{entry}}}", new byte[4]), "w", detail);

    [TestCase("F8_E4M3")]
    [TestCase("f32")]
    [TestCase("U16")]
    [TestCase("")]
    public void UnknownDType(string dtype) =>
        AssertRejected(_files.WriteRaw("dtype.safetensors", $"{{{Entry("w", dtype, "[1]", "[0,4]")}}}", new byte[4]), "w", $"unknown dtype '{dtype}'");

    [Test]
    public void NegativeDimension() =>
        AssertRejected(_files.WriteRaw("neg.safetensors", $"{{{Entry("w", "F32", "[2,-1]", "[0,4]")}}}", new byte[4]), "w", "shape[1] = -1 is negative");

    [TestCase("[2.0]")]
    [TestCase("[1.5]")]
    [TestCase("[1e2]")]
    public void NonIntegerDimension(string shape) =>
        AssertRejected(_files.WriteRaw("frac.safetensors", $"{{{Entry("w", "F32", shape, "[0,8]")}}}", new byte[8]), "w", "not an integer");

    [TestCase("[99999999999999999999]")]
    [TestCase("[9223372036854775808]")]
    public void DimensionOverflowsInt64(string shape) =>
        AssertRejected(_files.WriteRaw("bigdim.safetensors", $"{{{Entry("w", "F32", shape, "[0,4]")}}}", new byte[4]), "w", "fits in 64 bits");

    [TestCase("[4294967296,4294967296]", TestName = "ShapeProductOverflows")]
    [TestCase("[4611686018427387904]", TestName = "ShapeTimesDTypeSizeOverflows")]
    [TestCase("[3037000500,3037000500,0]", TestName = "ShapeProductOverflowsBeforeZero")]
    public void ShapeProductOverflows(string shape) =>
        AssertRejected(_files.WriteRaw("product.safetensors", $"{{{Entry("w", "F32", shape, "[0,4]")}}}", new byte[4]), "w", "more bytes than a 64-bit size");

    [Test]
    public void NegativeOffset() =>
        AssertRejected(_files.WriteRaw("negoff.safetensors", $"{{{Entry("w", "U8", "[4]", "[-4,0]")}}}", new byte[4]), "w", "data_offsets[0] = -4 is negative");

    [Test]
    public void NonIntegerOffset() =>
        AssertRejected(_files.WriteRaw("fracoff.safetensors", $"{{{Entry("w", "U8", "[4]", "[0,4.0]")}}}", new byte[4]), "w", "data_offsets[1] = 4.0 is not an integer");

    [Test]
    public void OverflowingOffset() =>
        AssertRejected(_files.WriteRaw("bigoff.safetensors", $"{{{Entry("w", "U8", "[4]", "[0,18446744073709551616]")}}}", new byte[4]), "w", "fits in 64 bits");

    [Test]
    public void BeginAfterEnd() =>
        AssertRejected(_files.WriteRaw("order.safetensors", $"{{{Entry("w", "U8", "[4]", "[4,0]")}}}", new byte[4]), "w", "begin after end");

    [Test]
    public void OffsetsPastDataSection() =>
        AssertRejected(_files.WriteRaw("pastdata.safetensors", $"{{{Entry("w", "F32", "[2]", "[0,8]")}}}", new byte[4]), "w", "run past the data section, which has 4 bytes");

    [Test]
    public void HugeOffsetsPastDataSection() =>
        AssertRejected(_files.WriteRaw("hugeoff.safetensors", $"{{{Entry("w", "U8", "[9223372036854775807]", "[0,9223372036854775807]")}}}", new byte[4]), "w", "run past the data section");

    [Test]
    public void SizeDisagreesWithShape() =>
        AssertRejected(_files.WriteRaw("size.safetensors", $"{{{Entry("w", "F32", "[3]", "[0,8]")}}}", new byte[8]), "w", "hold 8 bytes but shape [3] of F32 needs 12");

    [Test]
    public void ZeroSizeShapeWithBytes() =>
        AssertRejected(_files.WriteRaw("zerobytes.safetensors", $"{{{Entry("w", "F32", "[0,3]", "[0,4]")}}}", new byte[4]), "w", "needs 0");

    [Test]
    public void OverlappingRegions()
    {
        var header = $"{{{Entry("a", "F32", "[2]", "[0,8]")},{Entry("b", "F32", "[2]", "[4,12]")}}}";
        var e = AssertRejected(_files.WriteRaw("overlap.safetensors", header, new byte[12]), "b", "overlap");
        Assert.That(e.Message, Does.Contain("'a'"), "names the other tensor too");
    }

    [Test]
    public void TwoTensorsSharingTheSameBytes()
    {
        var header = $"{{{Entry("a", "F32", "[1]", "[0,4]")},{Entry("b", "I32", "[1]", "[0,4]")}}}";
        AssertRejected(_files.WriteRaw("alias.safetensors", header, new byte[4]), "b", "overlap");
    }

    [Test]
    public void GapBetweenRegions()
    {
        var header = $"{{{Entry("a", "F32", "[1]", "[0,4]")},{Entry("b", "F32", "[1]", "[8,12]")}}}";
        var e = AssertRejected(_files.WriteRaw("gap.safetensors", header, new byte[12]), "b", "gap of 4 unused bytes");
        Assert.That(e.Message, Does.Contain("'a'"));
    }

    [Test]
    public void GapAtStartOfData() =>
        AssertRejected(_files.WriteRaw("startgap.safetensors", $"{{{Entry("w", "F32", "[1]", "[4,8]")}}}", new byte[8]), "w", "gap of 4 unused bytes at the start");

    [Test]
    public void TrailingBytesAfterLastTensor() =>
        AssertRejected(_files.WriteRaw("trailing.safetensors", $"{{{Entry("w", "F32", "[1]", "[0,4]")}}}", new byte[5]), "w", "1 trailing bytes");

    [Test]
    public void DataButNoTensors() =>
        AssertRejected(_files.WriteRaw("notensors.safetensors", "{\"__metadata__\":{}}", new byte[3]), null, "names no tensor data but 3 bytes follow");

    [Test]
    public void DuplicateTensorName()
    {
        var header = $"{{{Entry("w", "F32", "[1]", "[0,4]")},{Entry("w", "F32", "[1]", "[4,8]")}}}";
        AssertRejected(_files.WriteRaw("dup.safetensors", header, new byte[8]), "w", "more than once");
    }

    [Test]
    public void DuplicateTensorNameWithSameEntry()
    {
        // Identical duplicates would pass a coverage check that ran on a deduplicated map.
        var header = $"{{{Entry("w", "F32", "[1]", "[0,4]")},{Entry("w", "F32", "[1]", "[0,4]")}}}";
        AssertRejected(_files.WriteRaw("dupsame.safetensors", header, new byte[4]), "w", "more than once");
    }

    [Test]
    public void DuplicateTensorNameSpelledWithEscapes()
    {
        // "w" and "\u0077" are the same JSON key.
        var header = $"{{{Entry("w", "F32", "[1]", "[0,4]")},{Entry("\\u0077", "F32", "[1]", "[4,8]")}}}";
        AssertRejected(_files.WriteRaw("dupesc.safetensors", header, new byte[8]), "w", "more than once");
    }

    [Test]
    public void DuplicateFieldInEntry() =>
        AssertRejected(_files.WriteRaw("dupfield.safetensors", "{\"w\":{\"dtype\":\"F32\",\"dtype\":\"I32\",\"shape\":[1],\"data_offsets\":[0,4]}}", new byte[4]), "w", "field 'dtype' appears more than once");

    [Test]
    public void DuplicateMetadataKey() =>
        AssertRejected(_files.WriteRaw("dupmeta.safetensors", "{\"__metadata__\":{},\"__metadata__\":{}}"), null, "'__metadata__' appears more than once");

    [Test]
    public void DuplicateKeyInsideMetadata() =>
        AssertRejected(_files.WriteRaw("dupmetakey.safetensors", "{\"__metadata__\":{\"k\":\"a\",\"k\":\"b\"}}"), null, "key 'k' appears more than once");

    [TestCase("{\"k\":1}", "number")]
    [TestCase("{\"k\":null}", "null")]
    [TestCase("{\"k\":{\"x\":\"y\"}}", "object")]
    [TestCase("{\"k\":[\"v\"]}", "array")]
    public void MetadataValueNotString(string metadata, string kind) =>
        AssertRejected(_files.WriteRaw("metaval.safetensors", $"{{\"__metadata__\":{metadata}}}"), null, $"key 'k' has a JSON {kind} value");

    [TestCase("[]")]
    [TestCase("\"pt\"")]
    [TestCase("null")]
    public void MetadataNotAnObject(string metadata) =>
        AssertRejected(_files.WriteRaw("metaobj.safetensors", $"{{\"__metadata__\":{metadata}}}"), null, "'__metadata__' is a JSON");

    [TestCase("{\"\\ud800\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}", TestName = "LoneSurrogateEscape_InTensorName")]
    [TestCase("{\"__metadata__\":{\"k\":\"\\udc00x\"}}", TestName = "LoneSurrogateEscape_InMetadataValue")]
    [TestCase("{\"w\":{\"dtype\":\"\\ud83d\",\"shape\":[],\"data_offsets\":[0,4]}}", TestName = "LoneSurrogateEscape_InDType")]
    public void LoneSurrogateEscape(string header)
    {
        // Valid UTF-8 bytes, but the escape names half a UTF-16 pair, which no .NET string can hold faithfully.
        var path = _files.WriteRaw("surrogate.safetensors", header, new byte[4]);
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path).Dispose())!;
        Assert.That(e.Message, Does.Contain(path));
    }

    [Test]
    public void MissingFile()
    {
        var path = _files.PathOf("nowhere.safetensors");
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("cannot open"));
        Assert.That(e.InnerException, Is.InstanceOf<FileNotFoundException>());
    }

    [Test]
    public void FolderInsteadOfFile()
    {
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsFile.Open(_files.Folder))!;
        Assert.That(e.Message, Does.Contain(_files.Folder));
    }
}
