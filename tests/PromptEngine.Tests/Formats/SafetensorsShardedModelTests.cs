using System.Text.Json;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Formats;

/// <summary>Models in one file or sharded through model.safetensors.index.json, good and broken.</summary>
public class SafetensorsShardedModelTests
{
    private const string Shard1 = "model-00001-of-00002.safetensors";
    private const string Shard2 = "model-00002-of-00002.safetensors";

    private SafetensorsTestFiles _files = null!;

    [SetUp] public void SetUp() => _files = new SafetensorsTestFiles();
    [TearDown] public void TearDown() => _files.Dispose();

    private static float[] Values(int count, float start) => Enumerable.Range(0, count).Select(i => start + i).ToArray();

    /// <summary>Shard 1: embed (F32 [3,2]), norm (BF16 [2]); shard 2: head (F16 [2,2]).</summary>
    private void WriteShards()
    {
        SafetensorsWriter.Write(_files.PathOf(Shard1), [TensorToWrite.F32("embed", [3, 2], Values(6, 0)), TensorToWrite.BF16("norm", [2], [1f, -2f])]);
        SafetensorsWriter.Write(_files.PathOf(Shard2), [TensorToWrite.F16("head", [2, 2], Values(4, 10))]);
    }

    private string WriteIndex(object weightMap, string fileName = SafetensorsModel.IndexFileName)
    {
        var path = _files.PathOf(fileName);
        File.WriteAllText(path, JsonSerializer.Serialize(new Dictionary<string, object> { ["metadata"] = new { total_size = 44 }, ["weight_map"] = weightMap }));
        return path;
    }

    private static Dictionary<string, string> GoodMap() => new() { ["embed"] = Shard1, ["norm"] = Shard1, ["head"] = Shard2 };

