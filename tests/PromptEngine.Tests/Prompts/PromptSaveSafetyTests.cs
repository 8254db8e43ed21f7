using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.Prompts;

/// <summary>Never lose a saved prompt: a save that fails leaves the previous file (or adapter) intact,
/// and a good save replaces it whole.</summary>
public class PromptSaveSafetyTests
{
    static float[] Values(int count, float start) => Enumerable.Range(0, count).Select(i => start + i).ToArray();

    static void AssertOnlyFiles(string folder, params string[] names) =>
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName), Is.EquivalentTo(names), "no temporary files left behind");

    [Test]
    public void PromptFileFailedSaveKeepsTheOldPrompt()
    {
        var folder = PromptTestModels.TempFolder();
        var path = Path.Combine(folder, "prompt.safetensors");
        var good = Values(8, 1f);
        PromptFile.Save(path, good, 2, 4);

        var bad = Values(8, 50f);
        bad[6] = float.NaN;
        var e = Assert.Throws<PromptFormatException>(() => PromptFile.Save(path, bad, 2, 4));
        Assert.That(e!.Message, Does.Contain(path).And.Contain("row 1, column 2"));
        bad[6] = float.PositiveInfinity;
        Assert.Throws<PromptFormatException>(() => PromptFile.Save(path, new SoftPrompt(bad, 2, 4, new Dictionary<string, string>())));
        Assert.Throws<ArgumentException>(() => PromptFile.Save(path, Values(7, 0f), 2, 4));
        Assert.That(PromptFile.Load(path).Values, Is.EqualTo(good));
        AssertOnlyFiles(folder, "prompt.safetensors");

        var better = Values(12, -3f);
        PromptFile.Save(path, better, 3, 4);
        var loaded = PromptFile.Load(path);
        Assert.That((loaded.VirtualTokens, loaded.Values), Is.EqualTo((3, better)));
        AssertOnlyFiles(folder, "prompt.safetensors");
    }

    [Test]
    public void GradientFilesMayHoldAnyValueAndAreNeverLoadedAsPrompts()
    {
        var path = Path.Combine(PromptTestModels.TempFolder(), "grad.safetensors");
        var gradient = Values(4, 0f);
        gradient[1] = float.NaN;
        PromptFile.Save(path, gradient, 1, 4, isGradient: true);
        Assert.That(Assert.Throws<PromptFormatException>(() => PromptFile.Load(path))!.Message, Does.Contain("gradient"));
    }

    [Test]
    public void PromptFileSaveWithModelWritesItsDescription()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 40));
        var path = Path.Combine(PromptTestModels.TempFolder(), "p.safetensors");
        var prompt = new SoftPrompt(Values(32, 0f), 2, 16, new Dictionary<string, string> { ["note"] = "mine", [PromptMetadata.BaseModelFingerprint] = "stale" });
        PromptFile.Save(path, prompt, model);
        var loaded = PromptFile.Load(path);
        Assert.That(loaded.Meta("note"), Is.EqualTo("mine"));
        Assert.That(loaded.Meta(PromptMetadata.BaseModelFingerprint), Is.EqualTo(ModelFingerprint.Compute(model)), "the model's description wins");
        Assert.That(loaded.Meta(PromptMetadata.BaseModelWidth), Is.EqualTo("16"));
        Assert.That(loaded.Meta(PromptMetadata.VirtualTokens), Is.EqualTo("2"));
        Assert.That(loaded.Source, Is.EqualTo(path));
        Assert.Throws<PromptCompatibilityException>(() => PromptFile.Save(path, new SoftPrompt(Values(24, 0f), 1, 24, new Dictionary<string, string>()), model));
        Assert.That(PromptFile.Load(path).Values, Is.EqualTo(prompt.Values));
    }

    [Test]
    public void BankFailedSaveKeepsTheOldBank()
    {
        var folder = PromptTestModels.TempFolder();
        var path = Path.Combine(folder, "bank.safetensors");
        var bank = new PromptBank();
        var values = Values(8, 1f);
        bank.Add("a", new SoftPrompt(values, 2, 4, new Dictionary<string, string>()));
        bank.Save(path);
        values[3] = float.NaN; // the caller's array changed after Add
        Assert.That(Assert.Throws<PromptFormatException>(() => bank.Save(path))!.Message, Does.Contain($"{path}#a"));
        Assert.That(PromptBank.Load(path).Get("a").Values, Is.EqualTo(Values(8, 1f)));
        AssertOnlyFiles(folder, "bank.safetensors");
    }

    [Test]
    public void AdapterFailedSaveKeepsTheOldAdapter()
    {
        using var model = ModelFolder.Open(PromptTestModels.Tiny(seed: 41));
        var folder = Path.Combine(PromptTestModels.TempFolder(), "adapter");
        var good = new PromptInit(model).Random(3, seed: 1);
        PeftAdapter.Save(folder, good, model);
        var config = File.ReadAllText(Path.Combine(folder, PeftAdapter.ConfigFileName));

        var bad = new PromptInit(model).Random(4, seed: 2);
        bad.Values[5] = float.NegativeInfinity;
        Assert.Throws<PromptFormatException>(() => PeftAdapter.Save(folder, bad, model));
        Assert.That(PeftAdapter.Load(folder).Values, Is.EqualTo(good.Values));
        Assert.That(File.ReadAllText(Path.Combine(folder, PeftAdapter.ConfigFileName)), Is.EqualTo(config));
        AssertOnlyFiles(folder, PeftAdapter.ConfigFileName, PeftAdapter.WeightsFileName);

        bad.Values[5] = 0;
        PeftAdapter.Save(folder, bad, model);
        Assert.That(PeftAdapter.Load(folder).VirtualTokens, Is.EqualTo(4), "a good save replaces both files");
        AssertOnlyFiles(folder, PeftAdapter.ConfigFileName, PeftAdapter.WeightsFileName);
    }
}
