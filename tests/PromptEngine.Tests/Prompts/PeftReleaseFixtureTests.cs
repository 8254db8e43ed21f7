using System.Text.Json;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.Prompts;

/// <summary>Our adapter_config.json against the config classes of every PEFT release from 0.6 to 0.20. PEFT itself cannot
/// run here, so each fixture in Prompts/PeftReleases lists, for one release range, the dataclass fields of PeftConfigMixin,
/// PeftConfig, PromptLearningConfig, PromptTuningConfig and PrefixTuningConfig and the PromptTuningInit values, read from
/// huggingface/peft's source at the first and last tag of the range (the file names them). PEFT builds the config class
/// with <c>cls(**json)</c>: before 0.14 an unknown key is a TypeError, later ones warn and drop it.</summary>
public class PeftReleaseFixtureTests
{
    sealed record Release(string Name, bool RejectsUnknownKeys, bool TextInitLoadsTokenizerForInference,
        HashSet<string> PromptTuningFields, HashSet<string> PrefixTuningFields, HashSet<string> PromptTuningInits);

    static IEnumerable<string> FixturePaths() =>
        Directory.GetFiles(Path.Combine(TestContext.CurrentContext.TestDirectory, "Prompts", "PeftReleases"), "peft-*.json").Order(StringComparer.Ordinal);

