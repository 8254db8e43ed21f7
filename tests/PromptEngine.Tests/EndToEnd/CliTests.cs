using PromptEngine.Safetensors;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The promptengine host as a user drives it: exit codes, what it prints, and the error line
/// for bad input (1 = bad command line, 2 = bad input file or data).</summary>
public class CliTests
{
    string scratch = "";

    [SetUp]
    public void CreateScratch() => scratch = Directory.CreateTempSubdirectory("pe-cli-").FullName;

    [TearDown]
    public void DeleteScratch() => Directory.Delete(scratch, recursive: true);

    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (output, error) = (new StringWriter(), new StringWriter());
        var code = PromptEngine.Cli.Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void UnknownFlagIsAnErrorNamingTheFlag()
    {
        var (code, _, err) = Run("inspect", "x.safetensors", "--bogus");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--bogus"));
    }

    [Test]
    public void MissingRequiredOptionIsNamed()
    {
        var (code, _, err) = Run("import-llama2c", "model.bin", "tokenizer.bin");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--out"));
    }

    [Test]
    public void InspectShowsTensorsOfAFile()
    {
        var path = Path.Combine(scratch, "t.safetensors");
        SafetensorsWriter.Write(path, [TensorToWrite.F32("prompt_embeddings", [3, 4], new float[12])], new Dictionary<string, string> { ["note"] = "[brackets] are not markup" });
        var (code, output, err) = Run("inspect", path);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("prompt_embeddings").And.Contain("[3, 4]").And.Contain("48").And.Contain("[brackets] are not markup"));
    }

    [Test]
    public void InspectOfAHostileFileIsOneLineNamingTheFile()
    {
        var path = Path.Combine(scratch, "bad.safetensors");
        File.WriteAllBytes(path, [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F, (byte)'{', (byte)'}']);
        var (code, _, err) = Run("inspect", path);
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.StartWith("error: ").And.Contain(path));
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace for bad input");
    }

    [Test]
    public void InspectOfAMissingPathIsAnError()
    {
        var (code, _, err) = Run("inspect", Path.Combine(scratch, "nothing"));
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain("nothing"));
    }

    [Test]
    public void PrepareImdbNamesTheMalformedRow()
    {
        var path = Path.Combine(scratch, "reviews.json");
        File.WriteAllText(path, """[{"t": "good", "s": 1}, {"t": "bad", "s": 7}]""");
        var (code, _, err) = Run("prepare-imdb", path, "--out", Path.Combine(scratch, "out"), "--validation", "0", "--test", "0");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain(path).And.Contain("row 1"));
    }

    [Test]
    public void ImportsStories15MAndInspectsTheFolder()
    {
        var output = Path.Combine(scratch, "stories15M");
        var import = Run("import-llama2c", TestAssets.Llama2cModelBin, TestAssets.Llama2cTokenizerBin, "--out", output);
        Assert.That(import.Code, Is.EqualTo(0), import.Err);
        Assert.That(import.Out, Does.Contain("56 tensors").And.Contain("15,191,712 parameters"));
        Assert.That(File.Exists(Path.Combine(output, "tokenizer.model")), Is.True);

        var again = Run("import-llama2c", TestAssets.Llama2cModelBin, TestAssets.Llama2cTokenizerBin, "--out", output);
        Assert.That(again.Code, Is.EqualTo(2), "a non-empty folder is not overwritten without --overwrite");
        Assert.That(again.Err, Does.Contain(output));

        var inspect = Run("inspect", output);
        Assert.That(inspect.Code, Is.EqualTo(0), inspect.Err);
        Assert.That(inspect.Out, Does.Contain("LlamaForCausalLM").And.Contain("15,191,712").And.Contain("[32000, 288]").And.Contain("all 56 tensors present"));
    }
}
