using System.Text.Json;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Safetensors;

namespace PromptEngine.Tests.Prompts;

/// <summary>PEFT prompt-tuning adapters: our save read back, a config as PEFT writes it (unknown fields
/// included), and the adapters we must refuse.</summary>
public class PeftAdapterTests
{
    /// <summary>adapter_config.json as PEFT 0.17's save_pretrained writes it for a TEXT-initialised
    /// prompt on a 16-wide model, plus fields from a future version that must be ignored.</summary>
    const string PeftWrittenConfig = """
        {
          "auto_mapping": null,
          "base_model_name_or_path": "acme/tiny-llama",
          "inference_mode": true,
          "modules_to_save": null,
          "num_attention_heads": 4,
          "num_layers": 2,
          "num_transformer_submodules": 1,
          "num_virtual_tokens": 3,
          "peft_type": "PROMPT_TUNING",
          "peft_version": "0.17.1",
          "prompt_tuning_init": "TEXT",
          "prompt_tuning_init_text": "Classify the sentiment:",
          "revision": null,
          "task_type": "CAUSAL_LM",
          "token_dim": 16,
          "tokenizer_kwargs": null,
          "tokenizer_name_or_path": "acme/tiny-llama",
          "some_future_option": {"nested": [1, 2, 3]},
          "another_future_flag": false
        }
        """;

    static string PeftWrittenAdapter(string? config = null, int rows = 3, int width = 16, string tensor = "prompt_embeddings", DType dtype = DType.F32)
    {
        var folder = PromptTestModels.TempFolder();
        File.WriteAllText(Path.Combine(folder, PeftAdapter.ConfigFileName), config ?? PeftWrittenConfig);
        var values = Enumerable.Range(0, rows * width).Select(i => MathF.Sin(i)).ToArray();
        var t = dtype switch
        {
            DType.BF16 => TensorToWrite.BF16(tensor, [rows, width], values),
            _ => TensorToWrite.F32(tensor, [rows, width], values),
        };
        SafetensorsWriter.Write(Path.Combine(folder, PeftAdapter.WeightsFileName), [t], new Dictionary<string, string> { ["format"] = "pt" });
        return folder;
    }

