using System.Diagnostics;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The host as a separate process, stopped by SIGTERM (what <c>docker stop</c> and job schedulers send): it saves
/// its checkpoint as Ctrl-C does and exits 143.</summary>
[NonParallelizable]
public class CliSignalTests : CliTestBase
{
    [Test]
    public void SigtermSavesACheckpointAndExits143()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("POSIX signals");
        var data = CliTinyModels.SentimentData(scratch);
        var output = Path.Combine(scratch, "run");
        var cli = Path.Combine(AppContext.BaseDirectory, "PromptEngine.Cli.dll");
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in new[] { cli, "train", "--model", CliTinyModels.Llama(), "--train", data, "--validation", data, "--out", output, "--steps", "1000000",
                     "--warmup", "0", "--batch-size", "2", "--virtual-tokens", "2", "--max-length", "24", "--eval-every", "0", "--checkpoint-every", "1000000" })
            start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stderr = process.StandardError.ReadToEndAsync();
        var stdout = process.StandardOutput.ReadToEndAsync();
        var metrics = Path.Combine(output, "metrics.csv");
        var clock = Stopwatch.StartNew();
        // Training has begun once a step is logged (the header is the first line).
        while (!(File.Exists(metrics) && ReadShared(metrics).Count(c => c == '\n') >= 3) && !process.HasExited && clock.Elapsed < TimeSpan.FromSeconds(60))
            Thread.Sleep(50);
        Assert.That(process.HasExited, Is.False, () => $"the run ended early: {stderr.Result}");
        using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString()])) kill.WaitForExit();
        Assert.That(process.WaitForExit(60_000), Is.True, "the run stops after SIGTERM");
        Assert.That(process.ExitCode, Is.EqualTo(PromptEngine.Cli.Commands.TrainCommand.TerminatedExitCode), stderr.Result);
        var checkpoint = PromptEngine.Training.Checkpoint.Load(Path.Combine(output, "checkpoint.safetensors"));
        Assert.That(checkpoint.Step, Is.GreaterThanOrEqualTo(2).And.LessThan(1000000), "the checkpoint holds the steps done before the signal");
        Assert.That(stdout.Result, Does.Contain("Interrupted"));
    }

    static string ReadShared(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        return new StreamReader(stream).ReadToEnd();
    }
}
