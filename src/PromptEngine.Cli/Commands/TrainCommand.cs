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
    string OutputDirectory, int VirtualTokens, string Init, string? InitText, string? InitFile, int Steps, int BatchSize, int Accumulation,
    float LearningRate, string Schedule, int WarmupSteps, float WeightDecay, float MaxGradNorm, int EvalEvery, int EvalExamples,
    int Patience, int CheckpointEvery, ulong Seed, int TrainExamples, MetricsFormat Metrics, bool Resume, bool AllowModelMismatch, int StopAfter = 0,
    PromptMethod Method = PromptMethod.Prompt, int PrefixProjection = 0, string Head = HeadOption.None, float HeadLearningRate = HeadOption.DefaultLearningRate)
{
    /// <summary>The prompt method the flags choose.</summary>
    public PromptConfig Config => new(Method, VirtualTokens, PrefixProjection, Head == HeadOption.Linear);
}

/// <summary>The <c>--head</c> and <c>--head-lr</c> options of train.</summary>
internal static class HeadOption
{
    /// <summary>No head: the LM head's verbalizer rows score the answer.</summary>
    public const string None = "none";
    /// <summary>A linear classifier on the final normed hidden state at the answer position, trained with the prompt.</summary>
    public const string Linear = "linear";
    /// <summary>The head's default peak learning rate. The head starts at the label words' LM-head rows, and an AdamW step
    /// moves every one of its C weights by about the rate, so a logit moves by up to C·rate·|h| per step: at the prompt's
    /// 0.03 that is several nats on stories15M (C = 288) and the head forgets its start in a step; 0.001 moves it by a
    /// fraction of a nat.</summary>
    public const float DefaultLearningRate = 1e-3f;
}

/// <summary>What a training run produced.</summary>
internal sealed record TrainOutcome(RunSummary Summary, double? AccuracyBefore, EvalReport? Final, string? MetricsTable, string PromptPath, string AdapterPath,
    string PlotPath, string MetricsPath, long PromptBytes, double SecondsPerStep, double TokensPerSecond, bool StoppedAsPlanned = false, bool Terminated = false);

