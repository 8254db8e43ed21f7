using System.CommandLine;
using System.Diagnostics;
using System.Security.Cryptography;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Seeded random command lines over every command, run in-process through the host's entry point: valid command
/// lines mutated by replacing, adding and dropping flags, values and files. The only outcomes accepted are exit 0, or exit
/// 1/2 with a one-line message and no stack trace; and no prompt, checkpoint, adapter or input that existed before changes.
/// Bounded in count and time; the tiny models keep each command well under a second.</summary>
[NonParallelizable]
public class CliFuzzTests : CliTestBase
{
    const int Cases = 100;
    static readonly TimeSpan Budget = TimeSpan.FromSeconds(30);

    [Test]
    public void RandomCommandLinesExitCleanlyAndChangeNoSavedFile([Values(16)] int seed)
    {
        var model = CliTinyModels.Llama();
        var data = CliTinyModels.SentimentData(scratch);
        var prompt = Path.Combine(scratch, "prompt.safetensors");
        using (var folder = PromptEngine.Models.ModelFolder.Open(model))
            PromptEngine.Prompts.PromptFile.Save(prompt, new PromptEngine.Prompts.SoftPrompt(Enumerable.Range(0, 32).Select(i => (float)Math.Sin(i)).ToArray(), 2, 16,
                new Dictionary<string, string>()), folder);
        var adapter = Path.Combine(scratch, "adapter");
        var run = Path.Combine(scratch, "run");
        var reviews = Path.Combine(scratch, "reviews.json");
        File.WriteAllText(reviews, "[" + string.Join(",", Enumerable.Range(0, 8).Select(i => $"{{\"t\": \"review {i}\", \"s\": {i % 2}}}")) + "]");
        var empty = Path.Combine(scratch, "empty.jsonl");
        File.WriteAllText(empty, "");
        var garbage = Path.Combine(scratch, "garbage.safetensors");
        File.WriteAllBytes(garbage, Enumerable.Range(0, 64).Select(i => (byte)(i * 37)).ToArray());
        Assert.That(Run("prompt", "export", prompt, "--model", model, "--peft", adapter).Code, Is.EqualTo(0));
        Assert.That(Run("train", "--model", model, "--train", data, "--validation", data, "--out", run, "--steps", "2", "--warmup", "0", "--batch-size", "2",
            "--virtual-tokens", "2", "--max-length", "24", "--eval-every", "0", "--checkpoint-every", "1").Code, Is.EqualTo(0));
        // Everything that exists now must survive: the saved prompt, adapters, the run (checkpoint included), the inputs, the model.
        var protectedFiles = new[] { scratch, model }.SelectMany(f => Directory.EnumerateFiles(f, "*", SearchOption.AllDirectories))
            .Where(f => !f.EndsWith("eval.json") && !f.EndsWith("curves.png") && !f.EndsWith("metrics.csv"))
            .ToDictionary(f => f, Hash);

        var rng = new Random(seed);
        var fresh = 0;
        string Fresh() => Path.Combine(scratch, "new", $"out{fresh++}");
        string[] paths = [data, prompt, adapter, run, model, reviews, empty, garbage, scratch, Path.Combine(run, "checkpoint.safetensors"),
            Path.Combine(run, "best_prompt.safetensors"), Path.Combine(data, "under"), Path.Combine(scratch, "missing"), prompt + "#x"];
        string[] words = ["", " ", "abc", "-1", "0", "1", "2", "3", "7", "1e30", "-1e-30", "NaN", "Infinity", "-Infinity", "99999999999", "0.5", "1,2",
            "prefix", "prompt", "random", "vocab", "file", "text", "Generation", "Classification", "csv", "jsonl", "suffix", "cosine", "KeepEnd",
            "{prompt}{text}{answer}", "{bad", "{prompt}{text}", "negative,positive", "é\u0000ü", new string('x', 5000)];
        string[] large = ["--batch-size", "--max-new-tokens", "--max-length", "--examples", "--eval-examples", "--train-examples", "--validation", "--test"];
        var flags = AllFlags().Where(f => f != "--overwrite").Concat(["--bogus", "-x", "--"]).ToArray();

        string Value(string flag)
        {
            var roll = rng.Next(10);
            if (roll < 4) return paths[rng.Next(paths.Length)];
            if (roll == 4) return Fresh();
            if (roll == 5 && Array.IndexOf(large, flag) >= 0) return "1000000";
            if (roll == 5 && flag is "--virtual-tokens" or "--prefix-projection") return "100";
            return words[rng.Next(words.Length)];
        }

        string[] Base(int which) => which switch
        {
            0 => ["train", "--model", model, "--train", data, "--validation", data, "--out", Fresh(), "--steps", "2", "--warmup", "0", "--batch-size", "2",
                "--virtual-tokens", "2", "--max-length", "24", "--eval-every", "0", "--checkpoint-every", "1"],
            1 => ["eval", "--model", model, "--data", data, "--max-length", "24", "--prompt", prompt],
            2 => ["loss", "--model", model, "--input", "Once upon a time", "--prompt", prompt, "--grad-out", Fresh()],
            3 => ["generate", "--model", model, "--input", "Once", "--max-new-tokens", "3", "--prompt", prompt],
            4 => ["prompt", "inspect", prompt],
            5 => ["prompt", "export", prompt, "--model", model, "--peft", Fresh()],
            6 => ["prompt", "import", adapter, "--out", Fresh(), "--model", model],
            7 => ["inspect", rng.Next(2) == 0 ? model : prompt],
            8 => ["prepare-imdb", reviews, "--out", Fresh(), "--validation", "2", "--test", "2"],
            9 => ["import-llama2c", garbage, garbage, "--out", Fresh()],
            _ => ["version"],
        };

        var clock = Stopwatch.StartNew();
        var ran = 0;
        for (var n = 0; n < Cases && clock.Elapsed < Budget; n++, ran++)
        {
            var args = Base(rng.Next(11)).ToList();
            var prefix = args[0] == "prompt" ? 2 : 1;
            for (var m = rng.Next(4); m > 0; m--)
            {
                var kind = rng.Next(4);
                var positions = Enumerable.Range(prefix, args.Count - prefix).ToList();
                if (kind == 0 && positions.Count > 0)
                {
                    // Replace a value (or a positional argument).
                    var at = positions[rng.Next(positions.Count)];
                    if (!args[at].StartsWith("--")) args[at] = Value(at > 0 ? args[at - 1] : "");
                }
                else if (kind == 1)
                {
                    var flag = flags[rng.Next(flags.Length)];
                    args.Add(flag);
                    if (rng.Next(4) > 0) args.Add(Value(flag));
                }
                else if (kind == 2 && positions.Count > 0)
                {
                    var at = positions[rng.Next(positions.Count)];
                    var count = args[at].StartsWith("--") && at + 1 < args.Count && !args[at + 1].StartsWith("--") ? 2 : 1;
                    args.RemoveRange(at, count);
                }
                else if (kind == 3 && positions.Count > 1)
                {
                    // Swap two tokens: a value where a flag was, a flag where a value was.
                    int i = positions[rng.Next(positions.Count)], j = positions[rng.Next(positions.Count)];
                    (args[i], args[j]) = (args[j], args[i]);
                }
            }
            var line = string.Join(" ", args.Select(a => a.Length > 60 ? a[..60] + "…" : a));
            var (code, _, err) = Run([.. args]);
            Assert.That(code, Is.AnyOf(0, 1, 2), $"case {n}: {line}\n{err}");
            if (code != 0)
            {
                Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), $"case {n}: one line: {line}\n{err}");
                Assert.That(err, Does.Not.Contain("   at ").And.Not.Contain("Exception"), $"case {n}: no stack trace: {line}\n{err}");
            }
            foreach (var (file, hash) in protectedFiles)
                Assert.That(File.Exists(file) ? Hash(file) : "deleted", Is.EqualTo(hash), $"case {n} changed {file}: {line}");
        }
        TestContext.Out.WriteLine($"{ran} random command lines in {clock.Elapsed.TotalSeconds:F0} s");
        Assert.That(ran, Is.GreaterThanOrEqualTo(20), "enough cases ran to mean something");
    }

    static IEnumerable<string> AllFlags()
    {
        static IEnumerable<Command> Walk(Command c) => new[] { c }.Concat(c.Subcommands.SelectMany(Walk));
        return Walk(PromptEngine.Cli.Program.BuildRoot()).SelectMany(c => c.Options).Select(o => o.Name).Where(n => n.StartsWith("--")).Distinct().OrderBy(n => n, StringComparer.Ordinal);
    }

    static string Hash(string path) => Convert.ToHexString(SHA256.HashData(File.ReadAllBytes(path)));
}
