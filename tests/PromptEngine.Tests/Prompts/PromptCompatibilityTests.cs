using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.Prompts;

/// <summary>Prompts refused for another width (always) or another model (unless overridden).</summary>
public class PromptCompatibilityTests
{
    [Test]
    public void SameModelIsAccepted()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 10));
        var prompt = new PromptInit(model).Random(3, 1);
        Assert.That(PromptCompatibility.Check(prompt, model, allowMismatch: false), Is.EqualTo(new PromptCompatibilityResult(PromptMatch.SameModel, null)));
    }

    [Test]
    public void AnotherWidthIsRefusedEvenWithTheOverride()
    {
        var folder = PromptTestModels.TempFolder();
        using var narrow = ModelFolder.Open(PromptTestModels.Tiny(seed: 10));
        using var wide = ModelFolder.Open(PromptTestModels.Tiny(seed: 10, hidden: 24));
        var path = Path.Combine(folder, "narrow.safetensors");
        PromptFile.Save(path, new PromptInit(narrow).Random(3, 1), narrow);
        var prompt = PromptFile.Load(path);
        foreach (var allow in new[] { false, true })
        {
            var e = Assert.Throws<PromptCompatibilityException>(() => PromptCompatibility.Check(prompt, wide, allow));
            Assert.That(e!.Message, Does.Contain(path).And.Contain("width 16").And.Contain("hidden size 24").And.Contain(wide.Path).And.Contain("allowing a model mismatch cannot"));
            Assert.That(e.PromptSource, Is.EqualTo(path));
        }
        // PromptFile.Load with the model's width refuses it as well.
        Assert.Throws<PromptCompatibilityException>(() => PromptFile.Load(path, expectedWidth: 24));
    }

    [Test]
    public void AnotherModelOfTheSameWidthIsRefusedUnlessAllowed()
    {
        var folder = PromptTestModels.TempFolder();
        var aFolder = PromptTestModels.Tiny(seed: 11);
        var bFolder = PromptTestModels.Tiny(seed: 12);
        using var a = ModelFolder.Open(aFolder);
        using var b = ModelFolder.Open(bFolder);
        var path = Path.Combine(folder, "for-a.safetensors");
        PromptFile.Save(path, new PromptInit(a).Random(4, 2), a);
        var prompt = PromptFile.Load(path);
        string fa = ModelFingerprint.Compute(a), fb = ModelFingerprint.Compute(b);
        Assert.That(fa, Is.Not.EqualTo(fb));

        var e = Assert.Throws<PromptCompatibilityException>(() => PromptCompatibility.Check(prompt, b, allowMismatch: false));
        TestContext.Out.WriteLine(e!.Message);
        Assert.That(e.Message, Does.Contain(path).And.Contain(fa).And.Contain(fb)
            .And.Contain(Path.GetFileName(aFolder)).And.Contain(bFolder).And.Not.Contain("--"));
        Assert.That(e.MismatchCanBeAllowed, Is.True);

        var allowed = PromptCompatibility.Check(prompt, b, allowMismatch: true);
        Assert.That(allowed.Match, Is.EqualTo(PromptMatch.MismatchAllowed));
        Assert.That(allowed.Warning, Does.Contain(fa).And.Contain(fb));
        Assert.That(PromptCompatibility.Check(prompt, a, allowMismatch: false).Match, Is.EqualTo(PromptMatch.SameModel));
    }

    [Test]
    public void APromptWithoutFingerprintIsAcceptedOnWidth()
    {
        var folder = PromptTestModels.TempFolder();
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 13));
        var path = Path.Combine(folder, "peft-like.safetensors");
        // What PEFT's save_pretrained writes: the tensor and {"format": "pt"}, nothing about the model.
        PromptFile.Save(path, new float[3 * 16], 3, 16);
        var result = PromptCompatibility.Check(PromptFile.Load(path), model, allowMismatch: false);
        Assert.That(result.Match, Is.EqualTo(PromptMatch.NoFingerprint));
        Assert.That(result.Warning, Does.Contain(path));
    }

    [Test]
    public void InconsistentRecordedWidthIsRefused()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 13));
        var prompt = new SoftPrompt(new float[16], 1, 16, new Dictionary<string, string> { [PromptMetadata.BaseModelWidth] = "32" }) { Source = "odd.safetensors" };
        var e = Assert.Throws<PromptCompatibilityException>(() => PromptCompatibility.Check(prompt, model, allowMismatch: true));
        Assert.That(e!.Message, Does.Contain("odd.safetensors").And.Contain("32"));
    }
}
