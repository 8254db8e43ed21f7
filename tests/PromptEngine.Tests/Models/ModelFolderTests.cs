using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Models;

public class ModelFolderTests
{
    string folder = "";

    [SetUp]
    public void CreateFolder() => folder = Directory.CreateTempSubdirectory("pe-model-").FullName;

    [TearDown]
    public void DeleteFolder() => Directory.Delete(folder, recursive: true);

    const string TinyGqaConfig = """
        { "architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 1,
          "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10, "tie_word_embeddings": true }
        """;

    void WriteModel(string config, Func<ExpectedWeight, TensorToWrite?> tensor)
    {
        File.WriteAllText(Path.Combine(folder, "config.json"), config);
        var map = WeightMap.For(TransformerConfig.Parse(config, "config.json"));
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), map.Weights.Select(tensor).OfType<TensorToWrite>());
    }

    static TensorToWrite Random(ExpectedWeight w)
    {
        var rng = new Random(w.Name.Length);
        var values = new float[w.Shape.Aggregate(1L, (a, d) => a * d)];
        for (var i = 0; i < values.Length; i++) values[i] = (float)(rng.NextDouble() - 0.5);
        return TensorToWrite.F32(w.Name, w.Shape, values);
    }

    [Test]
    public void OpensAValidFolderAndCountsParameters()
    {
        WriteModel(TinyGqaConfig, Random);
        using var model = ModelFolder.Open(folder);
        Assert.That(model.Config.NumKvHeads, Is.EqualTo(2));
        // embed 10·8 + q 8·8 + k,v 2·(4·8) + o 8·8 + norms 2·8 + gate,up 2·(12·8) + down 8·12 + final 8
        Assert.That(model.ParameterCount, Is.EqualTo(80 + 64 + 64 + 64 + 16 + 192 + 96 + 8));
        var q = model.Tensors.ReadF32("model.layers.0.self_attn.q_proj.weight");
        Assert.That(q, Is.EqualTo(Random(model.Weights.Get(WeightRole.Query, 0)).Data.ToArray().Chunk(4).Select(b => BitConverter.ToSingle(b))));
    }

    [Test]
    public void ReportsAllWeightProblemsOfAFolder()
    {
        WriteModel(TinyGqaConfig, w => w.Role == WeightRole.MlpUp ? null
            : w.Role == WeightRole.Key ? TensorToWrite.F32(w.Name, [8, 8], new float[64]) : Random(w));
        var e = Assert.Throws<WeightMismatchException>(() => ModelFolder.Open(folder))!;
        Assert.That(e.Problems, Has.Count.EqualTo(2));
        Assert.That(e.Message, Does.Contain(folder).And.Contain("k_proj").And.Contain("up_proj"));
    }

    [Test]
    public void RejectsIntegerWeights()
    {
        WriteModel(TinyGqaConfig, w => w.Role == WeightRole.FinalNorm ? new TensorToWrite(w.Name, DType.I32, w.Shape, new byte[32]) : Random(w));
        var e = Assert.Throws<WeightMismatchException>(() => ModelFolder.Open(folder))!;
        Assert.That(e.Message, Does.Contain("model.norm.weight").And.Contain("I32"));
    }

    [Test]
    public void MissingConfigOrWeightsAreNamed()
    {
        Assert.That(Assert.Throws<ModelConfigException>(() => ModelFolder.Open(folder))!.Message, Does.Contain("config.json"));
        File.WriteAllText(Path.Combine(folder, "config.json"), TinyGqaConfig);
        Assert.That(Assert.Throws<SafetensorsException>(() => ModelFolder.Open(folder))!.Message, Does.Contain(folder));
        Assert.Throws<ModelConfigException>(() => ModelFolder.Open(Path.Combine(folder, "nope")));
    }

    [Test]
    public void RealStories15MFolderChecksAndTokenizes()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var c = model.Config;
        Assert.That((c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.VocabSize, c.MaxPositions),
            Is.EqualTo((288, 768, 6, 6, 6, 32000, 256)));
        Assert.That(c.TieWordEmbeddings, Is.True);
        Assert.That(model.ParameterCount, Is.EqualTo(15_191_712));
        Assert.That(model.Tokenizer.Encode("Once upon a time", addBos: true), Is.EqualTo(new[] { 1, 9038, 2501, 263, 931 }));
        Assert.That(model.Tokenizer.BosId, Is.EqualTo(1));
        Assert.That(model.Tokenizer.EosId, Is.EqualTo(2));
    }

    [Test]
    public void OpensAGpt2FolderWithPrefixedConv1DWeightsAndItsTokenizer()
    {
        const string config = """
            { "architectures": ["GPT2LMHeadModel"], "n_embd": 8, "n_layer": 1, "n_head": 2, "n_positions": 16,
              "vocab_size": 50257, "bos_token_id": 50256, "eos_token_id": 50256 }
            """;
        File.WriteAllText(Path.Combine(folder, "config.json"), config);
        var map = WeightMap.For(TransformerConfig.Parse(config, "config.json"), "transformer.");
        // BF16 storage is accepted too: kept 16-bit for upload, or widened on read.
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), map.Weights.Select(w => w.Role == WeightRole.QkvFused
            ? TensorToWrite.BF16(w.Name, w.Shape, Enumerable.Range(0, 8 * 24).Select(i => i / 8f).ToArray())
            : Random(w)));
        File.Copy(TestAssets.Gpt2EncoderJson, Path.Combine(folder, "vocab.json"));
        File.Copy(TestAssets.Gpt2VocabBpe, Path.Combine(folder, "merges.txt"));

        using var model = ModelFolder.Open(folder);
        Assert.That(model.Weights.NamePrefix, Is.EqualTo("transformer."));
        Assert.That(model.Weights.Get(WeightRole.QkvFused, 0).StoredTransposed, Is.True);
        Assert.That(model.Tensors.ReadF32("transformer.h.0.attn.c_attn.weight")[9], Is.EqualTo(9 / 8f));
        Assert.That(model.Tokenizer.Encode("Hello world", addBos: false), Is.EqualTo(new[] { 15496, 995 }));
        Assert.That((model.Tokenizer.BosId, model.Tokenizer.EosId), Is.EqualTo((50256, 50256)));
    }
}
