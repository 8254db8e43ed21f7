using System.Text.Json;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Safetensors;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Prompts;

/// <summary>Deep-prompt files: the project's own format (method tag) and PEFT's PREFIX_TUNING adapters, in and out,
/// the layout conversion to the engine's (L, 2, Pv, KV·hs), and the refusals that keep plain and deep prompts apart.</summary>
public sealed class DeepPromptFileTests
{
    string folder = "";
    string modelFolder = "";
    ModelFolder model = null!;

    [SetUp]
    public void SetUp()
    {
        folder = Directory.CreateTempSubdirectory("pe-deepfile-").FullName;
        // GQA: H 4, KV 2, hs 4, 2 layers, so token_dim = KV·hs = 8 differs from the hidden size 16.
        modelFolder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 3);
        model = ModelFolder.Open(modelFolder);
    }

    [TearDown]
    public void TearDown()
    {
        model.Dispose();
        Directory.Delete(folder, recursive: true);
        Directory.Delete(modelFolder, recursive: true);
    }

    static DeepPrompt Numbered(TransformerConfig config, int virtualTokens)
    {
        var prompt = DeepPrompt.Random(config, virtualTokens, seed: 1);
        for (var i = 0; i < prompt.Values.Length; i++) prompt.Values[i] = i * 0.001f;
        return prompt;
    }

    [Test]
    public void EngineLayoutPutsEachLayersKeysThenValuesPerVirtualToken()
    {
        var config = model.Config;
        var prompt = Numbered(config, 3);
        var engine = prompt.ToEngineLayout();
        int d = config.NumKvHeads * config.HeadDim, Pv = 3;
        Assert.That(prompt.TokenDim, Is.EqualTo(8));
        Assert.That(prompt.Width, Is.EqualTo(config.NumLayers * 2 * 8));
        // Engine (layer, part, token, kv head·hs + c) holds PEFT's [token, ((2·layer + part)·KV + kv head)·hs + c].
        for (int layer = 0; layer < config.NumLayers; layer++)
            for (int part = 0; part < 2; part++)
                for (int token = 0; token < Pv; token++)
                    for (int e = 0; e < d; e++)
                        Assert.That(engine[((2 * layer + part) * Pv + token) * d + e], Is.EqualTo(prompt.Values[token * prompt.Width + (2 * layer + part) * d + e]));
        var back = DeepPrompt.FromEngineLayout(engine, Pv, config);
        Assert.That(back.Values, Is.EqualTo(prompt.Values));
    }

    [Test]
    public void OwnFormatRoundTripsWithItsMethodTag()
    {
        var prompt = Numbered(model.Config, 4);
        var path = Path.Combine(folder, "deep.safetensors");
        DeepPromptFile.Save(path, prompt, model);
        Assert.That(DeepPromptFile.MethodOf(path), Is.EqualTo(PromptMethod.Prefix));
        var loaded = DeepPromptFile.Load(path, model.Config);
        Assert.That((loaded.VirtualTokens, loaded.NumLayers, loaded.KvHeads, loaded.HeadDim), Is.EqualTo((4, 2, 2, 4)));
        Assert.That(loaded.Values, Is.EqualTo(prompt.Values));
        Assert.That(loaded.Meta(PromptMetadata.BaseModelFingerprint), Is.EqualTo(ModelFingerprint.Compute(model)));
    }

    [Test]
    public void PlainAndDeepPromptFilesRefuseEachOther()
    {
        var deepPath = Path.Combine(folder, "deep.safetensors");
        DeepPromptFile.Save(deepPath, Numbered(model.Config, 2), model);
        var plainPath = Path.Combine(folder, "plain.safetensors");
        PromptFile.Save(plainPath, new float[2 * 16], 2, 16);
        Assert.That(DeepPromptFile.MethodOf(plainPath), Is.EqualTo(PromptMethod.Prompt), "an untagged file is a plain prompt");
        var asPlain = Assert.Throws<PromptKindException>(() => PromptFile.Load(deepPath))!;
        Assert.That(asPlain.Message, Does.Contain(deepPath).And.Contain("deep prompt").And.Not.Contain("--"));
        var asDeep = Assert.Throws<PromptKindException>(() => DeepPromptFile.Load(plainPath))!;
        Assert.That(asDeep.Message, Does.Contain(plainPath).And.Contain("plain prompt").And.Not.Contain("--"));
    }

    [Test]
    public void OwnFormatRefusesAnotherModelShape()
    {
        var path = Path.Combine(folder, "deep.safetensors");
        DeepPromptFile.Save(path, Numbered(model.Config, 2), model);
        var other = TransformerConfig.Parse(ModelReferenceTinyModels.LlamaConfig(layers: 3), "config.json");
        var e = Assert.Throws<PromptCompatibilityException>(() => DeepPromptFile.Load(path, other))!;
        Assert.That(e.Message, Does.Contain("2 layers").And.Contain(path));
    }

    [Test]
    public void PeftAdapterHasPrefixTuningsFieldsAndShape()
    {
        var prompt = Numbered(model.Config, 5);
        var adapter = Path.Combine(folder, "adapter");
        PeftAdapter.SavePrefix(adapter, prompt, model);
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName)));
        var root = json.RootElement;
        Assert.That(root.GetProperty("peft_type").GetString(), Is.EqualTo("PREFIX_TUNING"));
        Assert.That(root.GetProperty("num_virtual_tokens").GetInt32(), Is.EqualTo(5));
        Assert.That(root.GetProperty("token_dim").GetInt32(), Is.EqualTo(8), "per kv head on a GQA model");
        Assert.That(root.GetProperty("num_attention_heads").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("num_layers").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("num_transformer_submodules").GetInt32(), Is.EqualTo(1));
        Assert.That(root.GetProperty("prefix_projection").GetBoolean(), Is.False);
        Assert.That(root.GetProperty("task_type").GetString(), Is.EqualTo("CAUSAL_LM"));
        using var weights = SafetensorsFile.Open(Path.Combine(adapter, PeftAdapter.WeightsFileName));
        Assert.That(weights.GetTensor("prompt_embeddings").Shape, Is.EqualTo(new long[] { 5, 2 * 2 * 8 }));
        Assert.That(weights.ReadF32("prompt_embeddings"), Is.EqualTo(prompt.Values));
        var loaded = PeftAdapter.LoadPrefix(adapter, model.Config);
        Assert.That(loaded.Values, Is.EqualTo(prompt.Values));
        var plain = Assert.Throws<PromptKindException>(() => PeftAdapter.Load(adapter))!;
        Assert.That(plain.Message, Does.Contain("PREFIX_TUNING").And.Contain("deep prompt").And.Not.Contain("--"), "the library's terms, not a CLI flag");
        Assert.That(plain.Found, Is.EqualTo(PromptMethod.Prefix));
        Assert.That(PeftAdapter.PeftType(adapter), Is.EqualTo("PREFIX_TUNING"));
    }

    [Test]
    public void HandWrittenPeftAdapterIsReadInPeftsOrder()
    {
        // As PEFT's get_prompt views it: (Pv, L·2, heads, hs), index 2·layer + 0 the keys, + 1 the values of that layer.
        var adapter = Path.Combine(folder, "hand");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName), """
            {"peft_type": "PREFIX_TUNING", "task_type": "CAUSAL_LM", "num_virtual_tokens": 2, "token_dim": 8,
             "num_attention_heads": 2, "num_layers": 2, "num_transformer_submodules": 1, "prefix_projection": true, "encoder_hidden_size": 32}
            """);
        var values = new float[2 * 32];
        // token 1, layer 1, value (part 1), kv head 1, channel 2.
        values[1 * 32 + (2 * 1 + 1) * 8 + 1 * 4 + 2] = 7f;
        SafetensorsWriter.Write(Path.Combine(adapter, PeftAdapter.WeightsFileName), [TensorToWrite.F32("prompt_embeddings", [2, 32], values)]);
        var engine = PeftAdapter.LoadPrefix(adapter, model.Config).ToEngineLayout();
        int at = Array.IndexOf(engine, 7f);
        // Engine (layer 1, values, token 1, kv head 1 · hs + 2), Pv = 2, KV·hs = 8.
        Assert.That(at, Is.EqualTo(((2 * 1 + 1) * 2 + 1) * 8 + 1 * 4 + 2));
    }

    [Test]
    public void PeftAdapterWithQueryHeadTokenDimOnAGqaModelIsRefused()
    {
        var adapter = Path.Combine(folder, "old");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName), """
            {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "token_dim": 16, "num_attention_heads": 4, "num_layers": 2}
            """);
        SafetensorsWriter.Write(Path.Combine(adapter, PeftAdapter.WeightsFileName), [TensorToWrite.F32("prompt_embeddings", [2, 64], new float[128])]);
        var e = Assert.Throws<PromptCompatibilityException>(() => PeftAdapter.LoadPrefix(adapter, model.Config))!;
        Assert.That(e.Message, Does.Contain("grouped-query").And.Contain("token_dim 16"));
    }

    [Test]
    public void PeftPrefixAdapterWithAWrongWidthNamesTheTensor()
    {
        var adapter = Path.Combine(folder, "bad");
        Directory.CreateDirectory(adapter);
        File.WriteAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName), """
            {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 2, "token_dim": 8, "num_attention_heads": 2, "num_layers": 2}
            """);
        SafetensorsWriter.Write(Path.Combine(adapter, PeftAdapter.WeightsFileName), [TensorToWrite.F32("prompt_embeddings", [2, 30], new float[60])]);
        var e = Assert.Throws<PromptFormatException>(() => PeftAdapter.LoadPrefix(adapter, model.Config))!;
        Assert.That(e.Message, Does.Contain("prompt_embeddings").And.Contain("width 30"));
    }
}
