using System.Text.Json;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.EndToEnd;

/// <summary><c>train --head linear</c>: the flag's refusals, and toy runs on the real stories15M and IMDB (plain and deep
/// prompts) whose best prompt and PEFT adapter carry the head, which <c>eval</c> then uses — and refuses, in one line
/// naming the file and the tensor, when it does not fit the task.</summary>
[NonParallelizable]
public class CliClassifierHeadTests : CliTestBase
{
    static readonly string[] Required = ["train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o"];

    [TestCase(new[] { "--head", "mlp" }, "--head must be none or linear")]
    [TestCase(new[] { "--head", "linear", "--head-lr", "0" }, "--head-lr must be positive")]
    public void BadUseOfTheFlagIsRefusedNamingIt(string[] flags, string message)
    {
        var (code, _, err) = Run([.. Required, .. flags]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain(message));
    }

    static string Data(string split) => Path.Combine(TestAssets.ImdbSplitFolder, $"{split}.jsonl");

    [TestCase("prompt")]
    [TestCase("prefix")]
    public void TrainsAHeadWithThePromptAndEvalUsesIt(string method)
    {
        var output = Path.Combine(scratch, $"head-{method}");
        string[] train = ["train", "--model", TestAssets.Stories15MFolder, "--method", method, "--head", "linear",
            "--train", Data("train"), "--validation", Data("validation"),
            "--out", output, "--steps", "3", "--warmup", "1", "--batch-size", "2", "--virtual-tokens", "2", "--max-length", "24", "--init", "random",
            "--train-examples", "20", "--eval-examples", "4", "--eval-every", "3", "--checkpoint-every", "1"];
        var (code, text, err) = Run(train);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("Completed after 3 steps"));

        var best = Path.Combine(output, "best_prompt.safetensors");
        var head = ClassifierHeadWeights.Read(best, 288, ["negative", "positive"]);
        Assert.That(head, Is.Not.Null, "the best prompt carries the head");
        Assert.That((head!.Classes, head.Width), Is.EqualTo((2, 288)));
        var adapter = Path.Combine(output, "adapter");
        using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName))))
            Assert.That(json.RootElement.GetProperty("task_type").GetString(), Is.EqualTo("SEQ_CLS"));
        var fromAdapter = PeftAdapter.LoadHead(adapter, 288, ["negative", "positive"])!;
        Assert.That((fromAdapter.Weight, fromAdapter.Bias), Is.EqualTo((head.Weight, head.Bias)), "the adapter holds the same head");
        var checkpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(output, "checkpoint.safetensors"));
        Assert.That(checkpoint.Head, Has.Length.EqualTo(2 * 288 + 2));

        // eval reads the head from the file and from the adapter, and reports the accuracy train measured with it.
        using var trained = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "eval.json")));
        foreach (var source in new[] { best, adapter })
        {
            var eval = Run("eval", "--model", TestAssets.Stories15MFolder, "--method", method, "--prompt", source,
                "--data", Data("validation"), "--examples", "4", "--max-length", "24", "--json");
            Assert.That(eval.Code, Is.EqualTo(0), eval.Err);
            using var json = JsonDocument.Parse(eval.Out);
            Assert.That(json.RootElement.GetProperty("head").GetString(), Is.EqualTo("linear"));
            Assert.That(json.RootElement.GetProperty("loss").GetDouble(), Is.EqualTo(trained.RootElement.GetProperty("loss").GetDouble()).Within(1e-5), source);
        }

        // The head classifies [negative, positive]; a task whose labels are in another order is refused, naming file and tensor.
        var refused = Run("eval", "--model", TestAssets.Stories15MFolder, "--method", method, "--prompt", best, "--labels", "positive", "negative",
            "--data", Data("validation"), "--examples", "4", "--max-length", "24");
        Assert.That(refused.Code, Is.EqualTo(2), refused.Err);
        Assert.That(refused.Err.Trim(), Does.Contain(best).And.Contain("'head.weight'").And.Not.Contain("\n").And.Not.Contain("   at "));

        // Resuming without the head is another run.
        var resumed = Run([.. train.Where((a, i) => a != "--head" && (i == 0 || train[i - 1] != "--head")), "--resume"]);
        Assert.That(resumed.Code, Is.EqualTo(2), resumed.Err);
        Assert.That(resumed.Err, Does.Contain("other settings"));
    }
}
