using System.Text.Json;
using PromptEngine.Prompts;

namespace PromptEngine.Tests.EndToEnd;

/// <summary><c>train --method prefix --prefix-projection H</c>: the flag's refusals, and a toy run on the real stories15M and
/// IMDB whose best prompt and PEFT adapter are plain (folded) deep prompts that <c>eval --method prefix</c> reads.</summary>
[NonParallelizable]
public class CliPrefixProjectionTests : CliTestBase
{
    static readonly string[] Required = ["train", "--model", "m", "--train", "t", "--validation", "v", "--out", "o"];

    [TestCase(new[] { "--prefix-projection", "16" }, "--prefix-projection reparameterises a deep prompt; it needs --method prefix")]
    [TestCase(new[] { "--prefix-projection", "16", "--method", "prompt" }, "it needs --method prefix")]
    [TestCase(new[] { "--prefix-projection", "16", "--method", "prefix", "--init", "file", "--init-file", "p.safetensors" },
        "--prefix-projection cannot start from --init file")]
    [TestCase(new[] { "--prefix-projection", "-1", "--method", "prefix" }, "--prefix-projection must not be negative")]
    public void BadUseOfTheFlagIsRefusedNamingIt(string[] flags, string message)
    {
        var (code, _, err) = Run([.. Required, .. flags]);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err, Does.Contain(message));
    }

    [Test]
    public void TrainsThroughTheMlpAndSavesAFoldedDeepPromptThatEvalReads()
    {
        var output = Path.Combine(scratch, "projected");
        string[] train = ["train", "--model", TestAssets.Stories15MFolder, "--method", "prefix", "--prefix-projection", "8",
            "--train", Path.Combine(TestAssets.ImdbSplitFolder, "train.jsonl"), "--validation", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"),
            "--out", output, "--steps", "3", "--warmup", "1", "--batch-size", "2", "--virtual-tokens", "3", "--max-length", "24", "--init", "random",
            "--train-examples", "20", "--eval-examples", "4", "--eval-every", "3", "--checkpoint-every", "1"];
        var (code, text, err) = Run(train);
        Assert.That(code, Is.EqualTo(0), err);
        Assert.That(text, Does.Contain("Completed after 3 steps"));

        var best = Path.Combine(output, "best_prompt.safetensors");
        var prompt = DeepPromptFile.Load(best);
        // stories15M: 6 layers, 6 kv heads of 48 channels.
        Assert.That((prompt.VirtualTokens, prompt.NumLayers, prompt.KvHeads, prompt.HeadDim), Is.EqualTo((3, 6, 6, 48)));
        Assert.That(prompt.Meta(PromptMetadata.Reparameterisation), Is.EqualTo("mlp 8"));
        var adapter = Path.Combine(output, "adapter");
        using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName))))
        {
            Assert.That(json.RootElement.GetProperty("peft_type").GetString(), Is.EqualTo("PREFIX_TUNING"));
            Assert.That(json.RootElement.GetProperty("prefix_projection").GetBoolean(), Is.False);
        }
        using (var model = PromptEngine.Models.ModelFolder.Open(TestAssets.Stories15MFolder))
            Assert.That(PeftAdapter.LoadPrefix(adapter, model.Config).Values, Is.EqualTo(prompt.Values), "the adapter holds the same folded prefix");
        // The checkpoint holds the MLP: E (3, 288), W1 (8, 288), b1 (8), W2 (3456, 8), b2 (3456).
        var checkpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(output, "checkpoint.safetensors"));
        Assert.That(checkpoint.Prompt, Has.Length.EqualTo(3 * 288 + 8 * 288 + 8 + 3456 * 8 + 3456));

        foreach (var source in new[] { best, adapter })
        {
            var eval = Run("eval", "--model", TestAssets.Stories15MFolder, "--method", "prefix", "--prompt", source,
                "--data", Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"), "--examples", "4", "--max-length", "24", "--json");
            Assert.That(eval.Code, Is.EqualTo(0), eval.Err);
            using var json = JsonDocument.Parse(eval.Out);
            Assert.That(json.RootElement.GetProperty("method").GetString(), Is.EqualTo("prefix"));
            Assert.That(json.RootElement.GetProperty("prompt_tokens").GetInt32(), Is.EqualTo(3));
        }

        // The hidden width is part of the run: resuming with another one is refused.
        var other = train.Select(a => a == "8" ? "16" : a).Append("--resume").ToArray();
        var resumed = Run(other);
        Assert.That(resumed.Code, Is.EqualTo(2), resumed.Err);
        Assert.That(resumed.Err, Does.Contain("other settings"));
    }
}
