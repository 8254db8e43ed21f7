using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The commands that read and write prompts treat every method alike (through <see cref="TunedPrompt"/>): a deep
/// prompt with its head exports to a PEFT adapter and imports back, inspects, and generates from the adapter as from the
/// file; a wrong-shape head is refused in one line naming the file and the tensor.</summary>
[NonParallelizable]
public class CliPromptMethodTests : CliTestBase
{
    static string Model => CliTinyModels.Llama();

    string WriteDeepPromptWithHead(int headWidth)
    {
        var path = Path.Combine(scratch, "deep.safetensors");
        using var model = ModelFolder.Open(Model);
        var head = new ClassifierHeadWeights(Enumerable.Range(0, 2 * headWidth).Select(i => i * 0.01f).ToArray(), [0.5f, -0.5f], ["ham", "spam"]);
        DeepPromptFile.Save(path, DeepPrompt.Random(model.Config, 2, seed: 3), headWidth == model.Config.HiddenSize ? model : null, head);
        return path;
    }

    [Test]
    public void ADeepPromptWithAHeadExportsImportsInspectsAndGenerates()
    {
        var prompt = WriteDeepPromptWithHead(16);
        var adapter = Path.Combine(scratch, "adapter");
        var export = Run("prompt", "export", prompt, "--model", Model, "--peft", adapter);
        Assert.That(export.Code, Is.EqualTo(0), export.Err);
        Assert.That(PeftAdapter.PeftType(adapter), Is.EqualTo("PREFIX_TUNING"));
        Assert.That(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName)), Does.Contain("\"SEQ_CLS\""), "the head goes along");

        var back = Path.Combine(scratch, "back.safetensors");
        var import = Run("prompt", "import", adapter, "--out", back, "--model", Model);
        Assert.That(import.Code, Is.EqualTo(0), import.Err);
        using (var model = ModelFolder.Open(Model))
        {
            var (original, imported) = (TunedPrompt.Load(prompt, model.Config), TunedPrompt.Load(back, model.Config));
            Assert.That(imported.Method, Is.EqualTo(PromptMethod.Prefix));
            Assert.That(imported.Values, Is.EqualTo(original.Values));
            Assert.That((imported.Head!.Weight, imported.Head.Bias, imported.Head.Labels), Is.EqualTo((original.Head!.Weight, original.Head.Bias, original.Head.Labels)));
        }
        var withoutModel = Run("prompt", "import", adapter, "--out", Path.Combine(scratch, "no-model.safetensors"));
        Assert.That(withoutModel.Code, Is.EqualTo(2), "a deep adapter is read against its model");
        Assert.That(withoutModel.Err, Does.Contain(adapter).And.Contain("peft_type").And.Not.Contain("\n   at "));

        var inspect = Run("prompt", "inspect", prompt);
        Assert.That(inspect.Code, Is.EqualTo(0), inspect.Err);
        Assert.That(inspect.Out, Does.Contain("method").And.Contain("prefix"));

        var fromFile = Run("generate", "--model", Model, "--method", "prefix", "--prompt", prompt, "--input", "Once", "--max-new-tokens", "3");
        var fromAdapter = Run("generate", "--model", Model, "--method", "prefix", "--prompt", adapter, "--input", "Once", "--max-new-tokens", "3");
        Assert.That(fromFile.Code, Is.EqualTo(0), fromFile.Err);
        Assert.That(fromAdapter.Code, Is.EqualTo(0), fromAdapter.Err);
        Assert.That(fromAdapter.Out, Is.EqualTo(fromFile.Out), "the adapter is the same prompt");
    }

    [Test]
    public void AHeadOfAnotherWidthIsRefusedNamingFileAndTensor([Values("export", "generate")] string command)
    {
        var prompt = WriteDeepPromptWithHead(12);
        string[] args = command == "export"
            ? ["prompt", "export", prompt, "--model", Model, "--peft", Path.Combine(scratch, "adapter")]
            : ["generate", "--model", Model, "--method", "prefix", "--prompt", prompt, "--max-new-tokens", "2"];
        var (code, _, err) = Run(args);
        Assert.That(code, Is.EqualTo(2), err);
        Assert.That(err.Trim(), Does.Contain(prompt).And.Contain("'head.weight'").And.Not.Contain("\n"));
        Assert.That(Directory.Exists(Path.Combine(scratch, "adapter")), Is.False, "nothing written");
    }
}