    static Release Read(string path)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(path));
        var r = json.RootElement;
        HashSet<string> Set(string key) => r.GetProperty(key).EnumerateArray().Select(e => e.GetString()!).ToHashSet(StringComparer.Ordinal);
        return new Release(r.GetProperty("release").GetString()!, r.GetProperty("rejects_unknown_keys").GetBoolean(),
            r.GetProperty("text_init_loads_tokenizer_for_inference").GetBoolean(),
            Set("prompt_tuning_config"), Set("prefix_tuning_config"), Set("prompt_tuning_init"));
    }

    static Release[] Releases() => FixturePaths().Select(Read).ToArray();

    [Test]
    public void FixturesCoverEveryReleaseFrom06To020()
    {
        var names = Releases().Select(r => r.Name).ToArray();
        Assert.That(names, Is.EquivalentTo(new[]
        {
            "0.6.0 .. 0.6.2", "0.7.0 .. 0.7.1", "0.8.0 .. 0.13.2", "0.14.0 .. 0.16.0", "0.17.0 .. 0.17.1", "0.18.0 .. 0.18.1", "0.19.0 .. 0.20.0",
        }));
        var oldest = Releases().Single(r => r.Name.StartsWith("0.6.0", StringComparison.Ordinal));
        Assert.That(oldest.RejectsUnknownKeys && oldest.TextInitLoadsTokenizerForInference, "PEFT 0.6 is the strictest reader");
        Assert.That(oldest.PromptTuningFields, Does.Not.Contain("modules_to_save").And.Not.Contain("tokenizer_kwargs"));
        Assert.That(oldest.PromptTuningInits, Does.Not.Contain("SAMPLE_VOCAB"));
    }

    /// <summary>Every adapter we can write: each init method, with a model whose config.json names a hub id and one
    /// that names a local path (as transformers writes after loading from a folder), and a prefix adapter.</summary>
    static IEnumerable<(string Case, Dictionary<string, JsonElement> Fields, bool Prefix)> Written()
    {
        var hubModel = PromptTestModels.Tiny(seed: 90, configJson: "{ \"_name_or_path\": \"acme/tiny-llama\", "
            + Reference.ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2).Trim()[1..]);
        var localModel = PromptTestModels.Tiny(seed: 91, configJson: "{ \"_name_or_path\": \"/root/.cache/promptengine/tiny\", "
            + Reference.ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2).Trim()[1..]);
        foreach (var (label, path) in new[] { ("hub", hubModel), ("local", localModel) })
        {
            using var model = ModelFolder.Open(path);
            var init = new PromptInit(model);
            foreach (var method in Enum.GetValues<PromptInitMethod>())
            {
                var folder = Path.Combine(PromptTestModels.TempFolder(), "adapter");
                PeftAdapter.Save(folder, init.Random(3, seed: 1), model, method, method == PromptInitMethod.Text ? "Classify:" : null);
                yield return ($"{label} {method}", Fields(folder), false);
            }
            var deepFolder = Path.Combine(PromptTestModels.TempFolder(), "prefix");
            PeftAdapter.SavePrefix(deepFolder, DeepPrompt.Random(model.Config, 3, seed: 2), model);
            yield return ($"{label} prefix", Fields(deepFolder), true);
        }
    }

    static Dictionary<string, JsonElement> Fields(string folder)
    {
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(folder, PeftAdapter.ConfigFileName)));
        return json.RootElement.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.Clone(), StringComparer.Ordinal);
    }

    [TestCaseSource(nameof(FixturePaths))]
    public void OurAdapterConfigsLoadInThisRelease(string fixture)
    {
        var release = Read(fixture);
        foreach (var (label, fields, prefix) in Written())
        {
            var accepted = prefix ? release.PrefixTuningFields : release.PromptTuningFields;
            Assert.That(fields.Keys, Is.SubsetOf(accepted), $"PEFT {release.Name}, {label}: every key is a field of the config class");
            Assert.That(fields["peft_type"].GetString(), Is.EqualTo(prefix ? "PREFIX_TUNING" : "PROMPT_TUNING"));
            var baseModel = fields["base_model_name_or_path"].GetString()!;
            Assert.That(Path.IsPathRooted(baseModel) || baseModel.Contains('\\'), Is.False, $"{label}: {baseModel} is a path of this machine");
            if (prefix) continue;

            var init = fields["prompt_tuning_init"].GetString()!;
            Assert.That(release.PromptTuningInits, Does.Contain(init), $"PEFT {release.Name}, {label}: PromptTuningInit has {init}");
            if (init == "TEXT")
            {
                // PromptTuningConfig.__post_init__ (0.8 on) refuses TEXT without both; 0.6 and 0.7 load the tokenizer by that name.
                var tokenizer = fields["tokenizer_name_or_path"].GetString();
                Assert.That(tokenizer, Is.Not.Null.And.Not.Empty, label);
                Assert.That(fields["prompt_tuning_init_text"].GetString(), Is.Not.Null, label);
                if (release.TextInitLoadsTokenizerForInference)
                    Assert.That(Path.IsPathRooted(tokenizer!), Is.False, $"PEFT {release.Name} opens {tokenizer} to run the adapter");
            }
        }
    }

    [Test]
    public void TextInitIsWrittenOnlyWithATokenizerPeftCanFind()
    {
        var written = Written().Where(w => !w.Prefix).ToDictionary(w => w.Case, w => w.Fields);
        Assert.That(written["hub Text"]["prompt_tuning_init"].GetString(), Is.EqualTo("TEXT"));
        Assert.That(written["hub Text"]["tokenizer_name_or_path"].GetString(), Is.EqualTo("acme/tiny-llama"));
        Assert.That(written["hub Text"]["base_model_name_or_path"].GetString(), Is.EqualTo("acme/tiny-llama"));
        Assert.That(written["local Text"]["prompt_tuning_init"].GetString(), Is.EqualTo("RANDOM"), "no name PEFT could resolve");
        Assert.That(written["local Text"]["base_model_name_or_path"].GetString(), Is.EqualTo("tiny"));
        Assert.That(written["hub SampleVocab"]["prompt_tuning_init"].GetString(), Is.EqualTo("RANDOM"));
    }

    [Test]
    public void OurOwnInitRecordSurvivesTheRoundTrip()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 92));
        var random = new PromptInit(model).Random(3, seed: 4);
        var prompt = random with { Metadata = new Dictionary<string, string>(random.Metadata) { [PromptMetadata.InitMethod] = "sample_vocab" } };
        var folder = Path.Combine(PromptTestModels.TempFolder(), "adapter");
        PeftAdapter.Save(folder, prompt, model);
        Assert.That(Fields(folder)["prompt_tuning_init"].GetString(), Is.EqualTo("RANDOM"));
        Assert.That(PeftAdapter.Load(folder).Meta(PromptMetadata.InitMethod), Is.EqualTo("sample_vocab"), "the weights file's metadata keeps our record");
    }
}
