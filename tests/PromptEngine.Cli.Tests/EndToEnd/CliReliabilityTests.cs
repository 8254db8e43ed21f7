using System.Security.Cryptography;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>What a hostile user found in the host (issue 16): nothing lost, nothing crashes, every refusal one line
/// with the documented exit code (1: the command line must change, naming the flag; 2: an input is bad, naming it).
/// Runs on <see cref="CliTinyModels"/>, so each command takes well under a second.</summary>
[NonParallelizable]
public class CliReliabilityTests : CliTestBase
{
    [Test]
    public void TheOlderPromptTokensFlagStillSetsTheVirtualTokens()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var output = Path.Combine(scratch, "run");
        var args = TrainArgs(output, data);
        args[Array.IndexOf(args, "--virtual-tokens")] = "--prompt-tokens";
        args[Array.IndexOf(args, "--prompt-tokens") + 1] = "3";
        var (code, _, err) = Run([.. args, "--init", "random"]);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(PromptFile.Load(Path.Combine(output, "best_prompt.safetensors")).VirtualTokens, Is.EqualTo(3));
    }

    static string Model => CliTinyModels.Llama();

    string[] TrainArgs(string output, string data, int steps = 2) =>
    [
        "train", "--model", Model, "--train", data, "--validation", data, "--out", output, "--steps", steps.ToString(), "--warmup", "0",
        "--batch-size", "2", "--virtual-tokens", "2", "--max-length", "24", "--eval-every", "0", "--checkpoint-every", "1",
    ];

    static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));

    static Dictionary<string, string> HashTree(string folder) =>
        Directory.EnumerateFiles(folder, "*", SearchOption.AllDirectories).ToDictionary(f => f, Hash);

    static void AssertOneLine(string err, string because = "")
    {
        Assert.That(err, Does.Not.Contain("   at "), "no stack trace " + because);
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), $"one line {because}: {err}");
    }

    string WritePrompt(int rows, int width, string name = "prompt.safetensors", string? model = null)
    {
        var rng = new Random(3);
        var path = Path.Combine(scratch, name);
        var values = Enumerable.Range(0, rows * width).Select(_ => (float)(rng.NextDouble() * 0.2 - 0.1)).ToArray();
        if (model is null) PromptFile.Save(path, values, rows, width);
        else
        {
            using var folder = PromptEngine.Models.ModelFolder.Open(model);
            PromptFile.Save(path, new SoftPrompt(values, rows, width, new Dictionary<string, string>()), folder);
        }
        return path;
    }

    [Test]
    public void ASecondTrainIntoTheSameOutIsRefusedAndTheFirstRunIsKept()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var output = Path.Combine(scratch, "run");
        var first = Run(TrainArgs(output, data));
        Assert.That(first.Code, Is.EqualTo(0), first.Err);
        var before = HashTree(output);
        var second = Run([.. TrainArgs(output, data, steps: 3), "--seed", "9"]);
        Assert.That(second.Code, Is.EqualTo(1));
        Assert.That(second.Err, Does.Contain("--out").And.Contain(output).And.Contain("--resume"));
        AssertOneLine(second.Err);
        Assert.That(HashTree(output), Is.EqualTo(before), "the first run's checkpoint, prompt, adapter and metrics are untouched");
    }

    [Test]
    public void TrainNeverWritesItsOutputsOverItsInputs()
    {
        var output = Path.Combine(scratch, "run");
        Directory.CreateDirectory(output);
        var data = CliTinyModels.SentimentData(output, "metrics.csv");
        var before = Hash(data);
        var (code, _, err) = Run(TrainArgs(output, data));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--train").And.Contain("metrics.csv"));
        Assert.That(Hash(data), Is.EqualTo(before));
    }

    [Test]
    public void LossRefusesToWriteTheGradientOverItsPromptOrAFileNotItsOwn()
    {
        var prompt = WritePrompt(2, 16, model: Model);
        var before = Hash(prompt);
        var same = Run("loss", "--model", Model, "--prompt", prompt, "--input", "Hi there.", "--grad-out", prompt);
        Assert.That(same.Code, Is.EqualTo(1));
        Assert.That(same.Err, Does.Contain("--grad-out").And.Contain("--prompt"));
        AssertOneLine(same.Err);
        var link = Path.Combine(scratch, "link.safetensors");
        File.CreateSymbolicLink(link, prompt);
        var viaLink = Run("loss", "--model", Model, "--prompt", prompt, "--input", "Hi there.", "--grad-out", link);
        Assert.That(viaLink.Code, Is.EqualTo(1), "a symbolic link to the prompt is the prompt");
        var other = WritePrompt(2, 16, "other.safetensors", Model);
        var otherHash = Hash(other);
        var notOurs = Run("loss", "--model", Model, "--prompt", prompt, "--input", "Hi there.", "--grad-out", other);
        Assert.That(notOurs.Code, Is.EqualTo(1));
        Assert.That(notOurs.Err, Does.Contain("not a gradient file"));
        Assert.That((Hash(prompt), Hash(other)), Is.EqualTo((before, otherHash)));
        // A gradient file written before may be replaced.
        var gradient = Path.Combine(scratch, "grad.safetensors");
        Assert.That(Run("loss", "--model", Model, "--prompt", prompt, "--input", "Hi there.", "--grad-out", gradient).Code, Is.EqualTo(0));
        Assert.That(Run("loss", "--model", Model, "--prompt", prompt, "--input", "Hi again.", "--grad-out", gradient).Code, Is.EqualTo(0));
    }

    [Test]
    public void PromptImportAndExportReplaceNothingWithoutOverwrite()
    {
        var prompt = WritePrompt(2, 16, model: Model);
        var adapter = Path.Combine(scratch, "adapter");
        Assert.That(Run("prompt", "export", prompt, "--model", Model, "--peft", adapter).Code, Is.EqualTo(0));
        var adapterHashes = HashTree(adapter);
        var other = WritePrompt(3, 16, "other.safetensors", Model);
        var again = Run("prompt", "export", other, "--model", Model, "--peft", adapter);
        Assert.That(again.Code, Is.EqualTo(1));
        Assert.That(again.Err, Does.Contain("--overwrite"));
        Assert.That(HashTree(adapter), Is.EqualTo(adapterHashes));

        var existing = Path.Combine(scratch, "notes.txt");
        File.WriteAllText(existing, "mine");
        var import = Run("prompt", "import", adapter, "--out", existing);
        Assert.That(import.Code, Is.EqualTo(1));
        Assert.That(import.Err, Does.Contain("--overwrite").And.Contain(existing));
        Assert.That(File.ReadAllText(existing), Is.EqualTo("mine"));
        var replaced = Run("prompt", "import", adapter, "--out", existing, "--overwrite");
        Assert.That(replaced.Code, Is.EqualTo(0), replaced.Err);
        var overInput = Run("prompt", "import", adapter, "--out", Path.Combine(adapter, "adapter_model.safetensors"), "--overwrite");
        Assert.That(overInput.Code, Is.EqualTo(1), "never over an input, even with --overwrite");
        Assert.That(HashTree(adapter), Is.EqualTo(adapterHashes));
    }

    static IEnumerable<TestCaseData> BadValues()
    {
        string[] train = ["train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o"];
        string[] generate = ["generate", "--model", "m", "--max-new-tokens", "3"];
        foreach (var (flag, value) in new[] { ("--steps", "abc"), ("--lr", "Infinity"), ("--lr", "NaN"), ("--lr", "1e30"), ("--weight-decay", "nan"), ("--weight-decay", "-1"),
                     ("--max-grad-norm", "Infinity"), ("--prefix-projection", "x"), ("--batch-size", "1e3"), ("--seed", "-1"), ("--out", "") })
            yield return new TestCaseData(train.Where((_, i) => !(flag == "--out" && i == 8)).Concat(flag == "--out" ? [value] : new[] { flag, value }).ToArray(), flag)
                .SetArgDisplayNames($"train {flag} '{value}'");
        foreach (var (flag, value) in new[] { ("--max-new-tokens", "abc"), ("--temperature", "abc"), ("--temperature", "Infinity"), ("--top-p", "NaN"), ("--top-k", "z") })
            yield return new TestCaseData(generate.Concat([flag, value]).ToArray(), flag).SetArgDisplayNames($"generate {flag} '{value}'");
        yield return new TestCaseData(new[] { "eval", "--model", "m", "--data", "d", "--batch-size", "many" }, "--batch-size").SetArgDisplayNames("eval --batch-size many");
        yield return new TestCaseData(new[] { "prepare-imdb", "r.json", "--out", "o", "--validation", "-1" }, "--validation").SetArgDisplayNames("prepare-imdb --validation -1");
        yield return new TestCaseData(new[] { "train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o", "--warmup", "20", "--steps", "10" }, "--warmup")
            .SetArgDisplayNames("train --warmup > --steps");
        yield return new TestCaseData(new[] { "loss", "--model", "m", "--input", "x", "--grad-out", "g" }, "--grad-out").SetArgDisplayNames("loss --grad-out without --prompt");
    }

    [TestCaseSource(nameof(BadValues))]
    public void ABadValueIsOneLineNamingTheFlagWithExitCode1(string[] args, string flag)
    {
        var (code, _, err) = Run(args);
        Assert.That(code, Is.EqualTo(1), err);
        Assert.That(err, Does.Contain(flag));
        AssertOneLine(err);
    }

    [Test]
    public void EmptyDataFilesAreNamed()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var empty = Path.Combine(scratch, "empty.jsonl");
        File.WriteAllText(empty, "");
        var validation = Run("train", "--model", Model, "--train", data, "--validation", empty, "--out", Path.Combine(scratch, "a"), "--steps", "1", "--warmup", "0", "--max-length", "24");
        Assert.That(validation.Code, Is.EqualTo(2));
        Assert.That(validation.Err, Does.Contain(empty).And.Contain("--validation").And.Contain("no examples"));
        AssertOneLine(validation.Err);
        var train = Run("train", "--model", Model, "--train", empty, "--validation", data, "--out", Path.Combine(scratch, "b"), "--steps", "1", "--warmup", "0", "--max-length", "24");
        Assert.That(train.Code, Is.EqualTo(2));
        Assert.That(train.Err, Does.Contain(empty).And.Contain("--train"));
        var eval = Run("eval", "--model", Model, "--data", empty, "--max-length", "24");
        Assert.That(eval.Code, Is.EqualTo(2));
        Assert.That(eval.Err, Does.Contain(empty));
    }

    [Test]
    public void AModelGivingNaNLogitsIsRefusedByEvalGenerateAndLoss()
    {
        var broken = CliTinyModels.Llama(nanWeights: true);
        var data = CliTinyModels.SentimentData(scratch);
        foreach (var args in new[]
                 {
                     new[] { "eval", "--model", broken, "--data", data, "--max-length", "24" },
                     ["generate", "--model", broken, "--input", "Once upon a time", "--max-new-tokens", "4"],
                     ["loss", "--model", broken, "--input", "Once upon a time"],
                 })
        {
            var (code, output, err) = Run(args);
            Assert.That(code, Is.EqualTo(2), $"{args[0]}: {err}");
            Assert.That(err, Does.Contain(broken).And.Contain("non-finite"), args[0]);
            AssertOneLine(err, args[0]);
            Assert.That(output, Does.Not.Contain("⁇"), args[0]);
        }
    }

    [Test]
    public void BatchSizesLargerThanTheDataAreSizedByTheData()
    {
        var data = CliTinyModels.SentimentData(scratch, rows: 4);
        var train = Run("train", "--model", Model, "--train", data, "--validation", data, "--out", Path.Combine(scratch, "run"), "--steps", "1", "--warmup", "0",
            "--batch-size", "1000000", "--virtual-tokens", "2", "--max-length", "24");
        Assert.That(train.Code, Is.EqualTo(0), train.Err);
        var eval = Run("eval", "--model", Model, "--data", data, "--batch-size", "100000", "--examples", "2", "--max-length", "24", "--json");
        Assert.That(eval.Code, Is.EqualTo(0), eval.Err);
    }

    [Test]
    public void MemoryTheEngineCannotGetIsOneLineWithTheBytes()
    {
        using var model = PromptEngine.Models.ModelFolder.Open(Model);
        using var kernels = PromptEngine.Kernels.KernelContext.Create(PromptEngine.Kernels.KernelBackend.Cpu);
        // About 10^15 bytes of activations: no machine has them, and the allocation fails at once rather than paging.
        var e = Assert.Throws<PromptEngineException>(() => PromptEngine.Cli.Commands.EngineFactory.Create(kernels, model,
            new PromptEngine.Engine.EngineOptions(int.MaxValue / 64, 64, 2)));
        Assert.That(e!.Message, Does.Contain("not enough memory").And.Contain("bytes").And.Contain("--batch-size"));
        Assert.That(e.Message.Split('\n'), Has.Length.EqualTo(1));
    }

    [Test]
    public void PrepareImdbWithTooFewRowsNamesTheFlags()
    {
        var reviews = Path.Combine(scratch, "reviews.json");
        File.WriteAllText(reviews, """[{"t": "good", "s": 1}, {"t": "bad", "s": 0}]""");
        var (code, _, err) = Run("prepare-imdb", reviews, "--out", Path.Combine(scratch, "out"));
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--validation").And.Contain(reviews));
        AssertOneLine(err);
    }

    [Test]
    public void GenerateAndLossRefuseAPromptMadeForAnotherModel()
    {
        var other = CliTinyModels.Llama(seed: 2);
        var prompt = WritePrompt(2, 16, model: other);
        foreach (var args in new[]
                 {
                     new[] { "generate", "--model", Model, "--prompt", prompt, "--input", "Once", "--max-new-tokens", "2" },
                     ["loss", "--model", Model, "--prompt", prompt, "--input", "Once upon a time"],
                 })
        {
            var refused = Run(args);
            Assert.That(refused.Code, Is.EqualTo(2), args[0]);
            Assert.That(refused.Err, Does.Contain(prompt).And.Contain("--allow-model-mismatch"), args[0]);
            var allowed = Run([.. args, "--allow-model-mismatch"]);
            Assert.That(allowed.Code, Is.EqualTo(0), allowed.Err);
            Assert.That(allowed.Err, Does.Contain("warning"));
        }
    }

    [Test]
    public void EvalAndGenerateRefuseADeepPromptMadeForAnotherModel()
    {
        var other = CliTinyModels.Llama(seed: 2);
        var path = Path.Combine(scratch, "deep.safetensors");
        using (var otherFolder = PromptEngine.Models.ModelFolder.Open(other))
            DeepPromptFile.Save(path, DeepPrompt.Random(otherFolder.Config, 2, seed: 4), otherFolder); // same shape, another model
        var data = CliTinyModels.SentimentData(scratch);
        foreach (var args in new[]
                 {
                     new[] { "generate", "--model", Model, "--method", "prefix", "--prompt", path, "--input", "Once", "--max-new-tokens", "2" },
                     ["eval", "--model", Model, "--method", "prefix", "--prompt", path, "--data", data],
                 })
        {
            var refused = Run(args);
            Assert.That(refused.Code, Is.EqualTo(2), args[0]);
            Assert.That(refused.Err, Does.Contain(path).And.Contain("--allow-model-mismatch"), args[0]);
            AssertOneLine(refused.Err);
            var allowed = Run([.. args, "--allow-model-mismatch"]);
            Assert.That(allowed.Code, Is.EqualTo(0), allowed.Err);
            Assert.That(allowed.Err, Does.Contain("warning"));
        }
    }

    [Test]
    public void LengthsBeyondTheModelsContextAreRefusedNotCapped()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var generate = Run("generate", "--model", Model, "--max-new-tokens", "1000000");
        Assert.That(generate.Code, Is.EqualTo(1));
        Assert.That(generate.Err, Does.Contain("--max-new-tokens").And.Contain($"{CliTinyModels.Positions} positions"));
        var eval = Run("eval", "--model", Model, "--data", data, "--max-length", "100000");
        Assert.That(eval.Code, Is.EqualTo(1));
        Assert.That(eval.Err, Does.Contain("--max-length 100000"));
        AssertOneLine(eval.Err);
        // The default (128) is not the user's request: on a 64-position model it is lowered, not refused.
        Assert.That(Run("eval", "--model", Model, "--data", data).Code, Is.EqualTo(0));
    }

    [Test]
    public void APromptLongerThanTheRowsAllowIsRefusedNamingTheFlags([Values("prompt", "prefix")] string method)
    {
        var data = CliTinyModels.SentimentData(scratch);
        var args = TrainArgs(Path.Combine(scratch, "run"), data);
        args[Array.IndexOf(args, "--virtual-tokens") + 1] = "100";
        var (code, _, err) = Run([.. args, "--method", method, "--init", "random"]);
        Assert.That(code, Is.EqualTo(1), err);
        Assert.That(err, Does.Contain("--virtual-tokens").Or.Contain("--max-length"));
        AssertOneLine(err);
    }

    [Test]
    public void TheDefaultWarmupFitsAShortRunWhileAGivenOneMustFit()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var args = TrainArgs(Path.Combine(scratch, "run"), data).ToList();
        args.RemoveRange(args.IndexOf("--warmup"), 2);
        var (code, _, err) = Run([.. args]);
        Assert.That(code, Is.EqualTo(0), err);
        var given = Run([.. args.Select(a => a.EndsWith("run") ? a + "2" : a), "--warmup", "5"]);
        Assert.That(given.Code, Is.EqualTo(1));
        Assert.That(given.Err, Does.Contain("--warmup 5"));
    }

    [Test]
    public void LabelsAcceptACommaSeparatedList()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var (code, output, err) = Run("eval", "--model", Model, "--data", data, "--max-length", "24", "--labels", "positive,negative", "--json");
        Assert.That(code, Is.EqualTo(0), err);
        using var json = System.Text.Json.JsonDocument.Parse(output);
        Assert.That(json.RootElement.GetProperty("labels").EnumerateArray().Select(l => l.GetString()), Is.EqualTo(new[] { "positive", "negative" }));
        var help = Run("eval", "--help");
        Assert.That(help.Out, Does.Contain("comma"));
    }

    [Test]
    public void FoldersAndFilesInTheWrongPlaceNameTheFlag()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var folder = Run("train", "--model", Model, "--train", scratch, "--validation", data, "--out", Path.Combine(scratch, "o"), "--max-length", "24");
        Assert.That(folder.Code, Is.EqualTo(2));
        Assert.That(folder.Err, Does.Contain("--train").And.Contain("is a folder"));
        Assert.That(folder.Err, Does.Not.Contain("denied"));
        var outIsFile = Run(TrainArgs(data, data));
        Assert.That(outIsFile.Code, Is.EqualTo(1));
        Assert.That(outIsFile.Err, Does.Contain("--out").And.Contain("is a file"));
        var outUnderFile = Run(TrainArgs(Path.Combine(data, "run"), data));
        Assert.That(outUnderFile.Code, Is.EqualTo(1));
        Assert.That(outUnderFile.Err, Does.Contain("--out").And.Contain("which is a file"));
        AssertOneLine(outUnderFile.Err);
    }

    [Test]
    public void ATemplateErrorIsExitCode1AndDoesNotEchoAHugeTemplate()
    {
        var data = CliTinyModels.SentimentData(scratch);
        var template = "{prompt}{text}{oops}" + new string('x', 100_000) + "{answer}";
        var (code, _, err) = Run("eval", "--model", Model, "--data", data, "--max-length", "24", "--template", template);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--template"));
        Assert.That(err.Length, Is.LessThan(400), "the message quotes the start of the template, not 100 KB");
        AssertOneLine(err);
    }

    [Test]
    public void MessagesNameFlagsNotLibraryCalls()
    {
        var prompt = WritePrompt(2, 16, model: Model);
        var bank = Run("eval", "--model", Model, "--data", CliTinyModels.SentimentData(scratch), "--max-length", "24", "--prompt", prompt + "#first");
        Assert.That(bank.Code, Is.EqualTo(2));
        Assert.That(bank.Err, Does.Not.Contain("PromptFile.Load").And.Contain("not a prompt bank"));
        var output = Path.Combine(scratch, "model");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "mine");
        var import = Run("import-llama2c", TestAssets.Llama2cModelBin, TestAssets.Llama2cTokenizerBin, "--out", output);
        Assert.That(import.Code, Is.EqualTo(1));
        Assert.That(import.Err, Does.Contain("--overwrite").And.Not.Contain("overwrite: true"));
    }

    [Test]
    public void GeneratedTextIsNotWrappedWhenPiped()
    {
        var (code, output, err) = Run("generate", "--model", Model, "--input", "Once upon a time", "--max-new-tokens", "40", "--temperature", "1", "--seed", "3");
        Assert.That(code, Is.EqualTo(0), err);
        var text = output.TrimEnd('\n', '\r');
        Assert.That(text.Length, Is.GreaterThan(80), "long enough that an 80-column console would have wrapped it");
        Assert.That(text, Does.Not.Contain('\n'));
    }

    [Test]
    public void AFailedCurvesWriteLeavesNoTemporaryFile()
    {
        var target = Path.Combine(scratch, "curves.png");
        Directory.CreateDirectory(target); // a folder where the PNG should go makes the final move fail
        File.WriteAllText(Path.Combine(target, "inside"), "x");
        Assert.That(() => PromptEngine.Cli.Reporting.CurvePlot.Save(target, [(1, 1.0), (2, 0.5)], [], "accuracy", "t"), Throws.InstanceOf<IOException>().Or.InstanceOf<UnauthorizedAccessException>());
        Assert.That(Directory.GetFiles(scratch), Is.Empty, "no curves.png.tmp.png left behind");
    }
}