    [Test]
    public void SaveThenLoadRoundTripsValuesAndDescription()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 30));
        var prompt = new PromptInit(model).Random(5, seed: 3);
        var folder = Path.Combine(PromptTestModels.TempFolder(), "adapter");
        PeftAdapter.Save(folder, prompt, model, PromptInitMethod.Text, "Summarise:");

        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName), Is.EquivalentTo(new[] { PeftAdapter.ConfigFileName, PeftAdapter.WeightsFileName }), "no temporary files left");
        var loaded = PeftAdapter.Load(folder, expectedWidth: 16);
        Assert.That(loaded.Values, Is.EqualTo(prompt.Values));
        Assert.That((loaded.VirtualTokens, loaded.Width), Is.EqualTo((5, 16)));
        Assert.That(loaded.Source, Is.EqualTo(folder));
        Assert.That(loaded.Meta(PromptMetadata.BaseModelFingerprint), Is.EqualTo(ModelFingerprint.Compute(model)));
        Assert.That(loaded.Meta(PromptMetadata.BaseModelNameOrPath), Is.EqualTo(Path.GetFileName(model.Path)));
        Assert.That(loaded.Meta(PromptMetadata.InitMethod), Is.EqualTo("text"));
        Assert.That(loaded.Meta(PromptMetadata.InitText), Is.EqualTo("Summarise:"));
        Assert.That(PromptCompatibility.Check(loaded, model, allowMismatch: false).Match, Is.EqualTo(PromptMatch.SameModel));

        using var file = SafetensorsFile.Open(Path.Combine(folder, PeftAdapter.WeightsFileName));
        Assert.That(file.Tensors.Select(t => (t.Name, t.DType, t.ShapeText)), Is.EqualTo(new[] { ("prompt_embeddings", DType.F32, "[5, 16]") }));
        Assert.That(file.Metadata["format"], Is.EqualTo("pt"));
    }

    [Test]
    public void ConfigHasPeftsPromptTuningFieldsSorted()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 31));
        var folder = Path.Combine(PromptTestModels.TempFolder(), "adapter");
        PeftAdapter.Save(folder, new PromptInit(model).Random(7, seed: 1), model);
        var text = File.ReadAllText(Path.Combine(folder, PeftAdapter.ConfigFileName));
        using var json = JsonDocument.Parse(text);
        var fields = json.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.Clone());
        Assert.That(fields.Keys, Is.Ordered.Using((IComparer<string>)StringComparer.Ordinal), "sort_keys=True, as PEFT writes");
        Assert.That(fields.Keys, Is.EquivalentTo(new[]
        {
            "auto_mapping", "base_model_name_or_path", "inference_mode", "num_attention_heads", "num_layers",
            "num_transformer_submodules", "num_virtual_tokens", "peft_type", "prompt_tuning_init", "prompt_tuning_init_text",
            "revision", "task_type", "token_dim", "tokenizer_name_or_path",
        }), "the PromptTuningConfig fields of every PEFT release from 0.6 (see PeftReleaseFixtureTests)");
        Assert.That(fields["peft_type"].GetString(), Is.EqualTo("PROMPT_TUNING"));
        Assert.That(fields["task_type"].GetString(), Is.EqualTo("CAUSAL_LM"));
        Assert.That(fields["num_virtual_tokens"].GetInt32(), Is.EqualTo(7));
        Assert.That(fields["token_dim"].GetInt32(), Is.EqualTo(16));
        Assert.That(fields["num_transformer_submodules"].GetInt32(), Is.EqualTo(1));
        Assert.That(fields["num_attention_heads"].GetInt32(), Is.EqualTo(4));
        Assert.That(fields["num_layers"].GetInt32(), Is.EqualTo(2));
        Assert.That(fields["prompt_tuning_init"].GetString(), Is.EqualTo("RANDOM"), "from the prompt's recorded init method");
        Assert.That(fields["inference_mode"].GetBoolean(), Is.True);
        Assert.That(fields["base_model_name_or_path"].GetString(), Is.EqualTo(Path.GetFileName(model.Path)), "the model's name, not this machine's path");
        foreach (var nullField in new[] { "prompt_tuning_init_text", "revision", "auto_mapping", "tokenizer_name_or_path" })
            Assert.That(fields[nullField].ValueKind, Is.EqualTo(JsonValueKind.Null), nullField);
        Assert.That(text, Does.StartWith("{\n  \"auto_mapping\": null,"), "two-space indent");
    }

    [Test]
    public void SampleVocabAndTextInitsMapToPeftNames()
    {
        Assert.That(PeftAdapter.PeftInitName(PromptInitMethod.SampleVocab), Is.EqualTo("RANDOM"), "SAMPLE_VOCAB exists only since PEFT 0.18");
        Assert.That(PeftAdapter.PeftInitName(PromptInitMethod.Text), Is.EqualTo("TEXT"));
        Assert.That(PeftAdapter.PeftInitName(PromptInitMethod.Random), Is.EqualTo("RANDOM"));
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 32));
        var prompt = new PromptInit(model).Random(2, 1);
        var folder = Path.Combine(PromptTestModels.TempFolder(), "a");
        Assert.That(Assert.Throws<ArgumentException>(() => PeftAdapter.Save(folder, prompt, model, PromptInitMethod.Text))!.Message, Does.Contain("init text"));
        Assert.That(Directory.Exists(folder), Is.False, "nothing written");
    }

    [Test]
    public void LoadsAPeftWrittenAdapterIgnoringUnknownFields()
    {
        var folder = PeftWrittenAdapter();
        var prompt = PeftAdapter.Load(folder);
        Assert.That((prompt.VirtualTokens, prompt.Width), Is.EqualTo((3, 16)));
        Assert.That(prompt.Values[5], Is.EqualTo(MathF.Sin(5)));
        Assert.That(prompt.Meta(PromptMetadata.BaseModelNameOrPath), Is.EqualTo("acme/tiny-llama"));
        Assert.That(prompt.Meta(PromptMetadata.InitMethod), Is.EqualTo("text"));
        Assert.That(prompt.Meta(PromptMetadata.InitText), Is.EqualTo("Classify the sentiment:"));
        Assert.That(prompt.Meta(PromptMetadata.NumLayers), Is.EqualTo("2"));
        Assert.That(prompt.Meta(PromptMetadata.BaseModelFingerprint), Is.Null, "PEFT records no fingerprint");

        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 33));
        Assert.That(PromptCompatibility.Check(prompt, model, allowMismatch: false).Match, Is.EqualTo(PromptMatch.NoFingerprint));

        // A minimal config (only peft_type and num_virtual_tokens, as some converters write) and BF16 weights.
        var minimal = PeftWrittenAdapter("{\"peft_type\": \"PROMPT_TUNING\", \"num_virtual_tokens\": 3}", dtype: DType.BF16);
        var small = PeftAdapter.Load(minimal);
        Assert.That(small.Values[5], Is.EqualTo(HalfConversions.BF16ToFloat(HalfConversions.FloatToBF16(MathF.Sin(5)))));
        // The enum's repr, as hand-written configs sometimes have it.
        var repr = PeftWrittenAdapter(PeftWrittenConfig.Replace("\"TEXT\"", "\"PromptTuningInit.TEXT\""));
        Assert.That(PeftAdapter.Load(repr).Meta(PromptMetadata.InitMethod), Is.EqualTo("text"));
    }

    [Test]
    public void RefusesAdaptersItCannotUse()
    {
        string Config(string from, string to) => PeftWrittenConfig.Replace(from, to);
        var cases = new List<(string Folder, string File, string[] Expected)>();
        void Case(string folder, string file, params string[] expected) => cases.Add((folder, file, expected));

        var prefix = PeftWrittenAdapter(Config("\"PROMPT_TUNING\"", "\"PREFIX_TUNING\""));
        Case(prefix, PeftAdapter.ConfigFileName, "peft_type", "PREFIX_TUNING", "deep prompt");
        var ptuning = PeftWrittenAdapter(Config("\"PROMPT_TUNING\"", "\"P_TUNING\""));
        Case(ptuning, PeftAdapter.ConfigFileName, "P_TUNING", "not supported yet");
        var lora = PeftWrittenAdapter(Config("\"PROMPT_TUNING\"", "\"LORA\""));
        Case(lora, PeftAdapter.ConfigFileName, "LORA", "not a soft-prompt method");
        var noType = PeftWrittenAdapter(Config("\"peft_type\": \"PROMPT_TUNING\",", ""));
        Case(noType, PeftAdapter.ConfigFileName, "peft_type", "missing");
        var rows = PeftWrittenAdapter(Config("\"num_virtual_tokens\": 3", "\"num_virtual_tokens\": 4"));
        Case(rows, PeftAdapter.ConfigFileName, "num_virtual_tokens", "4", "3 rows");
        var dim = PeftWrittenAdapter(Config("\"token_dim\": 16", "\"token_dim\": 32"));
        Case(dim, PeftAdapter.ConfigFileName, "token_dim", "32", "16 wide");
        var typed = PeftWrittenAdapter(Config("\"num_virtual_tokens\": 3", "\"num_virtual_tokens\": \"3\""));
        Case(typed, PeftAdapter.ConfigFileName, "num_virtual_tokens", "expected an integer");
        var seq2seq = PeftWrittenAdapter(Config("\"num_transformer_submodules\": 1", "\"num_transformer_submodules\": 2"));
        Case(seq2seq, PeftAdapter.ConfigFileName, "num_transformer_submodules", "encoder-decoder");
        var broken = PeftWrittenAdapter("{\"peft_type\": ");
        Case(broken, PeftAdapter.ConfigFileName, "not valid JSON");
        var otherTensor = PeftWrittenAdapter(tensor: "base_model.prompt_encoder.default.embedding.weight");
        Case(otherTensor, PeftAdapter.WeightsFileName, "prompt_embeddings", "base_model.prompt_encoder");

        var pickle = PromptTestModels.TempFolder();
        File.WriteAllText(Path.Combine(pickle, PeftAdapter.ConfigFileName), PeftWrittenConfig);
        File.WriteAllBytes(Path.Combine(pickle, PeftAdapter.PickleWeightsFileName), [0x80, 0x02]);
        Case(pickle, PeftAdapter.PickleWeightsFileName, "not supported", "safetensors");
        var noWeights = PromptTestModels.TempFolder();
        File.WriteAllText(Path.Combine(noWeights, PeftAdapter.ConfigFileName), PeftWrittenConfig);
        Case(noWeights, PeftAdapter.WeightsFileName, "missing");
        var noConfig = PromptTestModels.TempFolder();
        Case(noConfig, PeftAdapter.ConfigFileName, "missing");

        foreach (var (folder, file, expected) in cases)
        {
            var e = Assert.Catch<PromptFormatException>(() => PeftAdapter.Load(folder), string.Join(" ", expected));
            Assert.That(e!.Message, Does.Not.Contain("--"), "the library's terms, not CLI flags");
            TestContext.Out.WriteLine(e!.Message);
            Assert.That(e.Message, Does.Contain(Path.Combine(folder, file)), e.Message);
            foreach (var part in expected) Assert.That(e.Message, Does.Contain(part), e.Message);
        }

        Assert.Throws<PromptCompatibilityException>(() => PeftAdapter.Load(PeftWrittenAdapter(), expectedWidth: 32));
        Assert.That(Assert.Throws<PromptFormatException>(() => PeftAdapter.Load(Path.Combine(noConfig, "nope")))!.Message, Does.Contain("no such adapter folder"));
    }

    [Test]
    public void SaveRefusesAnotherWidth()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 34));
        var folder = Path.Combine(PromptTestModels.TempFolder(), "a");
        var e = Assert.Throws<PromptCompatibilityException>(() => PeftAdapter.Save(folder, new SoftPrompt(new float[24], 1, 24, new Dictionary<string, string>()), model));
        Assert.That(e!.Message, Does.Contain(folder).And.Contain("24").And.Contain("16"));
    }
}
