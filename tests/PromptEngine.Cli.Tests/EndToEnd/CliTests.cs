using PromptEngine.Safetensors;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>A scratch folder per test and an in-process run of the host with its output captured.</summary>
public abstract class CliTestBase
{
    protected string scratch = "";

    [SetUp]
    public void CreateScratch() => scratch = Directory.CreateTempSubdirectory("pe-cli-").FullName;

    [TearDown]
    public void DeleteScratch() => Directory.Delete(scratch, recursive: true);

    protected static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (output, error) = (new StringWriter(), new StringWriter());
        var code = PromptEngine.Cli.Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }
}

/// <summary>The promptengine host as a user drives it: exit codes, what it prints, and the error line
/// for bad input (1 = bad command line, 2 = bad input file or data).</summary>
public class CliTests : CliTestBase
{

    [Test]
    public void UnknownFlagIsAnErrorNamingTheFlag()
    {
        var (code, output, err) = Run("inspect", "x.safetensors", "--bogus");
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--bogus"));
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), "one line");
        Assert.That(output, Does.Not.Contain("Usage:"), "no help dump after an error; --help shows it");
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
    public void PrepareSpamSplitsATarAndNamesABadOne()
    {
        var tar = Path.Combine(scratch, "messages.tar");
        using (var file = File.Create(tar))
        using (var writer = new System.Formats.Tar.TarWriter(file, System.Formats.Tar.TarEntryFormat.Ustar))
            for (var i = 0; i < 8; i++)
                writer.WriteEntry(new System.Formats.Tar.UstarTarEntry(System.Formats.Tar.TarEntryType.RegularFile, $"{(i < 4 ? "easy-ham-1" : "spam-2")}/{i:D5}.x.txt")
                {
                    DataStream = new MemoryStream(System.Text.Encoding.ASCII.GetBytes($"Subject: mail {i}\n\nbody {i}\n")),
                });
        var (code, output, err) = Run("prepare-spam", tar, "--out", Path.Combine(scratch, "spam"), "--validation", "2", "--test", "2");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("validation").And.Contain("ham").And.Contain("spam"));
        Assert.That(File.ReadAllLines(Path.Combine(scratch, "spam", "validation.jsonl")), Has.Length.EqualTo(2));

        var tooMany = Run("prepare-spam", tar, "--out", Path.Combine(scratch, "spam2"), "--validation", "6", "--test", "6");
        Assert.That(tooMany.Code, Is.EqualTo(2));
        Assert.That(tooMany.Err, Does.StartWith("error: ").And.Contain("exceed the 8 rows"));
        Assert.That(tooMany.Err.Trim().Split('\n'), Has.Length.EqualTo(1));

        var notTar = Path.Combine(scratch, "not.tar");
        File.WriteAllText(notTar, new string('x', 2048));
        var bad = Run("prepare-spam", notTar, "--out", Path.Combine(scratch, "spam3"));
        Assert.That(bad.Code, Is.EqualTo(2));
        Assert.That(bad.Err, Does.StartWith("error: ").And.Contain(notTar));

        var flag = Run("prepare-spam", tar, "--out", Path.Combine(scratch, "spam4"), "--max-chars", "0");
        Assert.That(flag.Code, Is.EqualTo(1));
        Assert.That(flag.Err, Does.Contain("--max-chars must be positive"));
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
        Assert.That(again.Code, Is.EqualTo(1), "a non-empty folder is not overwritten without --overwrite");
        Assert.That(again.Err, Does.Contain(output).And.Contain("--overwrite"));

        var inspect = Run("inspect", output);
        Assert.That(inspect.Code, Is.EqualTo(0), inspect.Err);
        Assert.That(inspect.Out, Does.Contain("LlamaForCausalLM").And.Contain("15,191,712").And.Contain("[32000, 288]").And.Contain("all 56 tensors present"));
    }
}

/// <summary>The engine-backed commands on the real stories15M.</summary>
public class CliEngineTests : CliTestBase
{

    string WritePrompt(int rows, int width, string name = "prompt.safetensors")
    {
        var rng = new Random(3);
        var path = Path.Combine(scratch, name);
        PromptEngine.Prompts.PromptFile.Save(path, Enumerable.Range(0, rows * width).Select(_ => (float)(rng.NextDouble() * 0.2 - 0.1)).ToArray(), rows, width);
        return path;
    }