/// <summary><c>promptengine train</c>: prompt tuning for classification with a verbalizer.</summary>
internal static class TrainCommand
{
    public static Command Create()
    {
        var task = new TaskOptions();
        var train = new Option<string>("--train") { Description = "Training JSONL ({\"text\", \"label\"} by default).", Required = true };
        var validation = new Option<string>("--validation") { Description = "Validation JSONL, evaluated every --eval-every steps.", Required = true };
        var output = new Option<string>("--out") { Description = "Output folder: checkpoint, best/final prompt, PEFT adapter, metrics, curves.png.", Required = true };
        var virtualTokens = new Option<int>("--virtual-tokens", "--prompt-tokens") { Description = "Virtual tokens of the prompt (--prompt-tokens is the older name).", DefaultValueFactory = _ => 20 };
        var init = new Option<string>("--init") { Description = "Initialisation: random, vocab, text or file.", DefaultValueFactory = _ => "vocab" };
        var initText = new Option<string?>("--init-text") { Description = "Text for --init text (tokenised, tiled or truncated to --virtual-tokens)." };
        var initFile = new Option<string?>("--init-file") { Description = "Prompt file or PEFT adapter for --init file." };
        var steps = new Option<int>("--steps") { Description = "Optimizer steps.", DefaultValueFactory = _ => 100 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per batch.", DefaultValueFactory = _ => 8 };
        var accumulation = new Option<int>("--accumulation") { Description = "Batches per optimizer step (gradient accumulation).", DefaultValueFactory = _ => 1 };
        var lr = new Option<float>("--lr") { Description = $"Peak learning rate, in (0, {MaxLearningRate}].", DefaultValueFactory = _ => 0.03f };
        var schedule = new Option<string>("--schedule") { Description = "constant, linear or cosine (after warm-up).", DefaultValueFactory = _ => "cosine" };
        var warmup = new Option<int>("--warmup") { Description = "Warm-up steps, at most --steps (the default is shortened to --steps).", DefaultValueFactory = _ => 10 };
        var weightDecay = new Option<float>("--weight-decay") { Description = $"AdamW decoupled weight decay, in [0, {MaxWeightDecay}].", DefaultValueFactory = _ => 0f };
        var clip = new Option<float>("--max-grad-norm") { Description = "Clip the prompt gradient's norm (0: off; otherwise a finite positive number).", DefaultValueFactory = _ => 1f };
        var evalEvery = new Option<int>("--eval-every") { Description = "Evaluate every N steps (0: at the end only).", DefaultValueFactory = _ => 25 };
        var evalExamples = new Option<int>("--eval-examples") { Description = "Validation examples per evaluation (first N; 0: all).", DefaultValueFactory = _ => 200 };
        var patience = new Option<int>("--patience") { Description = "Stop after N evaluations without improvement (0: off).", DefaultValueFactory = _ => 0 };
        var checkpointEvery = new Option<int>("--checkpoint-every") { Description = "Checkpoint every N steps (also at the end and on Ctrl-C).", DefaultValueFactory = _ => 25 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the initialisation and the data order.", DefaultValueFactory = _ => 1UL };
        var trainExamples = new Option<int>("--train-examples") { Description = "Use the first N training examples (0: all).", DefaultValueFactory = _ => 0 };
        var metrics = new Option<MetricsFormat>("--metrics") { Description = "Metrics file format: csv or jsonl.", DefaultValueFactory = _ => MetricsFormat.Csv };
        var resume = new Option<bool>("--resume") { Description = "Continue from --out's checkpoint (same flags). Without it, an --out that already holds a run is refused." };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Accept an --init-file prompt made for another model of the same width." };
        var methodOption = MethodOption.Create();
        var prefixProjection = new Option<int>("--prefix-projection")
        {
            Description = "With --method prefix: train the deep prompt through prefix tuning's reparameterisation MLP of this hidden width "
                + "(PEFT prefix_projection, encoder_hidden_size); the saved prompt and adapter hold its output as a plain deep prompt. 0: off.",
            DefaultValueFactory = _ => 0,
        };
        var headOption = new Option<string>("--head")
        {
            Description = "none, or linear: a linear classifier (one row per label, with a bias) on the final hidden state at the answer position, trained "
                + "with the prompt; it starts at the label words' LM-head rows (step 0 is the zero-shot verbalizer) and is saved in the prompt file "
                + "(head.weight, head.bias) and the PEFT adapter (SEQ_CLS, score).",
            DefaultValueFactory = _ => HeadOption.None,
        };
        var headLr = new Option<float>("--head-lr") { Description = "Peak learning rate of the --head linear classifier (same schedule as --lr).", DefaultValueFactory = _ => HeadOption.DefaultLearningRate };
        var stopAfter = new Option<int>("--stop-after") { Description = "Stop after this many steps of this invocation, saving a checkpoint (continue later with --resume).", DefaultValueFactory = _ => 0 };
        var command = new Command("train", """
            Tune a soft prompt for classification with a verbalizer, or for generation targets (--task Generation); only the prompt is trained.
            Example: promptengine train --model stories15M --train imdb/train.jsonl --validation imdb/validation.jsonl --out runs/imdb --steps 200
            """);
        task.AddTo(command);
        foreach (var option in new Option[] { train, validation, output, virtualTokens, init, initText, initFile, steps, batch, accumulation, lr, schedule, warmup,
                     weightDecay, clip, evalEvery, evalExamples, patience, checkpointEvery, seed, trainExamples, metrics, resume, allow, stopAfter, methodOption,
                     prefixProjection, headOption, headLr })
            command.Options.Add(option);
        // Range checks on the options a user gives (defaults are valid by construction).
        foreach (var o in new[] { virtualTokens, steps, batch, accumulation }) OptionChecks.Positive(o);
        foreach (var o in new[] { warmup, evalEvery, evalExamples, patience, checkpointEvery, trainExamples, stopAfter, prefixProjection }) OptionChecks.NonNegative(o);
        OptionChecks.InRange(lr, 0, MaxLearningRate, minExclusive: true);
        OptionChecks.InRange(weightDecay, 0, MaxWeightDecay);
        OptionChecks.Require(headLr, v => v > 0, "must be positive");
        OptionChecks.Require(headOption, v => v is HeadOption.None or HeadOption.Linear, "must be none or linear");
        OptionChecks.Require(clip, v => v >= 0, "must not be negative");
        OptionChecks.Require(schedule, v => v is "constant" or "linear" or "cosine", "must be constant, linear or cosine");
        OptionChecks.Require(init, v => PromptInit.TryParseMethod(v, out _), "must be random, vocab, text or file");
        command.Validators.Add(r =>
        {
            string Text(Option<string> o) => OptionChecks.TryGetValue(r, o, out var v) ? v : "";
            string? MaybeText(Option<string?> o) => OptionChecks.TryGetValue(r, o, out var v) ? v : null;
            var method = Text(init);
            var deep = Text(methodOption) == "prefix";
            if (method == "text" && string.IsNullOrEmpty(MaybeText(initText))) r.AddError("--init text needs --init-text");
            if (method == "file" && string.IsNullOrEmpty(MaybeText(initFile))) r.AddError("--init file needs --init-file");
            if (method == "text" && deep)
                r.AddError("--init text has no deep-prompt counterpart; with --method prefix use --init random or file");
            if (OptionChecks.TryGetValue(r, prefixProjection, out var width) && width > 0)
            {
                if (!deep)
                    r.AddError("--prefix-projection reparameterises a deep prompt; it needs --method prefix");
                else if (method == "file")
                    r.AddError("--prefix-projection cannot start from --init file: a saved deep prompt is the MLP's folded output and cannot be unfolded into an MLP; use --init random");
            }
            // The default warm-up is shortened to a short run's length; one the user gives must fit.
            if (r.GetResult(warmup) is { Implicit: false } && OptionChecks.TryGetValue(r, warmup, out var warm) && OptionChecks.TryGetValue(r, steps, out var total) && total > 0 && warm > total)
                r.AddError($"--warmup {warm} is longer than the run's --steps {total}");
        });
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var settings = new TrainSettings(parse.GetValue(output)!, parse.GetValue(virtualTokens), parse.GetValue(init)!, parse.GetValue(initText), parse.GetValue(initFile),
                parse.GetValue(steps), parse.GetValue(batch), parse.GetValue(accumulation), parse.GetValue(lr), parse.GetValue(schedule)!,
                parse.GetResult(warmup) is { Implicit: false } ? parse.GetValue(warmup) : Math.Min(parse.GetValue(warmup), parse.GetValue(steps)),
                parse.GetValue(weightDecay), parse.GetValue(clip), parse.GetValue(evalEvery), parse.GetValue(evalExamples), parse.GetValue(patience),
                parse.GetValue(checkpointEvery), parse.GetValue(seed), parse.GetValue(trainExamples), parse.GetValue(metrics), parse.GetValue(resume), parse.GetValue(allow),
                parse.GetValue(stopAfter), MethodOption.Parse(parse.GetValue(methodOption)), parse.GetValue(prefixProjection), parse.GetValue(headOption)!,
                parse.GetValue(headLr));
            var outcome = Run(parse, task, parse.GetValue(train)!, parse.GetValue(validation)!, settings, measureBefore: false);
            Report(outcome);
            // Ctrl-C exits 130 and SIGTERM 143, like any program they stop; --stop-after is a planned pause.
            if (outcome.Summary.Outcome != RunOutcome.Interrupted || outcome.StoppedAsPlanned) return 0;
            return outcome.Terminated ? TerminatedExitCode : InterruptedExitCode;
        }));
        return command;
    }

    /// <summary>The largest --lr accepted: prompt tuning's published rates reach 0.3–3, and far beyond that the Adam step
    /// (about lr per element) would throw the prompt far outside the embedding table in one step.</summary>
    public const float MaxLearningRate = 100f;

    /// <summary>The largest --weight-decay accepted: at 1 the decoupled decay already removes lr·100 % of the prompt per step.</summary>
    public const float MaxWeightDecay = 1f;

    /// <summary>Exit code after Ctrl-C (SIGINT), with the checkpoint saved.</summary>
    public const int InterruptedExitCode = 130;

    /// <summary>Exit code after SIGTERM (what docker stop and job schedulers send), with the checkpoint saved.</summary>
    public const int TerminatedExitCode = 143;

    /// <summary>What a run writes into --out, by file name (the metrics in either format).</summary>
    static readonly string[] RunFiles = [Trainer.CheckpointFile, Trainer.BestPromptFile, "metrics.csv", "metrics.jsonl", "eval.json", "curves.png",
        Path.Combine("adapter", PeftAdapter.WeightsFileName), Path.Combine("adapter", PeftAdapter.ConfigFileName)];

    /// <summary>Checks --out before anything is loaded: it can hold the run, it holds no earlier run unless resuming, and no
    /// file the run writes is one of its inputs. <paramref name="replacePrevious"/> lets the demo start its own folder afresh.</summary>
    static void CheckOutput(ParseResult parse, TaskOptions task, string trainPath, string validationPath, TrainSettings s, bool replacePrevious)
    {
        PathChecks.OutputFolder("--out", s.OutputDirectory);
        var outputs = RunFiles.Select(f => Path.Combine(s.OutputDirectory, f)).ToList();
        PathChecks.NotOverInputs("--out", outputs, ("--train", trainPath), ("--validation", validationPath), ("--init-file", s.InitFile),
            ("--model", parse.GetValue(task.Model)));
        if (s.Resume || replacePrevious) return;
        if (outputs.FirstOrDefault(File.Exists) is { } previous)
            throw new UsageException($"--out {s.OutputDirectory} already holds a run ({Path.GetFileName(previous)}); continue it with --resume (same flags), or choose another --out");
    }

    /// <summary>Loads, encodes, initialises, trains and saves; shared with the demo.</summary>
    public static TrainOutcome Run(ParseResult parse, TaskOptions task, string trainPath, string validationPath, TrainSettings s, bool measureBefore,
        bool replacePrevious = false)
    {
        var console = CliRunner.Out;
        if (s.WarmupSteps > s.Steps) throw new UsageException($"--warmup {s.WarmupSteps} is longer than the run's --steps {s.Steps}");
        CheckOutput(parse, task, trainPath, validationPath, s, replacePrevious);
        PromptInit.TryParseMethod(s.Init, out var initMethod);
        if (s.InitFile is { } initFile && initMethod == PromptInitMethod.File && !Directory.Exists(initFile))
            PathChecks.InputFile("--init-file", initFile);
        using var model = ModelFolder.Open(parse.GetValue(task.Model)!);
        var trainData = task.Load(parse, trainPath, "--train");
        var validationData = task.Load(parse, validationPath, "--validation");
        var method = s.Config;
        // A deep prompt lives in the attention layers, so the rows hold no prompt slots.
        var (template, verbalizer, encoder) = task.BuildAny(parse, model, trainData, method.PromptTableRows);
        if (method.LinearHead && verbalizer is null) throw new PromptEngineException("--head linear classifies: it needs a classification task (labels), not --task Generation");
        var trainExamples = TaskOptions.Encode(encoder, trainData, s.TrainExamples);
        var evalExamples = TaskOptions.Encode(encoder, validationData, s.EvalExamples);
        foreach (var (name, report) in new[] { (trainPath, trainData.Report), (validationPath, validationData.Report) })
            if (report.Malformed > 0) CliRunner.Error.WriteLine($"warning: {name}: skipped {report.Malformed} malformed line(s), e.g. {report.MalformedSamples.FirstOrDefault()}");
        var lengthLimit = Math.Max(trainExamples.Max(e => e.Length), evalExamples.Max(e => e.Length));
        if (method.DeepVirtualTokens + lengthLimit > model.Config.MaxPositions)
            throw new UsageException($"--virtual-tokens {s.VirtualTokens} deep-prompt positions + rows of up to {lengthLimit} positions exceed the model's {model.Config.MaxPositions}; lower --virtual-tokens or --max-length");

        // The prompt: initialised (or resumed from the checkpoint by the trainer).
        var initial = method.Initial(model, initMethod, unchecked((int)s.Seed), s.InitText, s.InitFile, s.AllowModelMismatch);
        if (initial is not null && initial.VirtualTokens != s.VirtualTokens)
            throw new PromptEngineException($"--init-file {s.InitFile} has {initial.VirtualTokens} virtual tokens, --virtual-tokens says {s.VirtualTokens}");

        using var kernels = KernelContext.Create(KernelBackend.Auto);
        // A batch never holds more rows than there are examples (the sampler's batches of a smaller set are the whole set),
        // so the engine is sized by what the data needs, not by the flag.
        var rows = Math.Max(Math.Min(s.BatchSize, trainExamples.Count), Math.Min(s.BatchSize, evalExamples.Count));
        using var engine = EngineFactory.Create(kernels, model, method.EngineOptions(rows, lengthLimit, Math.Max(16, verbalizer?.TokenIds.Length ?? 0)));
        // A head starts as the zero-shot verbalizer (the label words' LM-head rows, bias 0); see ClassifierHead.
        using var trainable = method.Create(engine, initial, unchecked((int)s.Seed), verbalizer?.Labels, verbalizer?.TokenIds);
        var classification = verbalizer is null ? null : new ClassificationEvaluator(evalExamples, verbalizer, s.BatchSize);
        IEvaluator evaluator = classification ?? (IEvaluator)new LossEvaluator(evalExamples, s.BatchSize);
        double? before = null;
        if (measureBefore)
        {
            before = evaluator.Evaluate(engine).Metric;
            console.Write(new Text(string.Create(CultureInfo.InvariantCulture, $"accuracy of the initial prompt on {evalExamples.Count} validation reviews: {before:P1}") + Environment.NewLine));
        }

        var schedule = LearningRateSchedule.Create(s.Schedule, s.LearningRate, s.WarmupSteps);
        var promptMetadata = PromptMetadata.ForModel(model).Concat(trainable.InitMetadata.Where(p => p.Key.StartsWith("init", StringComparison.Ordinal)))
            .GroupBy(p => p.Key).ToDictionary(g => g.Key, g => g.First().Value);
        // The virtual tokens keep their old key, PromptTokens, so that checkpoints written before the rename still resume.
        var runSettings = new { PromptTokens = s.VirtualTokens, s.Init, s.InitText, s.InitFile, s.Steps, s.BatchSize, s.Accumulation, s.LearningRate, s.Schedule, s.WarmupSteps,
            s.WeightDecay, s.MaxGradNorm, s.EvalEvery, s.EvalExamples, s.Patience, s.Seed, s.TrainExamples, template = task.TemplateText(parse), kind = parse.GetValue(task.Task),
            labels = verbalizer?.Labels, maxLength = parse.GetValue(task.MaxLength), trainPath = Path.GetFullPath(trainPath), validationPath = Path.GetFullPath(validationPath),
            model = ModelFingerprint.Compute(model),
            // An MLP and a head join the method's name rather than fields of their own, so runs without them keep their fingerprint.
            method = method.Name + (method.LinearHead ? string.Create(CultureInfo.InvariantCulture, $" head linear lr {s.HeadLearningRate:R}") : "") };
        var headSchedule = LearningRateSchedule.Create(s.Schedule, s.HeadLearningRate, s.WarmupSteps);
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
            HeadLearningRate = method.LinearHead ? step => (float)headSchedule.At(step, s.Steps) : null,
        };
        var batches = new SampledBatches(trainExamples, new BatchSamplerOptions(s.BatchSize, s.Seed, Shuffle: true, BucketWindowBatches: 20), verbalizer);
        var trainer = new Trainer(trainable, batches, evaluator, options);

        Directory.CreateDirectory(s.OutputDirectory);
        var metricsPath = Path.Combine(s.OutputDirectory, s.Metrics == MetricsFormat.Csv ? "metrics.csv" : "metrics.jsonl");
        var checkpointPath = Path.Combine(s.OutputDirectory, Trainer.CheckpointFile);
        int? resumeStep = s.Resume && File.Exists(checkpointPath) ? ReadResumeStep(checkpointPath, batches) : null;
        using var log = new MetricsLog(metricsPath, s.Metrics, s.Resume ? resumeStep ?? 0 : null);
        var losses = new List<(int, double)>();
        var evals = new List<(int, double)>();
        StepReport? last = null;
        var pending = new Dictionary<int, EvalReport>();
        trainer.Evaluated += (step, report) => { evals.Add((step, report.Metric)); pending[step] = report; };

        using var cancel = new CancellationTokenSource();
        var stoppedAsPlanned = false;
        var terminated = false;
        ConsoleCancelEventHandler onCancel = (_, e) => { e.Cancel = true; cancel.Cancel(); };
        Console.CancelKeyPress += onCancel;
        // SIGTERM stops the run the way Ctrl-C does: the trainer saves its checkpoint, then the command exits 143.
        using var onTerminate = OperatingSystem.IsWindows() ? null : System.Runtime.InteropServices.PosixSignalRegistration.Create(
            System.Runtime.InteropServices.PosixSignal.SIGTERM, context => { context.Cancel = true; terminated = true; cancel.Cancel(); });
        TestHooks.RunStarted?.Invoke(cancel);
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

        // The best prompt (by validation accuracy) is the run's product, as a prompt file and a PEFT adapter.
        var bestPath = summary.BestPromptPath ?? Path.Combine(s.OutputDirectory, Trainer.BestPromptFile);
        if (summary.BestPromptPath is null) trainable.Snapshot(promptMetadata).Save(bestPath);
        var best = TunedPrompt.Load(bestPath, model.Config, method.Method, verbalizer?.Labels);
        if (method.LinearHead && best.Head is null) throw new PromptEngineException($"{bestPath}: the best prompt was saved without its classifier head");
        var adapterPath = Path.Combine(s.OutputDirectory, "adapter");
        best.ExportPeft(adapterPath, model, initMethod, s.InitText);
        EvalReport? final = null;
        string? table = null;
        if (summary.Outcome != RunOutcome.Interrupted)
        {
            trainable.Apply(best);
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
        CurvePlot.Save(plotPath, losses, evals, verbalizer is null ? "-loss" : "accuracy", $"{method.Title}: {s.VirtualTokens} virtual tokens, lr {s.LearningRate}");
        var secondsPerStep = last is null ? 0 : last.Elapsed.TotalSeconds / Math.Max(1, last.Step - (resumeStep ?? 0));
        return new TrainOutcome(summary, before, final, table, bestPath, adapterPath, plotPath, metricsPath, new FileInfo(bestPath).Length,
            secondsPerStep, last?.TokensPerSecond ?? 0, stoppedAsPlanned, terminated);
    }

    /// <summary>The step a checkpoint continues from, read before anything else is written; the checkpoint's data-order
    /// state is tried on the sampler too (the trainer restores it again), so that a damaged checkpoint is refused naming
    /// its file before the metrics log is touched.</summary>
    static int ReadResumeStep(string checkpointPath, SampledBatches batches)
    {
        try
        {
            var state = Checkpoint.Load(checkpointPath);
            batches.RestoreState(state.DataState);
            return state.Step;
        }
        catch (Exception e) when (e is PromptEngineException or JsonException or FormatException or ArgumentException or InvalidDataException or EndOfStreamException)
        {
            if (e is PromptEngineException && e.Message.Contains(checkpointPath, StringComparison.Ordinal)) throw;
            throw new PromptEngineException($"{checkpointPath}: cannot resume from this checkpoint: {e.Message.ReplaceLineEndings(" ")}", e);
        }
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
