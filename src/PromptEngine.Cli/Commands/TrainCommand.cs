using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PromptEngine.Cli.Reporting;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Training;
using PromptEngine.Training.Data;
using PromptEngine.Training.Schedules;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary>Everything <c>train</c> needs, so that the demo can run the same code with fixed values.</summary>
internal sealed record TrainSettings(
    string OutputDirectory, int PromptTokens, string Init, string? InitText, string? InitFile, int Steps, int BatchSize, int Accumulation,
    float LearningRate, string Schedule, int WarmupSteps, float WeightDecay, float MaxGradNorm, int EvalEvery, int EvalExamples,
    int Patience, int CheckpointEvery, ulong Seed, int TrainExamples, MetricsFormat Metrics, bool Resume, bool AllowModelMismatch, int StopAfter = 0,
    PromptMethod Method = PromptMethod.Prompt, int PrefixProjection = 0);

/// <summary>What a training run produced.</summary>
internal sealed record TrainOutcome(RunSummary Summary, double? AccuracyBefore, EvalReport? Final, string? MetricsTable, string PromptPath, string AdapterPath,
    string PlotPath, string MetricsPath, long PromptBytes, double SecondsPerStep, double TokensPerSecond, bool StoppedAsPlanned = false);

/// <summary><c>promptengine train</c>: prompt tuning for classification with a verbalizer.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var task = new TaskOptions();
        var train = new Option<string>("--train") { Description = "Training JSONL ({\"text\", \"label\"} by default).", Required = true };
        var validation = new Option<string>("--validation") { Description = "Validation JSONL, evaluated every --eval-every steps.", Required = true };
        var output = new Option<string>("--out") { Description = "Output folder: checkpoint, best/final prompt, PEFT adapter, metrics, curves.png.", Required = true };
        var promptTokens = new Option<int>("--prompt-tokens") { Description = "Virtual tokens of the prompt.", DefaultValueFactory = _ => 20 };
        var init = new Option<string>("--init") { Description = "Initialisation: random, vocab, text or file.", DefaultValueFactory = _ => "vocab" };
        var initText = new Option<string?>("--init-text") { Description = "Text for --init text (tokenised, tiled or truncated to --prompt-tokens)." };
        var initFile = new Option<string?>("--init-file") { Description = "Prompt file or PEFT adapter for --init file." };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps.", DefaultValueFactory = _ => 100 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per batch.", DefaultValueFactory = _ => 8 };
        var accumulation = new Option<int>("--accumulation") { Description = "Batches per optimizer step (gradient accumulation).", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { Description = "Peak learning rate.", DefaultValueFactory = _ => 0.03f };
        var schedule = new Option<string>("--schedule") { Description = "constant, linear or cosine (after warm-up).", DefaultValueFactory = _ => "cosine" };
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps.", DefaultValueFactory = _ => 10 };
        var weightDecay = new Option<float>("--weight-decay") { Description = "AdamW decoupled weight decay.", DefaultValueFactory = _ => 0f };
        var clip = new Option<float>("--max-grad-norm") { Description = "Clip the prompt gradient's norm (0: off).", DefaultValueFactory = _ => 1f };
        var evalEvery = new Option<int>("--eval-every") { Description = "Evaluate every N steps (0: at the end only).", DefaultValueFactory = _ => 25 };
        var evalExamples = new Option<int>("--eval-examples") { Description = "Validation examples per evaluation (first N; 0: all).", DefaultValueFactory = _ => 200 };
        var patience = new Option<int>("--patience") { Description = "Stop after N evaluations without improvement (0: off).", DefaultValueFactory = _ => 0 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Checkpoint every N steps (also at the end and on Ctrl-C).", DefaultValueFactory = _ => 25 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the initialisation and the data order.", DefaultValueFactory = _ => 1UL };
        var trainExamples = new Option<int>("--train-examples") { Description = "Use the first N training examples (0: all).", DefaultValueFactory = _ => 0 };
        var metrics = new Option<MetricsFormat>("--metrics") { Description = "Metrics file format: csv or jsonl.", DefaultValueFactory = _ => MetricsFormat.Csv };
        var resume = new Option<bool>("--resume") { Description = "Continue from --out's checkpoint (same flags)." };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Accept an --init-file prompt made for another model of the same width." };
        var methodOption = MethodOption.Create();
        var prefixProjection = new Option<int>("--prefix-projection")
        {
            Description = "With --method prefix: train the deep prompt through prefix tuning's reparameterisation MLP of this hidden width "
                + "(PEFT prefix_projection, encoder_hidden_size); the saved prompt and adapter hold its output as a plain deep prompt. 0: off.",
            DefaultValueFactory = _ => 0,
        };
        var stopAfter = new Option<int>("--stop-after") { Description = "Stop after this many steps of this invocation, saving a checkpoint (continue later with --resume).", DefaultValueFactory = _ => 0 };
        var command = new Command("train", """
            Tune a soft prompt for classification with a verbalizer, or for generation targets (--task Generation); only the prompt is trained.
            Example: promptengine train --model stories15M --train imdb/train.jsonl --validation imdb/validation.jsonl --out runs/imdb --steps 200
            """);
        task.AddTo(command);
        foreach (var option in new Option[] { train, validation, output, promptTokens, init, initText, initFile, steps, batch, accumulation, lr, schedule, warmup,
                     weightDecay, clip, evalEvery, evalExamples, patience, checkpointEvery, seed, trainExamples, metrics, resume, allow, stopAfter, methodOption,
                     prefixProjection })
            command.Options.Add(option);
        // Range checks on the options a user gives (defaults are valid by construction).
        foreach (var o in new[] { promptTokens, steps, batch, accumulation }) OptionChecks.Positive(o);
        foreach (var o in new[] { warmup, evalEvery, evalExamples, patience, checkpointEvery, trainExamples, stopAfter, prefixProjection }) OptionChecks.NonNegative(o);
        OptionChecks.Require(lr, v => v > 0, "must be positive");
        OptionChecks.Require(clip, v => v >= 0, "must not be negative");
        OptionChecks.Require(schedule, v => v is "constant" or "linear" or "cosine", "must be constant, linear or cosine");
        OptionChecks.Require(init, v => PromptInit.TryParseMethod(v, out _), "must be random, vocab, text or file");
        command.Validators.Add(r =>
        {
            var method = r.GetResult(init)?.GetValueOrDefault<string>() ?? "vocab";
            if (method == "text" && string.IsNullOrEmpty(r.GetResult(initText)?.GetValueOrDefault<string?>())) r.AddError("--init text needs --init-text");
            if (method == "file" && string.IsNullOrEmpty(r.GetResult(initFile)?.GetValueOrDefault<string?>())) r.AddError("--init file needs --init-file");
            if (method == "text" && r.GetResult(methodOption)?.GetValueOrDefault<string>() == "prefix")
                r.AddError("--init text has no deep-prompt counterpart; with --method prefix use --init random or file");
            if (r.GetResult(prefixProjection)?.GetValueOrDefault<int>() is > 0)
            {
                if (r.GetResult(methodOption)?.GetValueOrDefault<string>() != "prefix")
                    r.AddError("--prefix-projection reparameterises a deep prompt; it needs --method prefix");
                else if (method == "file")
                    r.AddError("--prefix-projection cannot start from --init file: a saved deep prompt is the MLP's folded output and cannot be unfolded into an MLP; use --init random");
            }
        });
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var settings = new TrainSettings(parse.GetValue(output)!, parse.GetValue(promptTokens), parse.GetValue(init)!, parse.GetValue(initText), parse.GetValue(initFile),
                parse.GetValue(steps), parse.GetValue(batch), parse.GetValue(accumulation), parse.GetValue(lr), parse.GetValue(schedule)!, parse.GetValue(warmup),
                parse.GetValue(weightDecay), parse.GetValue(clip), parse.GetValue(evalEvery), parse.GetValue(evalExamples), parse.GetValue(patience),
                parse.GetValue(checkpointEvery), parse.GetValue(seed), parse.GetValue(trainExamples), parse.GetValue(metrics), parse.GetValue(resume), parse.GetValue(allow),
                parse.GetValue(stopAfter), MethodOption.Parse(parse.GetValue(methodOption)), parse.GetValue(prefixProjection));
            var outcome = Run(parse, task, parse.GetValue(train)!, parse.GetValue(validation)!, settings, measureBefore: false);
            Report(outcome);
            // Ctrl-C exits 130 like any interrupted program; --stop-after is a planned pause.
            return outcome.Summary.Outcome == RunOutcome.Interrupted && !outcome.StoppedAsPlanned ? 130 : 0;
        }));
        return command;
    }

    /// <summary>Loads, encodes, initialises, trains and saves; shared with the demo.</summary>
    public static TrainOutcome Run(ParseResult parse, TaskOptions task, string trainPath, string validationPath, TrainSettings s, bool measureBefore)
    {
        var console = CliRunner.Out;
        if (s.WarmupSteps > s.Steps) throw new PromptEngineException($"--warmup {s.WarmupSteps} is longer than the run's --steps {s.Steps}");
        using var model = ModelFolder.Open(parse.GetValue(task.Model)!);
        var trainData = task.Load(parse, trainPath);
        var validationData = task.Load(parse, validationPath);
        // A deep prompt lives in the attention layers, so the rows hold no prompt slots.
        var deep = s.Method == PromptMethod.Prefix;
        var (template, verbalizer, encoder) = task.BuildAny(parse, model, trainData, deep ? 0 : s.PromptTokens);
        var trainExamples = TaskOptions.Encode(encoder, trainData, s.TrainExamples);
        var evalExamples = TaskOptions.Encode(encoder, validationData, s.EvalExamples);
        foreach (var (name, report) in new[] { (trainPath, trainData.Report), (validationPath, validationData.Report) })
            if (report.Malformed > 0) CliRunner.Error.WriteLine($"warning: {name}: skipped {report.Malformed} malformed line(s), e.g. {report.MalformedSamples.FirstOrDefault()}");
        var lengthLimit = Math.Max(trainExamples.Max(e => e.Length), evalExamples.Max(e => e.Length));

        // The prompt: initialised (or resumed from the checkpoint by the trainer).
        PromptInit.TryParseMethod(s.Init, out var method);
        var initializer = new PromptInit(model);
        // Deep prompts start random (as PEFT's PrefixEncoder embedding does; --init vocab also means random for them) or from a file;
        // with --prefix-projection the MLP's seeded parameters make the prefix instead.
        if (s.PrefixProjection > 0 && (!deep || method == PromptInitMethod.File))
            throw new PromptEngineException("--prefix-projection needs --method prefix and a random start (not --init file)");
        var projected = s.PrefixProjection > 0;
        var deepPrompt = !deep || projected ? null : method == PromptInitMethod.File ? MethodOption.LoadDeep(s.InitFile!, model.Config)
            : DeepPrompt.Random(model.Config, s.PromptTokens, unchecked((int)s.Seed));
        if (deepPrompt is not null && deepPrompt.VirtualTokens != s.PromptTokens)
            throw new PromptEngineException($"--init-file {s.InitFile} has {deepPrompt.VirtualTokens} virtual tokens, --prompt-tokens says {s.PromptTokens}");
        SoftPrompt? prompt = deep ? null : method switch
        {
            PromptInitMethod.Random => initializer.Random(s.PromptTokens, unchecked((int)s.Seed)),
            PromptInitMethod.Text => initializer.FromText(s.InitText!, s.PromptTokens),
            PromptInitMethod.File => initializer.FromFile(s.InitFile!, s.AllowModelMismatch),
            _ => initializer.SampledVocabulary(s.PromptTokens, unchecked((int)s.Seed)),
        };
        if (prompt is not null && prompt.VirtualTokens != s.PromptTokens)
            throw new PromptEngineException($"--init-file {s.InitFile} has {prompt.VirtualTokens} virtual tokens, --prompt-tokens says {s.PromptTokens}");

        using var kernels = KernelContext.Create(KernelBackend.Auto);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(Math.Max(s.BatchSize, 1), lengthLimit, deep ? 0 : s.PromptTokens,
            MaxVerbalizer: Math.Max(16, verbalizer?.TokenIds.Length ?? 0), PrefixTokens: deep ? s.PromptTokens : 0));
        using var projection = projected ? new PrefixProjection(kernels, model.Config, s.PromptTokens, s.PrefixProjection, unchecked((int)s.Seed)) : null;
        if (projection is not null) projection.Forward(engine);
        else if (deep) engine.SetPrefix(deepPrompt!.ToEngineLayout());
        else engine.SetPrompt(prompt!.Values);
        var classification = verbalizer is null ? null : new ClassificationEvaluator(evalExamples, verbalizer, s.BatchSize);
        IEvaluator evaluator = classification ?? (IEvaluator)new LossEvaluator(evalExamples, s.BatchSize);
        double? before = null;
        if (measureBefore)
        {
            before = evaluator.Evaluate(engine).Metric;
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture, $"accuracy of the initial prompt on {evalExamples.Count} validation reviews: {before:P1}") + Environment.NewLine));
        }

        var schedule = LearningRateSchedule.Create(s.Schedule, s.LearningRate, s.WarmupSteps);
        IReadOnlyDictionary<string, string> initMetadata = projection is not null
            ? new Dictionary<string, string> { [PromptMetadata.InitMethod] = "random", [PromptMetadata.InitSeed] = unchecked((int)s.Seed).ToString(CultureInfo.InvariantCulture) }
            : deep ? deepPrompt!.Metadata : prompt!.Metadata;
        var promptMetadata = PromptMetadata.ForModel(model).Concat(initMetadata.Where(p => p.Key.StartsWith("init", StringComparison.Ordinal)))
            .GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.First().Value);
        // Provenance: the saved deep prompt is the MLP's output, folded (the trainer records it too on the best prompt).
        if (projection is not null) promptMetadata[PromptMetadata.Reparameterisation] = projection.Reparameterisation;
        var runSettings = new { s.PromptTokens, s.Init, s.InitText, s.InitFile, s.Steps, s.BatchSize, s.Accumulation, s.LearningRate, s.Schedule, s.WarmupSteps,
            s.WeightDecay, s.MaxGradNorm, s.EvalEvery, s.EvalExamples, s.Patience, s.Seed, s.TrainExamples, template = task.TemplateText(parse), kind = parse.GetValue(task.Task),
            labels = verbalizer?.Labels, maxLength = parse.GetValue(task.MaxLength), trainPath = Path.GetFullPath(trainPath), validationPath = Path.GetFullPath(validationPath),
            model = ModelFingerprint.Compute(model),
            // The projection joins the method's name rather than a field of its own, so runs without it keep their fingerprint.
            method = projected ? string.Create(CultureInfo.InvariantCulture, $"{s.Method} mlp {s.PrefixProjection}") : s.Method.ToString() };
        var options = new TrainerOptions
        {
            Steps = s.Steps,
            LearningRate = schedule.PerTrainerStep(s.Steps),
            WeightDecay = s.WeightDecay,
            MaxGradNorm = s.MaxGradNorm,
            GradientAccumulation = s.Accumulation,
            EvalEvery = s.EvalEvery,
            EarlyStoppingPatience = s.Patience,
            CheckpointEvery = s.CheckpointEvery,
            OutputDirectory = s.OutputDirectory,
            RunFingerprint = Checkpoint.Fingerprint(runSettings),
            PromptMetadata = promptMetadata,
        };
        var batches = new SampledBatches(trainExamples, new BatchSamplerOptions(s.BatchSize, s.Seed, Shuffle: true, BucketWindowBatches: 20), verbalizer);
        var trainer = new Trainer(engine, batches, evaluator, options, projection);

        Directory.CreateDirectory(s.OutputDirectory);
        var metricsPath = Path.Combine(s.OutputDirectory, s.Metrics == MetricsFormat.Csv ? "metrics.csv" : "metrics.jsonl");
        int? resumeStep = s.Resume && File.Exists(Path.Combine(s.OutputDirectory, Trainer.CheckpointFile))
            ? Checkpoint.Load(Path.Combine(s.OutputDirectory, Trainer.CheckpointFile)).Step : null;
        using var log = new MetricsLog(metricsPath, s.Metrics, s.Resume ? resumeStep ?? 0 : null);
        var losses = new List<(int, double)>();
        var evals = new List<(int, double)>();
        StepReport? last = null;
        var pending = new Dictionary<int, EvalReport>();
        trainer.Evaluated += (step, report) => { evals.Add((step, report.Metric)); pending[step] = report; };

        using var cancel = new CancellationTokenSource();
        var stoppedAsPlanned = false;
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        RunSummary summary;
        try
        {
            summary = console.Progress()
                .Columns(new TaskDescriptionColumn { Alignment = Justify.Left }, new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var bar = ctx.AddTask("training", maxValue: s.Steps);
                    var firstStep = resumeStep ?? 0;
                    trainer.StepCompleted += r =>
                    {
                        if (s.StopAfter > 0 && r.Step - firstStep >= s.StopAfter && !cancel.IsCancellationRequested) { stoppedAsPlanned = true; cancel.Cancel(); }
                        last = r;
                        losses.Add((r.Step, r.Loss));
                        bar.Value = r.Step;
                        bar.Description = string.Create(CultureInfo.InvariantCulture, $"step {r.Step}/{r.TotalSteps} loss {r.Loss:F4} {r.TokensPerSecond:F0} tok/s{(evals.Count == 0 ? "" : verbalizer is null ? $" val loss {-evals[^1].Item2:F3}" : $" acc {evals[^1].Item2:P1}")}");
                    };
                    trainer.Evaluated += (step, report) =>
                    {
                        if (last is { } r && r.Step == step)
                            log.Write(new MetricsRow(r.Step, r.Loss, r.GradNorm, r.LearningRate, r.TokensPerSecond, r.Elapsed.TotalSeconds, report.Loss, report.Metric));
                    };
                    trainer.StepCompleted += r =>
                    {
                        // Steps without an evaluation are logged here; evaluated steps by the handler above.
                        var evaluates = s.EvalEvery > 0 && r.Step % s.EvalEvery == 0 || r.Step == s.Steps;
                        if (!evaluates) log.Write(new MetricsRow(r.Step, r.Loss, r.GradNorm, r.LearningRate, r.TokensPerSecond, r.Elapsed.TotalSeconds));
                    };
                    var result = trainer.Run(s.Resume, cancel.Token);
                    bar.StopTask();
                    return result;
                });
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }

        // The best prompt (by validation accuracy) is the run's product, in both layouts.
        var bestPath = summary.BestPromptPath ?? Path.Combine(s.OutputDirectory, Trainer.BestPromptFile);
        if (summary.BestPromptPath is null)
        {
            if (deep) DeepPromptFile.Save(bestPath, DeepPrompt.FromEngineLayout(engine.GetPrefix(), s.PromptTokens, model.Config, promptMetadata));
            else PromptFile.Save(bestPath, engine.GetPrompt(), engine.PromptRows, engine.Config.HiddenSize, promptMetadata);
        }
        var adapterPath = Path.Combine(s.OutputDirectory, "adapter");
        SoftPrompt? best = null;
        DeepPrompt? bestDeep = null;
        if (deep)
        {
            bestDeep = DeepPromptFile.Load(bestPath, model.Config);
            PeftAdapter.SavePrefix(adapterPath, bestDeep, model);
        }
        else
        {
            best = PromptFile.Load(bestPath, model.Config.HiddenSize);
            PeftAdapter.Save(adapterPath, best, model, method, s.InitText);
        }
        EvalReport? final = null;
        string? table = null;
        if (summary.Outcome != RunOutcome.Interrupted)
        {
            if (deep) engine.SetPrefix(bestDeep!.ToEngineLayout());
            else engine.SetPrompt(best!.Values);
            final = evaluator.Evaluate(engine);
            table = classification?.LastMetrics?.ToTable();
            File.WriteAllText(Path.Combine(s.OutputDirectory, "eval.json"), JsonSerializer.Serialize(new
            {
                accuracy = final.Metric, loss = final.Loss, examples = evalExamples.Count, best_step = summary.BestStep, details = final.Details,
                confusion = classification?.LastMetrics is { } m ? Enumerable.Range(0, m.Labels.Count).Select(g => Enumerable.Range(0, m.Labels.Count).Select(p => m.Confusion[g, p]).ToArray()).ToArray() : null,
                labels = verbalizer?.Labels,
            }, new JsonSerializerOptions { WriteIndented = true }));
        }
        var plotPath = Path.Combine(s.OutputDirectory, "curves.png");
        CurvePlot.Save(plotPath, losses, evals, verbalizer is null ? "-loss" : "accuracy", $"{(deep ? "prefix" : "prompt")} tuning{(projected ? $" (MLP {s.PrefixProjection})" : "")}: {s.PromptTokens} virtual tokens, lr {s.LearningRate}");
        var secondsPerStep = last is null ? 0 : last.Elapsed.TotalSeconds / Math.Max(1, last.Step - (resumeStep ?? 0));
        return new TrainOutcome(summary, before, final, table, bestPath, adapterPath, plotPath, metricsPath, new FileInfo(bestPath).Length,
            secondsPerStep, last?.TokensPerSecond ?? 0, stoppedAsPlanned);
    }

    public static void Report(TrainOutcome o)
    {
        var console = CliRunner.Out;
        var grid = new Table().AddColumns("result", "value").HideHeaders();
        void Row(string k, string v) => grid.AddRow(new Text(k), new Text(v));
        Row("outcome", $"{o.Summary.Outcome} after {o.Summary.Step} steps ({o.Summary.Elapsed.TotalSeconds:F0} s)");
        if (o.AccuracyBefore is { } before) Row("accuracy before", before.ToString("P1", CultureInfo.InvariantCulture));
        if (o.Final is { MetricName: "accuracy" } final) Row("accuracy after (best prompt)", $"{final.Metric.ToString("P1", CultureInfo.InvariantCulture)} (step {o.Summary.BestStep}), loss {final.Loss:F4}");
        else if (o.Final is { } evaluated) Row("validation loss (best prompt)", string.Create(CultureInfo.InvariantCulture, $"{evaluated.Loss:F4} nats/token (step {o.Summary.BestStep})"));
        Row("time per step / tokens per second", string.Create(CultureInfo.InvariantCulture, $"{o.SecondsPerStep:F2} s / {o.TokensPerSecond:F0}"));
        Row("prompt", $"{o.PromptPath} ({o.PromptBytes:N0} bytes)");
        Row("PEFT adapter", o.AdapterPath);
        Row("metrics / curves", $"{o.MetricsPath} / {o.PlotPath}");
        Row("checkpoint", o.Summary.CheckpointPath);
        console.Write(grid);
        if (o.MetricsTable is { } table) console.Write(new Text(table + Environment.NewLine));
    }
}