    [Test]
    public void LossPrintsJsonWithMemoryByArenaAndWritesTheGradient()
    {
        var prompt = WritePrompt(3, 288);
        var gradient = Path.Combine(scratch, "grad.safetensors");
        var (code, output, err) = Run("loss", "--model", TestAssets.Stories15MFolder, "--prompt", prompt, "--input", "Lily went to the park.",
            "--target", " She saw a dog.", "--placement", "suffix", "--grad-out", gradient, "--json");
        Assert.That(code, Is.EqualTo(0), err);
        using var json = System.Text.Json.JsonDocument.Parse(output);
        var root = json.RootElement;
        Assert.That(root.GetProperty("loss").GetDouble(), Is.GreaterThan(0).And.LessThan(10));
        Assert.That(root.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(3));
        Assert.That(root.GetProperty("scored_tokens").GetInt32(), Is.GreaterThan(3));
        var memory = root.GetProperty("memory_bytes");
        // The frozen weights are exactly the model's parameters in float32: no gradient or optimizer copy of them exists.
        Assert.That(memory.GetProperty("frozen_weights").GetInt64(), Is.EqualTo(15_191_712L * 4));
        Assert.That(memory.GetProperty("prompt_and_optimizer").GetInt64(), Is.LessThan(4 * 3 * 288 * 4 + 1024));
        using var file = PromptEngine.Safetensors.SafetensorsFile.Open(gradient);
        Assert.That(file.GetTensor("prompt_embeddings").Shape, Is.EqualTo(new long[] { 3, 288 }));
        Assert.That(file.Metadata["content"], Is.EqualTo("gradient"));
        Assert.That(file.ReadF32("prompt_embeddings").Any(g => g != 0), Is.True);
        // A gradient file is refused where a prompt is expected.
        var refused = Run("loss", "--model", TestAssets.Stories15MFolder, "--prompt", gradient, "--input", "Hello there.");
        Assert.That(refused.Code, Is.EqualTo(2));
        Assert.That(refused.Err, Does.Contain("gradient file"));
    }

    [Test]
    public void LossWithoutPromptMatchesTextScoring()
    {
        var (code, output, err) = Run("loss", "--model", TestAssets.Stories15MFolder, "--input", "Once upon a time, there was a little girl named Lily. She loved to play outside.");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.Contain("over 20 tokens").And.Contain("prompt 0 virtual tokens"));
        Assert.That(output, Does.Match(@"loss 0\.49\d+ nats/token"));
    }

    [Test]
    public void PromptOfTheWrongWidthOrGradOutWithoutPromptIsRefused()
    {
        var narrow = WritePrompt(2, 64);
        var wrongWidth = Run("loss", "--model", TestAssets.Stories15MFolder, "--prompt", narrow, "--input", "Hi there friend.");
        Assert.That(wrongWidth.Code, Is.EqualTo(2));
        Assert.That(wrongWidth.Err, Does.Contain(narrow).And.Contain("64").And.Contain("288"));
        var noPrompt = Run("loss", "--model", TestAssets.Stories15MFolder, "--input", "Hi there friend.", "--grad-out", Path.Combine(scratch, "g.safetensors"));
        Assert.That(noPrompt.Code, Is.EqualTo(1), "a flag without the flag it needs is a bad command line");
        Assert.That(noPrompt.Err, Does.Contain("--grad-out needs --prompt"));
        var badPlacement = Run("loss", "--model", TestAssets.Stories15MFolder, "--input", "x", "--placement", "middle");
        Assert.That(badPlacement.Code, Is.EqualTo(1));
        Assert.That(badPlacement.Err, Does.Contain("middle"));
    }

    [Test]
    public void GenerateContinuesAStoryAndValidatesItsFlags()
    {
        var (code, output, err) = Run("generate", "--model", TestAssets.Stories15MFolder, "--input", "Once upon a time", "--max-new-tokens", "8");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(output, Does.StartWith("Once upon a time, there was a little girl"));
        var sampled = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "6", "--temperature", "0.8", "--seed", "4");
        var again = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "6", "--temperature", "0.8", "--seed", "4");
        Assert.That(sampled.Code, Is.EqualTo(0), sampled.Err);
        Assert.That(again.Out, Is.EqualTo(sampled.Out), "same seed, same text");
        var negative = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "0");
        Assert.That(negative.Code, Is.EqualTo(1));
        Assert.That(negative.Err, Does.Contain("--max-new-tokens"));
    }

    [Test]
    public void PromptExportsToPeftAndImportsBackAndInspects()
    {
        var prompt = WritePrompt(5, 288);
        var adapter = Path.Combine(scratch, "adapter");
        var export = Run("prompt", "export", prompt, "--model", TestAssets.Stories15MFolder, "--peft", adapter);
        Assert.That(export.Code, Is.EqualTo(0), export.Err);
        var config = File.ReadAllText(Path.Combine(adapter, "adapter_config.json"));
        Assert.That(config, Does.Contain("\"peft_type\": \"PROMPT_TUNING\"").And.Contain("\"num_virtual_tokens\": 5").And.Contain("\"token_dim\": 288"));
        var back = Path.Combine(scratch, "back.safetensors");
        var import = Run("prompt", "import", adapter, "--out", back, "--model", TestAssets.Stories15MFolder);
        Assert.That(import.Code, Is.EqualTo(0), import.Err);
        Assert.That(PromptEngine.Prompts.PromptFile.Load(back).Values, Is.EqualTo(PromptEngine.Prompts.PromptFile.Load(prompt).Values));
        var inspect = Run("prompt", "inspect", back);
        Assert.That(inspect.Code, Is.EqualTo(0), inspect.Err);
        Assert.That(inspect.Out, Does.Contain("(5, 288)").And.Contain("base_model_fingerprint"));
        var broken = Run("prompt", "import", scratch, "--out", Path.Combine(scratch, "from-broken.safetensors"));
        Assert.That(broken.Code, Is.EqualTo(2));
        Assert.That(broken.Err, Does.StartWith("error: "));
    }
}

