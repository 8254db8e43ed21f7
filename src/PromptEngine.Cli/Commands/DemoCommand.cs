using System.CommandLine;
using System.Globalization;
using PromptEngine.Data;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Training;
using PromptEngine.Training.Data;
using PromptEngine.Training.Metrics;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine demo</c>: the README's main job. On one frozen stories15M it tunes a deep prompt for movie-review
/// sentiment (IMDB) and one for spam detection (SpamAssassin), each chosen on validation data; measures zero-shot and tuned
/// accuracy on the same held-out test rows with 95 % Wilson intervals and an exact McNemar test; then serves both tasks
/// from one batch, each row under its own prompt, and sets the prompts' bytes beside the model's. Test rows are never used
/// for choosing anything.</summary>
internal static class DemoCommand
{
    /// <summary>One task of the demo and the recipe it trains with.</summary>
    /// <param name="Steps">Optimizer steps (batches of <see cref="BatchSize"/>).</param>
    /// <param name="MaxLength">Positions per row (text truncated to fit).</param>
    /// <param name="Truncation">Which part of an over-long text the row keeps.</param>
    /// <param name="Head">Train a linear classifier head on the final hidden state with the prompt.</param>
    sealed record DemoTask(string Name, string Noun, string Folder, string Template, string[] Labels, string[] LabelWords, int VirtualTokens, float LearningRate,
        int Steps, int MaxLength, TruncationSide Truncation, int TestExamples, bool Head);

    // The recipe: deep prompts (prefix tuning / P-tuning v2), which beat plain prompts on IMDB validation reviews at the same
    // budget and at the same virtual tokens (BENCHMARKS.md, "Deep prompts on IMDB"); sized so the whole demo, with every
    // evaluation, finishes in about 15 minutes on 2 cores. A long review keeps its opening and its close (head + tail): on
    // validation reviews 1,001-2,000, which neither training nor early stopping reads, 70.2 % against 68.6 % keeping the close
    // and 64.5 % keeping the opening (benchmarks/scripts/imdb-recipe.sh; docs/RESULTS.md, "Choosing the demo's IMDB recipe").
    const int BatchSize = 8, EvalExamples = 200, TrainExamples = 8000, Warmup = 20, EvaluationsPerRun = 3;
    const int ImdbSteps = 250, SpamSteps = 100, ImdbTestExamples = 1000, SpamTestExamples = 500, MixedRowsPerTask = 200;
    // Inference batches are larger than training's: the CPU accelerator's fixed cost per launch is paid per batch.
    const int InferenceBatch = 32;

    public static Command Create()
    {
        var cache = FetchAssetsCommand.CacheOption();
        var output = new Option<string>("--out") { Description = "Where the tuned prompts, adapters, metrics and curves go (one folder per task).", DefaultValueFactory = _ => Path.Combine("runs", "demo") };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps of the sentiment prompt (the spam prompt takes 2/5 as many).", DefaultValueFactory = _ => ImdbSteps };
        OptionChecks.Positive(steps);
        var command = new Command("demo", """
            Tune deep prompts for sentiment (IMDB) and spam (SpamAssassin) on one frozen stories15M, measure held-out accuracy before and after with intervals and a significance test, and serve both tasks from one batch.
            Example: promptengine demo --out runs/demo
            """);
        command.Options.Add(cache);
        command.Options.Add(output);
        command.Options.Add(steps);
        command.SetAction(parse => CliRunner.Run(() => Run(parse.GetValue(cache), parse.GetValue(output)!, parse.GetValue(steps))));
        return command;
    }