    private SafetensorsException AssertRejected(string open, string file, string? tensor, string detailFragment)
    {
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsModel.Open(open).Dispose())!;
        Assert.That(e.FilePath, Is.EqualTo(file));
        Assert.That(e.Message, Does.Contain(file));
        Assert.That(e.TensorName, Is.EqualTo(tensor));
        if (tensor is not null) Assert.That(e.Message, Does.Contain($"'{tensor}'"));
        Assert.That(e.Message, Does.Contain(detailFragment));
        return e;
    }

    [Test]
    public void FolderWithIndexOpensAllShards()
    {
        WriteShards();
        WriteIndex(GoodMap());
        using var model = SafetensorsModel.Open(_files.Folder);
        Assert.That(model.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "embed", "head", "norm" }));
        Assert.That(model.Files, Has.Count.EqualTo(2));
        Assert.That(model.FileOf("embed"), Is.EqualTo(_files.PathOf(Shard1)));
        Assert.That(model.FileOf("head"), Is.EqualTo(_files.PathOf(Shard2)));
        Assert.That(model.ReadF32("embed"), Is.EqualTo(Values(6, 0)));
        Assert.That(model.ReadF32("head"), Is.EqualTo(Values(4, 10)));
        Assert.That(model.ReadF32("norm"), Is.EqualTo(new[] { 1f, -2f }));
        Assert.That(model.ReadRaw16("head"), Is.EqualTo(new ushort[] { 0x4900, 0x4980, 0x4A00, 0x4A80 }));  // 10, 11, 12, 13 in F16
        var span = new float[6];
        model.ReadF32("embed", span);
        Assert.That(span, Is.EqualTo(Values(6, 0)));
        Assert.That(model.TryGetTensor("head", out var head) && head.Shape.SequenceEqual(new long[] { 2, 2 }), Is.True);
        Assert.That(model.TryGetTensor("nope", out _), Is.False);
        var missing = Assert.Throws<SafetensorsException>(() => model.FileOf("nope"))!;
        Assert.That(missing.Message, Does.Contain("'nope'").And.Contain(SafetensorsModel.IndexFileName));
    }

    [Test]
    public void IndexFileCanBeOpenedByPath()
    {
        WriteShards();
        var index = WriteIndex(GoodMap(), "custom.index.json");
        using var model = SafetensorsModel.Open(index);
        Assert.That(model.Path, Is.EqualTo(index));
        Assert.That(model.Tensors, Has.Count.EqualTo(3));
    }

    [Test]
    public void SingleFileFolderPrefersModelSafetensors()
    {
        SafetensorsWriter.Write(_files.PathOf(SafetensorsModel.SingleFileName), [TensorToWrite.F32("only", [1], [5f])]);
        WriteIndex(new Dictionary<string, string> { ["x"] = "absent.safetensors" });  // would fail if used
        using var model = SafetensorsModel.Open(_files.Folder);
        Assert.That(model.Tensors.Select(t => t.Name), Is.EqualTo(new[] { "only" }));
        Assert.That(model.FileOf("only"), Is.EqualTo(_files.PathOf(SafetensorsModel.SingleFileName)));
        Assert.That(model.ReadF32("only"), Is.EqualTo(new[] { 5f }));
    }

    [Test]
    public void EmptyFolder() =>
        AssertRejected(_files.Folder, _files.Folder, null, "neither model.safetensors nor model.safetensors.index.json");

    [Test]
    public void MissingShard()
    {
        SafetensorsWriter.Write(_files.PathOf(Shard1), [TensorToWrite.F32("embed", [3, 2], Values(6, 0)), TensorToWrite.BF16("norm", [2], [1f, -2f])]);
        var index = WriteIndex(GoodMap());
        var e = AssertRejected(_files.Folder, index, "head", "does not exist");
        Assert.That(e.Message, Does.Contain(Shard2));
    }

    [Test]
    public void TensorMappedToShardThatLacksIt()
    {
        WriteShards();
        var map = GoodMap();
        map["ghost"] = Shard2;
        var index = WriteIndex(map);
        var e = AssertRejected(_files.Folder, index, "ghost", "which lacks it");
        Assert.That(e.Message, Does.Contain(Shard2));
    }

    [Test]
    public void TensorMappedToTheWrongShard()
    {
        WriteShards();
        var map = GoodMap();
        map["head"] = Shard1;
        map["embed"] = Shard2;  // keep both shards referenced
        var index = WriteIndex(map);
        AssertRejected(_files.Folder, index, "embed", "which lacks it");
    }

    [Test]
    public void TensorPresentInTwoShards()
    {
        SafetensorsWriter.Write(_files.PathOf(Shard1), [TensorToWrite.F32("embed", [3, 2], Values(6, 0)), TensorToWrite.BF16("norm", [2], [1f, -2f])]);
        SafetensorsWriter.Write(_files.PathOf(Shard2), [TensorToWrite.F16("head", [2, 2], Values(4, 10)), TensorToWrite.F32("embed", [1], [9f])]);
        var index = WriteIndex(GoodMap());
        var e = AssertRejected(_files.Folder, index, "embed", "in two shards");
        Assert.That(e.Message, Does.Contain(Shard1).And.Contain(Shard2));
    }

    [Test]
    public void ShardTensorMissingFromWeightMap()
    {
        WriteShards();
        var map = GoodMap();
        map.Remove("norm");
        var index = WriteIndex(map);
        AssertRejected(_files.Folder, index, "norm", "does not list it");
    }

    [Test]
    public void BrokenShardIsReportedByItsOwnPath()
    {
        WriteShards();
        WriteIndex(GoodMap());
        var bytes = File.ReadAllBytes(_files.PathOf(Shard2));
        File.WriteAllBytes(_files.PathOf(Shard2), bytes[..^1]);
        var e = Assert.Throws<SafetensorsException>(() => SafetensorsModel.Open(_files.Folder))!;
        Assert.That(e.FilePath, Is.EqualTo(_files.PathOf(Shard2)));
        Assert.That(e.TensorName, Is.EqualTo("head"));
        Assert.That(e.Message, Does.Contain(Shard2).And.Contain("'head'"));
    }

    [TestCase("../outside.safetensors")]
    [TestCase("/etc/passwd")]
    [TestCase("sub/shard.safetensors")]
    [TestCase("..")]
    [TestCase("")]
    public void ShardNameThatLeavesTheFolder(string shard)
    {
        var index = WriteIndex(new Dictionary<string, string> { ["w"] = shard });
        AssertRejected(_files.Folder, index, "w", "not a plain file name");
    }

    [TestCase("not json", "not valid JSON")]
    [TestCase("[]", "not a JSON object")]
    [TestCase("{\"metadata\":{}}", "no 'weight_map' object")]
    [TestCase("{\"weight_map\":[]}", "no 'weight_map' object")]
    [TestCase("{\"weight_map\":{},\"weight_map\":{}}", "'weight_map' appears more than once")]
    public void BrokenIndex(string json, string detail)
    {
        var index = _files.PathOf(SafetensorsModel.IndexFileName);
        File.WriteAllText(index, json);
        AssertRejected(_files.Folder, index, null, detail);
    }

    [Test]
    public void IndexNotUtf8()
    {
        var index = _files.PathOf(SafetensorsModel.IndexFileName);
        File.WriteAllBytes(index, [(byte)'{', 0xC3, 0x28, (byte)'}']);
        AssertRejected(_files.Folder, index, null, "not valid UTF-8");
    }

    [Test]
    public void WeightMapValueNotString()
    {
        var index = _files.PathOf(SafetensorsModel.IndexFileName);
        File.WriteAllText(index, "{\"weight_map\":{\"w\":3}}");
        AssertRejected(_files.Folder, index, "w", "not a shard file name string");
    }

    [Test]
    public void WeightMapDuplicateTensor()
    {
        WriteShards();
        var index = _files.PathOf(SafetensorsModel.IndexFileName);
        File.WriteAllText(index, $"{{\"weight_map\":{{\"embed\":\"{Shard1}\",\"norm\":\"{Shard1}\",\"head\":\"{Shard2}\",\"embed\":\"{Shard2}\"}}}}");
        AssertRejected(_files.Folder, index, "embed", "more than once in the weight_map");
    }

    [Test]
    public void WeightMapLoneSurrogateEscape()
    {
        var index = _files.PathOf(SafetensorsModel.IndexFileName);
        File.WriteAllText(index, "{\"weight_map\":{\"w\":\"a\\ud800.safetensors\"}}");
        AssertRejected(_files.Folder, index, "w", "not valid UTF-16");
    }

    [Test]
    public void MissingPath()
    {
        var path = _files.PathOf("absent.safetensors");
        AssertRejected(path, path, null, "cannot open");
    }
}