/// <summary>train and eval on the real stories15M and IMDB, at toy sizes.</summary>
[NonParallelizable]
public class CliTrainingTests : CliTestBase
{

    string[] TrainArgs(string output, int steps) =>
    [
        "train", "--model", TestAssets.Stories15MFolder,
        "--train", Path.Combine(TestAssets.ImdbSplitFolder, "train.jsonl"), "--validation", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"),
        "--out", output, "--steps", steps.ToString(), "--warmup", "1", "--batch-size", "2", "--virtual-tokens", "3", "--max-length", "24",
        "--train-examples", "40", "--eval-examples", "4", "--eval-every", "2", "--checkpoint-every", "1",
    ];

    [Test]
    public void TrainsSavesEverythingAndResumesToTheSamePrompt()
    {
        var straight = Path.Combine(scratch, "straight");
        var (code, output, err) = Run(TrainArgs(straight, 4));
        Assert.That(code, Is.EqualTo(0), err);
        foreach (var file in new[] { "best_prompt.safetensors", "checkpoint.safetensors", "metrics.csv", "curves.png", "eval.json", "adapter/adapter_config.json", "adapter/adapter_model.safetensors" })
            Assert.That(File.Exists(Path.Combine(straight, file)), Is.True, file);
        Assert.That(output, Does.Contain("Completed after 4 steps").And.Contain("accuracy after"));
        Assert.That(File.ReadAllBytes(Path.Combine(straight, "curves.png")).Take(4), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G' }));
        var rows = File.ReadAllLines(Path.Combine(straight, "metrics.csv"));
        Assert.That(rows, Has.Length.EqualTo(5), "header + one row per step");

        // The same run in two invocations: --stop-after 2 (a planned interruption), then --resume to the end.
        var halves = Path.Combine(scratch, "halves");
        var first = Run([.. TrainArgs(halves, 4), "--stop-after", "2"]);
        Assert.That(first.Code, Is.EqualTo(0), first.Err);
        Assert.That(first.Out, Does.Contain("Interrupted after 2 steps"));
        Assert.That(PromptEngine.Training.Checkpoint.Load(Path.Combine(halves, "checkpoint.safetensors")).Step, Is.EqualTo(2));
        var second = Run([.. TrainArgs(halves, 4), "--resume"]);
        Assert.That(second.Code, Is.EqualTo(0), second.Err);
        var straightCheckpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(straight, "checkpoint.safetensors"));
        var resumedCheckpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(halves, "checkpoint.safetensors"));
        Assert.That(resumedCheckpoint.Step, Is.EqualTo(4));
        Assert.That(resumedCheckpoint.Prompt, Is.EqualTo(straightCheckpoint.Prompt), "interrupted + resumed ends bit-identical to uninterrupted");
        Assert.That(resumedCheckpoint.AdamV, Is.EqualTo(straightCheckpoint.AdamV));
        Assert.That(File.ReadAllLines(Path.Combine(halves, "metrics.csv")), Has.Length.EqualTo(5), "the metrics file reads as one run");