    static int Run(string? cache, string output, int imdbSteps)
    {
        var console = CliRunner.Out;
        // Piped into a file or a log, the results table keeps its rows whole instead of wrapping at 80 columns.
        if (Console.IsOutputRedirected) console.Profile.Width = Math.Max(console.Profile.Width, 160);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var prepared = FetchAssetsCommand.Prepare(cache);
        long modelBytes;
        using (var model = ModelFolder.Open(prepared.Stories15MFolder))
        {
            var c = model.Config;
            modelBytes = Directory.EnumerateFiles(prepared.Stories15MFolder, "*.safetensors").Sum(f => new FileInfo(f).Length);
            console.Write(new Rule("stories15M, imported from llama2.c, frozen"));
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture,
                $"{c.Architecture}, {model.ParameterCount:N0} parameters ({modelBytes:N0} bytes of weights), width {c.HiddenSize}, {c.NumLayers} layers, vocabulary {c.VocabSize}") + Environment.NewLine));
        }

        DemoTask[] tasks =
        [
            new("imdb", "reviews", prepared.ImdbFolder, TaskOptions.DefaultTemplate, ["negative", "positive"], [" negative", " positive"],
                VirtualTokens: 2, LearningRate: 0.03f, imdbSteps, MaxLength: 64, TruncationSide.KeepBothEnds, ImdbTestExamples, Head: true),
            new("spam", "emails", prepared.SpamFolder, SpamAssassinPreparer.Template, [.. SpamAssassinPreparer.Labels], [.. SpamAssassinPreparer.LabelWords],
                VirtualTokens: 2, LearningRate: 0.03f, Math.Max(1, imdbSteps * SpamSteps / ImdbSteps), MaxLength: 64, TruncationSide.KeepBeginning,
                SpamTestExamples, Head: true),
        ];
        var results = new List<TaskResult>();
        foreach (var task in tasks)
            results.Add(RunTask(task, prepared.Stories15MFolder, Path.Combine(output, task.Name)));

        console.Write(new Rule("one frozen model, two prompts, one batch"));
        var mixed = MixedBatch(prepared.Stories15MFolder, results);
        Report(results, mixed, modelBytes, clock.Elapsed);
        return 0;
    }

    /// <summary>What one task's part of the demo measured.</summary>
    sealed record TaskResult(DemoTask Task, IReadOnlyList<EncodedExample> Test, Verbalizer Verbalizer, bool[] ZeroShotCorrect, bool[] TunedCorrect,
        int[] TunedPredictions, TrainOutcome Training, string PromptPath, TunedPrompt Prompt);

    static TaskResult RunTask(DemoTask task, string modelFolder, string output)
    {
        var console = CliRunner.Out;
        var (parse, options) = TaskParse(task, modelFolder);
        using var model = ModelFolder.Open(modelFolder);
        var testData = options.Load(parse, Path.Combine(task.Folder, "test.jsonl"), "test split");
        var (_, verbalizer, encoder) = options.Build(parse, model, testData, virtualTokens: 0);
        var test = TaskOptions.Encode(encoder, testData, task.TestExamples);

        console.Write(new Rule($"{task.Name}: zero-shot on the first {test.Count:N0} held-out test {task.Noun}"));
        var zeroShot = Classify(model, null, verbalizer, test, "zero-shot");
        console.Write(new Text(Accuracy("zero-shot", zeroShot.Correct) + Environment.NewLine));

        console.Write(new Rule($"{task.Name}: tuning a {task.VirtualTokens}-token deep prompt, {task.Steps} steps of {BatchSize} {task.Noun}, best on {EvalExamples} validation {task.Noun}"));
        var settings = new TrainSettings(output, task.VirtualTokens, "random", null, null, task.Steps, BatchSize, 1, task.LearningRate, "cosine",
            Math.Min(Warmup, task.Steps), 0f, 1f, EvalEvery: Math.Max(1, task.Steps / EvaluationsPerRun), EvalExamples, 0, CheckpointEvery: task.Steps, 1UL, TrainExamples,
            MetricsFormat.Csv, Resume: false, AllowModelMismatch: false, Method: PromptMethod.Prefix, Head: task.Head ? HeadOption.Linear : HeadOption.None);
        // A demo starts fresh and replaces its own previous run (README says so); `train --resume` is for continuing.
        if (File.Exists(Path.Combine(output, Trainer.CheckpointFile))) File.Delete(Path.Combine(output, Trainer.CheckpointFile));
        var outcome = TrainCommand.Run(parse, options, Path.Combine(task.Folder, "train.jsonl"), Path.Combine(task.Folder, "validation.jsonl"), settings,
            measureBefore: false, replacePrevious: true);
        TrainCommand.Report(outcome);

        console.Write(new Rule($"{task.Name}: the prompt chosen on validation, on the same {test.Count:N0} test {task.Noun}"));
        var prompt = TunedPrompt.Load(outcome.PromptPath, model.Config, PromptMethod.Prefix, verbalizer.Labels);
        var tuned = Classify(model, prompt, verbalizer, test, "tuned");
        console.Write(new Text(Accuracy("tuned", tuned.Correct) + Environment.NewLine));
        return new TaskResult(task, test, verbalizer, zeroShot.Correct, tuned.Correct, tuned.Predictions, outcome, outcome.PromptPath, prompt);
    }

    /// <summary>The task's options as <c>train</c> would parse them.</summary>
    static (ParseResult Parse, TaskOptions Options) TaskParse(DemoTask task, string modelFolder)
    {
        var options = new TaskOptions();
        var parser = new Command("demo-task");
        options.AddTo(parser);
        var parse = parser.Parse(["--model", modelFolder, "--max-length", task.MaxLength.ToString(CultureInfo.InvariantCulture), "--truncation", task.Truncation.ToString(), "--template", task.Template,
            "--labels", .. task.Labels, "--label-words", .. task.LabelWords]);
        if (parse.Errors.Count > 0) throw new InvalidOperationException($"demo: task {task.Name}: {parse.Errors[0].Message}");
        return (parse, options);
    }

    /// <summary>Predictions on <paramref name="examples"/> under an optional tuned prompt and its head (eval's code path), with
    /// a progress bar.</summary>
    static (bool[] Correct, int[] Predictions) Classify(ModelFolder model, TunedPrompt? prompt, Verbalizer verbalizer,
        IReadOnlyList<EncodedExample> examples, string what)
    {
        IReadOnlyList<int> predictions = [];
        CliRunner.Out.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask(what, maxValue: examples.Count);
                EvalCommand.Evaluate(model, prompt, verbalizer, examples, InferenceBatch, out _, out predictions, rows => bar.Increment(rows));
            });
        return (examples.Select((e, i) => predictions[i] == e.Label).ToArray(), predictions.ToArray());
    }

    /// <summary>What the mixed batch measured: per task, rows served and rows right, and whether every prediction equals
    /// the task's own run.</summary>
    sealed record MixedResult(int[] Rows, int[] Correct, int[] SameAsAlone, double Seconds);

    /// <summary>One engine holding both deep prompts; batches alternate the tasks' test rows, each row attending to its own
    /// task's prompt. With heads, each row's final hidden state goes through its own task's head; without, the softmax runs
    /// over both tasks' label words and each row's answer is read among its own task's.</summary>
    static MixedResult MixedBatch(string modelFolder, IReadOnlyList<TaskResult> results)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var model = ModelFolder.Open(modelFolder);
        // The engine's bank of several prompts for one batch holds deep prompts (the demo's method).
        var prompts = results.Select(r => (r.Prompt as DeepTunedPrompt ?? throw new InvalidOperationException($"demo: {r.PromptPath} is not a deep prompt")).Prompt).ToArray();
        var words = results.SelectMany(r => r.Verbalizer.TokenIds).ToArray();
        if (words.Distinct().Count() != words.Length) throw new InvalidOperationException("demo: the two tasks' label words share a token");
        var offsets = results.Select((r, i) => results.Take(i).Sum(p => p.Verbalizer.TokenIds.Length)).ToArray();
        // Row order: task 0's i-th row, task 1's i-th row, …
        var rows = Enumerable.Range(0, MixedRowsPerTask).SelectMany(i => results.Select((r, t) => (Task: t, Index: i)).Where(p => p.Index < results[p.Task].Test.Count)).ToList();
        using var kernels = KernelContext.Create(KernelBackend.Auto);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(InferenceBatch, results.Max(r => r.Test.Max(e => e.Length)), 0, Training: false,
            MaxVerbalizer: Math.Max(16, words.Length), DeepVirtualTokens: prompts[0].VirtualTokens, DeepPrompts: prompts.Length));
        if (prompts.Any(p => p.VirtualTokens != prompts[0].VirtualTokens)) throw new InvalidOperationException("demo: the deep prompts differ in length");
        engine.SetDeepPrompts(prompts.Select(p => p.ToEngineLayout()).ToArray());
        var heads = results.All(r => r.Prompt.Head is not null);
        var served = new int[results.Count];
        var correct = new int[results.Count];
        var same = new int[results.Count];
        CliRunner.Out.Progress().Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .Start(ctx =>
            {
                var bar = ctx.AddTask("mixed batches", maxValue: rows.Count);
                for (var start = 0; start < rows.Count; start += InferenceBatch)
                {
                    var chunk = rows.Skip(start).Take(InferenceBatch).ToList();
                    var batch = BatchBuilder.Build(chunk.Select(p => (IReadOnlyList<Slot>)results[p.Task].Test[p.Index].Slots).ToList(), words)
                        with { DeepPromptOfRow = chunk.Select(p => p.Task).ToArray() };
                    var scores = heads ? engine.ScoredHiddenStates(batch) : engine.Logits(batch);
                    for (var s = 0; s < chunk.Count; s++)
                    {
                        var (t, i) = chunk[s];
                        int R = results[t].Verbalizer.TokenIds.Length;
                        var predicted = heads
                            ? ClassificationMetrics.Predict(ApplyHead(results[t].Prompt.Head!, scores.AsSpan(s * model.Config.HiddenSize, model.Config.HiddenSize)), R)[0]
                            : ClassificationMetrics.Predict(scores.AsSpan(s * words.Length + offsets[t], R), R)[0];
                        served[t]++;
                        if (predicted == results[t].Test[i].Label) correct[t]++;
                        if (predicted == results[t].TunedPredictions[i]) same[t]++;
                    }
                    bar.Increment(chunk.Count);
                }
            });
        return new MixedResult(served, correct, same, clock.Elapsed.TotalSeconds);
    }

    /// <summary>W·h + b of one row (the head's R logits), in float as the engine's head computes them.</summary>
    static float[] ApplyHead(ClassifierHeadWeights head, ReadOnlySpan<float> hidden)
    {
        var logits = new float[head.Classes];
        for (var r = 0; r < head.Classes; r++)
        {
            float sum = 0;
            for (var c = 0; c < hidden.Length; c++) sum = MathF.FusedMultiplyAdd(head.Weight[r * hidden.Length + c], hidden[c], sum);
            logits[r] = sum + head.Bias[r];
        }
        return logits;
    }

    static string Accuracy(string what, bool[] correct)
    {
        var interval = Significance.Wilson(correct.Count(c => c), correct.Length);
        return string.Create(CultureInfo.InvariantCulture, $"{what}: {interval.Estimate:P1} (95 % interval {interval.Lower:P1}–{interval.Upper:P1}, {interval.Successes}/{interval.Trials})");
    }

    static void Report(IReadOnlyList<TaskResult> results, MixedResult mixed, long modelBytes, TimeSpan elapsed)
    {
        var console = CliRunner.Out;
        console.Write(new Rule("result"));
        var table = new Table().AddColumns("task", "held-out test rows", "zero-shot (95 % interval)", "tuned (95 % interval)", "McNemar exact p",
            "mixed batch", "prompt file");
        foreach (var (r, t) in results.Select((r, t) => (r, t)))
        {
            var before = Significance.Wilson(r.ZeroShotCorrect.Count(c => c), r.ZeroShotCorrect.Length);
            var after = Significance.Wilson(r.TunedCorrect.Count(c => c), r.TunedCorrect.Length);
            var test = Significance.McNemarExact(r.TunedCorrect, r.ZeroShotCorrect);
            table.AddRow(
                new Text(r.Task.Name),
                new Text(r.Test.Count.ToString("N0", CultureInfo.InvariantCulture)),
                new Text(string.Create(CultureInfo.InvariantCulture, $"{before.Estimate:P1} ({before.Lower:P1}–{before.Upper:P1})")),
                new Text(string.Create(CultureInfo.InvariantCulture, $"{after.Estimate:P1} ({after.Lower:P1}–{after.Upper:P1})")),
                new Text(string.Create(CultureInfo.InvariantCulture, $"{test.PValue:G3} ({test.OnlyACorrect} only tuned right, {test.OnlyBCorrect} only zero-shot right)")),
                new Text(string.Create(CultureInfo.InvariantCulture, $"{(double)mixed.Correct[t] / Math.Max(1, mixed.Rows[t]):P1} of {mixed.Rows[t]}; {mixed.SameAsAlone[t]}/{mixed.Rows[t]} as alone")),
                new Text(string.Create(CultureInfo.InvariantCulture, $"{new FileInfo(r.PromptPath).Length:N0} bytes")));
        }
        console.Write(table);
        console.Write(new Text(string.Create(CultureInfo.InvariantCulture,
            $"One frozen model ({modelBytes:N0} bytes of weights) served both tasks: {mixed.Rows.Sum()} rows in mixed batches of {InferenceBatch}, each row under its own task's prompt, in {mixed.Seconds:F0} s; each prompt is {(double)results.Max(r => new FileInfo(r.PromptPath).Length) / modelBytes:P2} of the model's bytes.") + Environment.NewLine));
        foreach (var r in results)
            console.Write(new Text($"{r.Task.Name}: prompt {r.PromptPath}, PEFT adapter {r.Training.AdapterPath}, curves {r.Training.PlotPath}, metrics {r.Training.MetricsPath}" + Environment.NewLine));
        console.Write(new Text(string.Create(CultureInfo.InvariantCulture, $"{elapsed.TotalMinutes:F1} minutes in all.") + Environment.NewLine));
    }
}
