using PromptEngine.Prompts;

namespace PromptEngine.Tests.EndToEnd;

/// <summary><c>--method prefix</c> through train, eval and generate on the real stories15M and IMDB at toy sizes, and the
/// one-line refusal of a bad <c>--method</c>.</summary>
[NonParallelizable]
public class CliDeepPromptTests : CliTestBase
{
    [Test]
    public void BadMethodIsRefusedNamingTheFlag([Values("train", "eval", "generate")] string command)
    {
        string[] args = command switch
        {
            "train" => ["train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o", "--method", "deep"],
            "eval" => ["eval", "--model", "m", "--data", "d", "--method", "deep"],
            _ => ["generate", "--model", "m", "--max-new-tokens", "3", "--method", "deep"],
        };
        var (code, _, err) = Run(args);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain("--method must be prompt or prefix").And.Contain("'deep'"));
    }

    [Test]
    public void TrainsAPrefixThenEvaluatesAndGeneratesWithIt()
    {
        var output = Path.Combine(scratch, "prefix");
        var (code, text, err) = Run("train", "--model", TestAssets.Stories15MFolder, "--method", "prefix",
            "--train", Path.Combine(TestAssets.ImdbSplitFolder, "train.jsonl"), "--validation", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"),
            "--out", output, "--steps", "3", "--warmup", "1", "--batch-size", "2", "--virtual-tokens", "3", "--max-length", "24", "--init", "random",
            "--train-examples", "20", "--eval-examples", "4", "--eval-every", "3", "--checkpoint-every", "1");
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("Completed after 3 steps"));
        var best = Path.Combine(output, "best_prompt.safetensors");
        Assert.That(DeepPromptFile.MethodOf(best), Is.EqualTo(PromptMethod.Prefix));
        var prompt = DeepPromptFile.Load(best);
        // stories15M: 6 layers, 6 kv heads of 48 channels.
        Assert.That((prompt.VirtualTokens, prompt.NumLayers, prompt.KvHeads, prompt.HeadDim), Is.EqualTo((3, 6, 6, 48)));
        Assert.That(PeftAdapter.PeftType(Path.Combine(output, "adapter")), Is.EqualTo("PREFIX_TUNING"));
        var checkpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(output, "checkpoint.safetensors"));
        Assert.That(checkpoint.Prompt, Has.Length.EqualTo(prompt.Values.Length));

        foreach (var source in new[] { best, Path.Combine(output, "adapter") })
        {
            var eval = Run("eval", "--model", TestAssets.Stories15MFolder, "--method", "prefix", "--prompt", source,
                "--data", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"), "--examples", "4", "--max-length", "24", "--json");
            Assert.That(eval.Code, Is.EqualTo(0), eval.Err);
            using var json = System.Text.Json.JsonDocument.Parse(eval.Out);
            Assert.That(json.RootElement.GetProperty("method").GetString(), Is.EqualTo("prefix"));
            Assert.That(json.RootElement.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(3));
        }
        var generate = Run("generate", "--model", TestAssets.Stories15MFolder, "--method", "prefix", "--prompt", best, "--input", "Once upon a time", "--max-new-tokens", "5");
        Assert.That(generate.Code, Is.EqualTo(0), generate.Err);
        Assert.That(generate.Out, Does.StartWith("Once upon a time"));

        // A deep prompt is not a plain one: without --method prefix it is refused with a pointer to the flag.
        var plain = Run("generate", "--model", TestAssets.Stories15MFolder, "--prompt", best, "--max-new-tokens", "2");
        Assert.That(plain.Code, Is.EqualTo(2));
        Assert.That(plain.Err, Does.Contain("--method prefix"));
    }
}