        // Resuming with other settings is refused rather than silently mixing two runs.
        var other = Run([.. TrainArgs(halves, 6), "--resume"]);
        Assert.That(other.Code, Is.EqualTo(2));
        Assert.That(other.Err, Does.Contain("other settings"));
    }

    [Test]
    public void TrainRejectsBadFlagsWithOneLine()
    {
        var bad = Run("train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o", "--steps", "0");
        Assert.That(bad.Code, Is.EqualTo(1));
        Assert.That(bad.Err, Does.Contain("--steps must be positive"));
        var init = Run("train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o", "--init", "text");
        Assert.That(init.Code, Is.EqualTo(1));
        Assert.That(init.Err, Does.Contain("--init text needs --init-text"));
        var schedule = Run("train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o", "--schedule", "exponential");
        Assert.That(schedule.Err, Does.Contain("--schedule must be constant, linear or cosine"));
    }

    [Test]
    public void MalformedTrainingLineIsNamed()
    {
        var data = Path.Combine(scratch, "bad.jsonl");
        File.WriteAllLines(data, ["{\"text\": \"fine\", \"label\": \"positive\"}", "{\"text\": \"broken\"", "{\"text\": \"ok\", \"label\": \"negative\"}"]);
        var (code, _, err) = Run("train", "--model", TestAssets.Stories15MFolder, "--train", data, "--validation", data, "--out", Path.Combine(scratch, "o"), "--steps", "1", "--warmup", "0");
        Assert.That(code, Is.EqualTo(2));
        Assert.That(err, Does.Contain(data).And.Contain("line 2"));
    }

    [Test]
    public void EvalReportsAccuracyAndConfusion()
    {
        var (code, output, err) = Run("eval", "--model", TestAssets.Stories15MFolder, "--data", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"),
            "--examples", "6", "--max-length", "32", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        using var json = System.Text.Json.JsonDocument.Parse(output);
        Assert.That(json.RootElement.GetProperty("examples").GetInt32(), Is.EqualTo(6));
        var accuracy = json.RootElement.GetProperty("accuracy").GetDouble();
        Assert.That(accuracy, Is.InRange(0.0, 1.0));
        var confusion = json.RootElement.GetProperty("confusion");
        Assert.That(confusion.EnumerateArray().SelectMany(r => r.EnumerateArray()).Sum(c => c.GetInt64()), Is.EqualTo(6));
        var correct = confusion[0][0].GetInt64() + confusion[1][1].GetInt64();
        Assert.That(accuracy, Is.EqualTo(correct / 6.0).Within(1e-12));
    }

    [Test]
    public void TrainAndEvalRunOnTheSpamSplitWithItsTemplateAndLabelWords()
    {
        string[] task = ["--model", TestAssets.Stories15MFolder, "--template", PromptEngine.Data.SpamAssassinPreparer.Template,
            "--labels", "ham", "spam", "--label-words", " no", " yes", "--max-length", "40"];
        var output = Path.Combine(scratch, "spam");
        var train = Run([
            "train", .. task, "--train", Path.Combine(TestAssets.SpamSplitFolder, "train.jsonl"),
            "--validation", Path.Combine(TestAssets.SpamSplitFolder, "validation.jsonl"), "--out", output,
            "--steps", "2", "--warmup", "1", "--batch-size", "2", "--virtual-tokens", "3", "--train-examples", "20", "--eval-examples", "4", "--eval-every", "2",
        ]);
        Assert.That(train.Code, Is.EqualTo(0), train.Err);
        var eval = Run(["eval", .. task, "--data", Path.Combine(TestAssets.SpamSplitFolder, "validation.jsonl"),
            "--prompt", Path.Combine(output, "best_prompt.safetensors"), "--examples", "6", "--json"]);
        Assert.That(eval.Code, Is.EqualTo(0), eval.Err);
        using var json = System.Text.Json.JsonDocument.Parse(eval.Out);
        Assert.That(json.RootElement.GetProperty("examples").GetInt32(), Is.EqualTo(6));
        Assert.That(json.RootElement.GetProperty("confusion").EnumerateArray().SelectMany(r => r.EnumerateArray()).Sum(c => c.GetInt64()), Is.EqualTo(6));
    }

    [Test]
    public void TrainsAPromptForGenerationTargetsWithLossOnTheOutputOnly()
    {
        var data = Path.Combine(scratch, "pairs.jsonl");
        File.WriteAllLines(data,
        [
            "{\"input\": \"Lily had a red\", \"output\": \" ball.\"}",
            "{\"input\": \"Tom saw a big\", \"output\": \" dog.\"}",
            "{\"input\": \"The sun was\", \"output\": \" hot.\"}",
            "{\"input\": \"Mom made a\", \"output\": \" cake.\"}",
        ]);
        var output = Path.Combine(scratch, "gen");
        var (code, stdout, err) = Run("train", "--model", TestAssets.Stories15MFolder, "--task", "Generation", "--train", data, "--validation", data,
            "--out", output, "--steps", "8", "--warmup", "0", "--batch-size", "4", "--virtual-tokens", "4", "--lr", "0.05", "--eval-every", "2", "--max-length", "32");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(stdout, Does.Contain("validation loss (best prompt)"));
        var evalLosses = File.ReadAllLines(Path.Combine(output, "metrics.csv")).Skip(1).Select(l => l.Split(','))
            .Where(f => f[6].Length > 0).Select(f => double.Parse(f[6], System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.That(evalLosses, Has.Count.EqualTo(4));
        Assert.That(evalLosses[^1], Is.LessThan(evalLosses[0]), "tuning the prompt on these pairs lowers their output loss");
        Assert.That(File.Exists(Path.Combine(output, "adapter", "adapter_model.safetensors")), Is.True);
    }
}
