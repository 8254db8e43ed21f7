using System.Diagnostics;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Prompts;

/// <summary>The base-model fingerprint: stable across opens and copies, different when the config or
/// any tensor's sampled bytes change.</summary>
public class ModelFingerprintTests
{
    static string Of(string folder)
    {
        using var model = ModelFolder.Open(folder);
        return ModelFingerprint.Compute(model);
    }

    [Test]
    public void StableAcrossOpensAndCopiesAndShort()
    {
        var a = PromptTestModels.Tiny(seed: 3);
        var copy = PromptTestModels.Tiny(seed: 3);
        var first = Of(a);
        Assert.That(first, Does.Match("^v1-[0-9a-f]{16}$"));
        Assert.That(Of(a), Is.EqualTo(first), "reopened");
        Assert.That(Of(copy), Is.EqualTo(first), "the same model in another folder");
    }

    [Test]
    public void ConfigFormattingDoesNotMatterButItsValuesDo()
    {
        var config = ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2);
        var reformatted = "{\n  \"_name_or_path\": \"someone/tiny\", \"torch_dtype\": \"float32\",\n" + config.Trim()[1..];
        Assert.That(Of(PromptTestModels.Tiny(seed: 4, configJson: reformatted)), Is.EqualTo(Of(PromptTestModels.Tiny(seed: 4))),
            "extra fields, key order and whitespace are not the model");
        Assert.That(Of(PromptTestModels.Tiny(seed: 4, ropeTheta: 1000.0)), Is.Not.EqualTo(Of(PromptTestModels.Tiny(seed: 4))),
            "another RoPE base is another model, even with the same weights");
    }

    [Test]
    public void DifferentWeightsGiveDifferentFingerprints()
    {
        var baseline = Of(PromptTestModels.Tiny(seed: 5));
        Assert.That(Of(PromptTestModels.Tiny(seed: 6)), Is.Not.EqualTo(baseline), "other random weights");
        // A merged LoRA leaves the embedding table alone and changes projections: one value at the start of q_proj.
        Assert.That(Of(PromptTestModels.Tiny(seed: 5, tweak: (w, v) => { if (w.Name == "model.layers.1.self_attn.q_proj.weight") v[3] += 1e-3f; })),
            Is.Not.EqualTo(baseline), "one value of a layer-1 projection");
        Assert.That(Of(PromptTestModels.Tiny(seed: 5, tweak: (w, v) => { if (w.Role == WeightRole.TokenEmbedding) v[^1] = -v[^1]; })),
            Is.Not.EqualTo(baseline), "the last value of the embedding table");
    }

    [Test]
    public void Stories15MFingerprintIsFastAndStable()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var clock = Stopwatch.StartNew();
        var first = ModelFingerprint.Compute(model);
        var elapsed = clock.Elapsed.TotalMilliseconds;
        using var again = ModelFolder.Open(TestAssets.Stories15MFolder);
        Assert.That(ModelFingerprint.Compute(again), Is.EqualTo(first));
        TestContext.Out.WriteLine($"stories15M fingerprint {first} in {elapsed:F1} ms over {model.Tensors.Tensors.Count} tensors");
    }

    [Test]
    public void ForModelDescribesTheModel()
    {
        var folder = PromptTestModels.Tiny(seed: 7);
        using var model = ModelFolder.Open(folder);
        var meta = PromptMetadata.ForModel(model);
        Assert.That(meta[PromptMetadata.BaseModelFingerprint], Is.EqualTo(ModelFingerprint.Compute(model)));
        Assert.That(meta[PromptMetadata.BaseModelWidth], Is.EqualTo("16"));
        Assert.That(meta[PromptMetadata.NumLayers], Is.EqualTo("2"));
        Assert.That(meta[PromptMetadata.NumAttentionHeads], Is.EqualTo("4"));
        Assert.That(meta[PromptMetadata.Architecture], Is.EqualTo("LlamaForCausalLM"));
        Assert.That(meta[PromptMetadata.BaseModelNameOrPath], Is.EqualTo(Path.GetFileName(folder)), "no _name_or_path: the folder's name, never a path of this machine");

        var named = PromptTestModels.Tiny(seed: 7, configJson: "{ \"_name_or_path\": \"acme/tiny-llama\", " + ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2).Trim()[1..]);
        using var namedModel = ModelFolder.Open(named);
        Assert.That(PromptMetadata.NameOrPath(namedModel), Is.EqualTo("acme/tiny-llama"));
        Assert.That(PromptMetadata.ModelName(namedModel), Is.EqualTo(("acme/tiny-llama", true)));
    }

    [TestCase("/root/.cache/promptengine/stories15M", "stories15M")]
    [TestCase("/home/me/models/llama/", "llama")]
    [TestCase("C:\\Users\\me\\models\\tiny", "tiny")]
    [TestCase("./models/tiny", "tiny")]
    [TestCase("../tiny", "tiny")]
    public void ALocalPathRecordedByTransformersBecomesTheModelsName(string recorded, string expected)
    {
        // transformers writes the folder it loaded from into _name_or_path; that path must not travel.
        var named = PromptTestModels.Tiny(seed: 7, configJson: "{ \"_name_or_path\": " + System.Text.Json.JsonSerializer.Serialize(recorded) + ", "
            + ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2).Trim()[1..]);
        using var model = ModelFolder.Open(named);
        Assert.That(PromptMetadata.ModelName(model), Is.EqualTo((expected, false)));
        Assert.That(PromptMetadata.ForModel(model)[PromptMetadata.BaseModelNameOrPath], Is.EqualTo(expected));
    }
}
