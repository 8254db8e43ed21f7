using PromptEngine.Cli.Commands;
using PromptEngine.Training;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Runs stopped at random moments (as Ctrl-C or SIGTERM would, in-process) and then damaged at random — a byte
/// of the checkpoint changed, the checkpoint cut short or removed, the metrics garbled — and resumed: <c>--resume</c>
/// either finishes bit-identical to the run that was never stopped, or refuses in one line naming the checkpoint.</summary>
[NonParallelizable]
public class CliResumePropertyTests : CliTestBase
{
    const int Steps = 6, Trials = 5;

    string[] TrainArgs(string output, string data) =>
    [
        "train", "--model", CliTinyModels.Llama(), "--train", data, "--validation", data, "--out", output, "--steps", Steps.ToString(), "--warmup", "0",
        "--batch-size", "2", "--virtual-tokens", "2", "--max-length", "24", "--eval-every", "3", "--checkpoint-every", "1", "--schedule", "constant",
    ];

    /// <summary>Damage that a checkpoint reader can always see (the file's structure); a flipped bit inside the tensor data
    /// is only seen with a checksum of the data, which checkpoints do not carry yet (issue 16, item 11).</summary>
    enum Damage { None, HeaderByte, Truncated, Removed, MetricsGarbled, Emptied }

    [Test]
    public void ResumeAfterARandomStopAndRandomDamageContinuesExactlyOrRefuses([Values(5)] int seed)
    {
        var data = CliTinyModels.SentimentData(scratch);
        var straight = Path.Combine(scratch, "straight");
        Assert.That(Run(TrainArgs(straight, data)).Code, Is.EqualTo(0));
        var reference = Checkpoint.Load(Path.Combine(straight, Trainer.CheckpointFile));
        var rng = new Random(seed);
        var outcomes = new List<string>();
        for (var trial = 0; trial < Trials; trial++)
        {
            var output = Path.Combine(scratch, $"trial{trial}");
            var delay = rng.Next(0, 120);
            TestHooks.RunStarted = cancel => cancel.CancelAfter(delay);
            int stoppedCode;
            try
            {
                stoppedCode = Run(TrainArgs(output, data)).Code;
            }
            finally
            {
                TestHooks.RunStarted = null;
            }
            Assert.That(stoppedCode, Is.AnyOf(0, TrainCommand.InterruptedExitCode), $"trial {trial}");
            var damage = (Damage)rng.Next(Enum.GetValues<Damage>().Length);
            var checkpoint = Path.Combine(output, Trainer.CheckpointFile);
            switch (damage)
            {
                case Damage.HeaderByte:
                {
                    var bytes = File.ReadAllBytes(checkpoint);
                    var headerLength = (int)BitConverter.ToUInt64(bytes, 0);
                    bytes[8 + rng.Next(headerLength)] ^= 0x5A;
                    File.WriteAllBytes(checkpoint, bytes);
                    break;
                }
                case Damage.Truncated:
                {
                    var bytes = File.ReadAllBytes(checkpoint);
                    File.WriteAllBytes(checkpoint, bytes[..rng.Next(bytes.Length - 1)]);
                    break;
                }
                case Damage.Removed: File.Delete(checkpoint); break;
                case Damage.Emptied: File.WriteAllBytes(checkpoint, []); break;
                case Damage.MetricsGarbled: File.WriteAllText(Path.Combine(output, "metrics.csv"), "\u0000garbage,,,\nnot,a,row\n"); break;
            }
            var (code, _, err) = Run([.. TrainArgs(output, data), "--resume"]);
            outcomes.Add($"stop after {delay} ms (exit {stoppedCode}), {damage}: exit {code}");
            if (code == 0)
            {
                var resumed = Checkpoint.Load(checkpoint);
                Assert.That(resumed.Step, Is.EqualTo(Steps), $"trial {trial} ({damage})");
                Assert.That(resumed.Prompt, Is.EqualTo(reference.Prompt), $"trial {trial} ({damage}): the resumed run ends bit-identical to the straight one");
                Assert.That((resumed.AdamM, resumed.AdamV), Is.EqualTo((reference.AdamM, reference.AdamV)), $"trial {trial} ({damage})");
            }
            else
            {
                Assert.That(code, Is.AnyOf(1, 2), $"trial {trial} ({damage}): {err}");
                Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), $"trial {trial} ({damage}): {err}");
                Assert.That(err, Does.Contain(output).And.Not.Contain("   at "), $"trial {trial} ({damage}): the message names the damaged file");
            }
        }
        TestContext.Out.WriteLine(string.Join("\n", outcomes));
    }
}
