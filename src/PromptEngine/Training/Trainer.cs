using System.Diagnostics;
using PromptEngine.Engine;
using PromptEngine.Prompts;

namespace PromptEngine.Training;

/// <summary>The stream of training batches, resumable: its position and RNG state round-trip through a string.</summary>
public interface ITrainingBatches
{
    /// <summary>The next batch (advances the position).</summary>
    Batch Next();
    /// <summary>The position and RNG state, serialised.</summary>
    string SaveState();
    /// <summary>Continues from a state returned by <see cref="SaveState"/>.</summary>
    void RestoreState(string state);
}

/// <summary>Scores the prompt the engine currently holds (e.g. accuracy on a validation subset).</summary>
public interface IEvaluator
{
    /// <summary>Runs the evaluation; higher <see cref="EvalReport.Metric"/> is better.</summary>
    EvalReport Evaluate(TransformerEngine engine);
}

/// <summary>An evaluation's outcome.</summary>
/// <param name="Metric">What early stopping and "best prompt" follow (higher is better), e.g. accuracy.</param>
/// <param name="MetricName">Its name, e.g. "accuracy".</param>
/// <param name="Loss">Mean loss on the evaluation data.</param>
/// <param name="Details">Anything else to log (per-class figures, ...).</param>
public sealed record EvalReport(double Metric, string MetricName, double Loss, IReadOnlyDictionary<string, double>? Details = null);

/// <summary>How the optimizer and the loop run.</summary>
public sealed record TrainerOptions
{
    /// <summary>Optimizer steps in the whole run.</summary>
    public required int Steps { get; init; }
    /// <summary>Learning rate at each step (1-based), e.g. warm-up then cosine decay.</summary>
    public required Func<int, float> LearningRate { get; init; }
    /// <summary>AdamW β₁.</summary>
    public float Beta1 { get; init; } = 0.9f;
    /// <summary>AdamW β₂.</summary>
    public float Beta2 { get; init; } = 0.999f;
    /// <summary>AdamW ε.</summary>
    public float Epsilon { get; init; } = 1e-8f;
    /// <summary>Decoupled weight decay on the prompt (and a classifier head).</summary>
    public float WeightDecay { get; init; }
    /// <summary>Clip each group's gradient norm to this (≤ 0: no clipping): the prompt's, and a classifier head's on its own.</summary>
    public float MaxGradNorm { get; init; } = 1f;
    /// <summary>Batches whose gradients are averaged into one optimizer step.</summary>
    public int GradientAccumulation { get; init; } = 1;
    /// <summary>Evaluate every this many steps (0: only at the end).</summary>
    public int EvalEvery { get; init; }
    /// <summary>Stop after this many evaluations without improvement (0: never).</summary>
    public int EarlyStoppingPatience { get; init; }
    /// <summary>Write a checkpoint every this many steps (0: only at the end and on interruption).</summary>
    public int CheckpointEvery { get; init; }
    /// <summary>Where checkpoint.safetensors, best_prompt.safetensors and the metrics go.</summary>
    public required string OutputDirectory { get; init; }
    /// <summary>Digest of the settings that define the run; a checkpoint of another run is refused on resume.</summary>
    public string RunFingerprint { get; init; } = "";
    /// <summary>Metadata written into saved prompts (base-model fingerprint, init method, ...).</summary>
    public IReadOnlyDictionary<string, string>? PromptMetadata { get; init; }
    /// <summary>Learning rate of the engine's classifier head (<see cref="TransformerEngine.Head"/>) at each step; null: the prompt's.</summary>
    public Func<int, float>? HeadLearningRate { get; init; }
}

/// <summary>One optimizer step's figures.</summary>
public sealed record StepReport(int Step, int TotalSteps, float Loss, float GradNorm, float LearningRate, long Tokens, double TokensPerSecond, TimeSpan Elapsed);

/// <summary>How a run ended.</summary>
public enum RunOutcome
{
    /// <summary>Every step ran.</summary>
    Completed,
    /// <summary>The validation metric stopped improving for the patience's evaluations.</summary>
    EarlyStopped,
    /// <summary>Cancelled (a signal or a step limit): the last state is in the checkpoint.</summary>
    Interrupted,
}

/// <summary>The end of a run.</summary>
public sealed record RunSummary(RunOutcome Outcome, int Step, double? BestMetric, int BestStep, string CheckpointPath, string? BestPromptPath, TimeSpan Elapsed);

/// <summary>A NaN or ∞ loss; the step was not applied and the last checkpoint is intact.</summary>
public sealed class NonFiniteLossException(string message) : PromptEngineException(message);

/// <summary>
/// The prompt-tuning loop: for each step, accumulate dLoss/dPrompt over micro-batches, take one AdamW step
/// on the prompt only, log, evaluate every N steps (keeping the best prompt), checkpoint atomically, stop
/// early or on cancellation (saving first). On the CPU accelerator every kernel is deterministic, so an
/// interrupted and resumed run ends bit-identical to an uninterrupted one.
/// </summary>
/// <remarks>What is trained is a <see cref="TrainablePrompt"/>: one list of <see cref="TrainableParameter"/>s (the prompt's
/// group, then a classifier head's when one rides on it), stepped by one <see cref="AdamWOptimizer"/> and saved as one list
/// in checkpoints. Each step the prompt brings the engine's accumulated gradient to its parameters before the optimizer step
/// and their values back into the engine after it (both nothing for a prompt the engine holds itself; the MLP's backward
/// and forward for prefix tuning's reparameterisation). A head is its own group (<see cref="ParameterGroup.Head"/>): its own
/// clipping, at <see cref="TrainerOptions.HeadLearningRate"/>; saved prompts carry it.</remarks>
public sealed class Trainer
{
    /// <summary>File name of the rolling checkpoint in the output directory.</summary>
    public const string CheckpointFile = "checkpoint.safetensors";
    /// <summary>File name of the best prompt so far (the prompt method's own file: <see cref="TunedPrompt.Save"/>).</summary>
    public const string BestPromptFile = "best_prompt.safetensors";

    readonly TrainablePrompt prompt;
    readonly TransformerEngine engine;
    readonly ITrainingBatches batches;
    readonly IEvaluator? evaluator;
    readonly TrainerOptions options;

    /// <summary>Called after every optimizer step.</summary>
    public event Action<StepReport>? StepCompleted;
    /// <summary>Called after every evaluation, with the step it ran at.</summary>
    public event Action<int, EvalReport>? Evaluated;

    /// <summary>Creates a trainer of <paramref name="prompt"/> (any method, with or without a head).</summary>
    /// <exception cref="ArgumentException">Bad options.</exception>
    public Trainer(TrainablePrompt prompt, ITrainingBatches batches, IEvaluator? evaluator, TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        CheckOptions(options);
        this.prompt = prompt;
        engine = prompt.Engine;
        this.batches = batches;
        this.evaluator = evaluator;
        this.options = options;
    }

    /// <summary>Creates a trainer over an engine whose prompt bank (and deep prefix) is the prompt being tuned, or, with
    /// <paramref name="projection"/>, whose deep prefix is computed by that reparameterisation MLP, which is then what is
    /// trained (its current parameters overwrite the engine's prefix when the run starts); see <see cref="TrainablePrompt.Over(TransformerEngine, PrefixProjection?)"/>.</summary>
    /// <exception cref="ArgumentException">Bad options; nothing to train; a projection on an engine with a plain prompt too,
    /// or one that does not fit the engine's prefix.</exception>
    public Trainer(TransformerEngine engine, ITrainingBatches batches, IEvaluator? evaluator, TrainerOptions options, PrefixProjection? projection = null)
        : this(CheckOptions(options) ? TrainablePrompt.Over(engine, projection) : null!, batches, evaluator, options)
    {
    }

    /// <summary>Refuses options no run can have (before the prompt is looked at, as it always was); true otherwise.</summary>
    /// <exception cref="ArgumentException">Non-positive steps or accumulation.</exception>
    static bool CheckOptions(TrainerOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.Steps <= 0) throw new ArgumentException($"steps must be positive, got {options.Steps}");
        if (options.GradientAccumulation <= 0) throw new ArgumentException($"gradient accumulation must be positive, got {options.GradientAccumulation}");
        return true;
    }

    IReadOnlyList<TrainableParameter> Trainables => prompt.Trainables;

    string CheckpointPath => Path.Combine(options.OutputDirectory, CheckpointFile);
    string BestPromptPath => Path.Combine(options.OutputDirectory, BestPromptFile);

    /// <summary>Runs to the end (or early stop, or cancellation). With <paramref name="resume"/>, continues
    /// from the output directory's checkpoint.</summary>
    public RunSummary Run(bool resume = false, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(options.OutputDirectory);
        int step = 0, bestStep = 0, stale = 0;
        double? best = null;
        if (resume)
        {
            if (!File.Exists(CheckpointPath)) throw new PromptEngineException($"cannot resume: no checkpoint at {CheckpointPath}");
            var state = Checkpoint.Load(CheckpointPath);
            if (state.Step > options.Steps)
                throw new PromptEngineException($"{CheckpointPath}: the checkpoint is at step {state.Step}, past this run's {options.Steps} steps; it belongs to a longer run");
            if (state.RunFingerprint != options.RunFingerprint)
                throw new PromptEngineException($"{CheckpointPath}: the checkpoint belongs to a run with other settings (fingerprint {state.RunFingerprint}, this run {options.RunFingerprint}); resume with the same settings or train into another output folder");
            Restore(state);
            batches.RestoreState(state.DataState);
            (step, best, bestStep, stale) = (state.Step, state.BestMetric, state.BestStep, state.EvalsWithoutImprovement);
        }
        prompt.ParametersToEngine(); // an MLP's output is the engine's prefix from here on

        var optimizer = engine.Optimizer;
        var clock = Stopwatch.StartNew();
        long tokens = 0;
        var outcome = RunOutcome.Completed;
        while (step < options.Steps)
        {
            if (cancel.IsCancellationRequested) { outcome = RunOutcome.Interrupted; break; }
            engine.ZeroPromptGradient();
            engine.Head?.ZeroGradient();
            float loss = 0;
            long stepTokens = 0;
            for (var micro = 0; micro < options.GradientAccumulation; micro++)
            {
                var batch = batches.Next();
                var batchLoss = engine.LossAndPromptGradient(batch);
                if (!float.IsFinite(batchLoss))
                    throw new NonFiniteLossException($"the loss is {batchLoss} at step {step + 1}; the prompt was not updated; last good checkpoint: {(File.Exists(CheckpointPath) ? CheckpointPath : "none yet")}");
                loss += batchLoss / options.GradientAccumulation;
                stepTokens += batch.KeyMask.Sum();
            }
            var lr = options.LearningRate(step + 1);
            float norm;
            try
            {
                prompt.GradientToParameters();
                var groupLr = options.HeadLearningRate?.Invoke(step + 1) ?? lr;
                var norms = optimizer.Step(Trainables, group => new AdamWSettings(group == ParameterGroup.Head ? groupLr : lr,
                    options.Beta1, options.Beta2, options.Epsilon, options.WeightDecay, options.MaxGradNorm), options.GradientAccumulation);
                norm = norms[ParameterGroup.Prompt];
                prompt.ParametersToEngine();
            }
            catch (NonFiniteGradientException e)
            {
                throw new NonFiniteGradientException($"{e.Message}; last good checkpoint: {(File.Exists(CheckpointPath) ? CheckpointPath : "none yet")}");
            }
            catch (NonFinitePromptException e)
            {
                // Nothing of this step is saved: the checkpoint on disk is the last finite one.
                throw new NonFinitePromptException($"{e.Message} at step {step + 1}; it was not saved; last good checkpoint: {(File.Exists(CheckpointPath) ? CheckpointPath : "none yet")}");
            }
            step++;
            tokens += stepTokens;
            StepCompleted?.Invoke(new StepReport(step, options.Steps, loss, norm, lr, tokens, tokens / Math.Max(1e-9, clock.Elapsed.TotalSeconds), clock.Elapsed));

            var evalNow = evaluator is not null && ((options.EvalEvery > 0 && step % options.EvalEvery == 0) || step == options.Steps);
            if (evalNow)
            {
                var report = evaluator!.Evaluate(engine);
                Evaluated?.Invoke(step, report);
                if (best is null || report.Metric > best.Value)
                {
                    (best, bestStep, stale) = (report.Metric, step, 0);
                    SavePrompt(BestPromptPath, step, report);
                }
                else stale++;
            }
            var stop = options.EarlyStoppingPatience > 0 && stale >= options.EarlyStoppingPatience;
            if (stop || step == options.Steps || (options.CheckpointEvery > 0 && step % options.CheckpointEvery == 0))
                SaveCheckpoint(step, best, bestStep, stale);
            if (stop) { outcome = RunOutcome.EarlyStopped; break; }
        }
        if (outcome == RunOutcome.Interrupted) SaveCheckpoint(step, best, bestStep, stale);
        return new RunSummary(outcome, step, best, bestStep, CheckpointPath, File.Exists(BestPromptPath) ? BestPromptPath : null, clock.Elapsed);
    }

    /// <summary>Every group's values and optimizer state from <paramref name="state"/>, each checked against what this run trains.</summary>
    void Restore(CheckpointState state)
    {
        foreach (var group in Trainables.GroupBy(p => p.Group))
        {
            IReadOnlyList<TrainableParameter> parameters = [.. group];
            var saved = state.Find(group.Key.Name);
            long length = parameters.Length();
            if (saved is null || saved.Values.LongLength != length)
                throw new PromptEngineException($"{CheckpointPath}: the checkpoint holds {(saved is null ? $"no {group.Key.Description}" : $"a {group.Key.Description} of {saved.Values.Length} values")}, this run trains "
                    + (group.Key == ParameterGroup.Prompt ? prompt.Describe(length) : $"one of {length}"));
            parameters.SetValues(saved.Values);
            parameters.SetOptimizerState(saved.AdamM, saved.AdamV, saved.OptimizerStep);
        }
    }

    void SaveCheckpoint(int step, double? best, int bestStep, int stale)
    {
        var groups = Trainables.GroupBy(p => p.Group).Select(group =>
        {
            IReadOnlyList<TrainableParameter> parameters = [.. group];
            var (m, v, optimizerStep) = parameters.GetOptimizerState();
            return new CheckpointTrainables(group.Key.Name, ShapeOf(group.Key, parameters.Length()), parameters.GetValues(), m, v, optimizerStep);
        }).ToArray();
        Checkpoint.Save(CheckpointPath, new CheckpointState(step, groups, batches.SaveState(), best, bestStep, stale, options.RunFingerprint));
    }

    /// <summary>A group's tensor shape in the checkpoint: the prompt's as its method stores it, any other group's flat.</summary>
    long[] ShapeOf(ParameterGroup group, long length) => group == ParameterGroup.Prompt ? prompt.CheckpointShape : [length];

    void SavePrompt(string path, int step, EvalReport report)
    {
        var metadata = new Dictionary<string, string>(options.PromptMetadata ?? new Dictionary<string, string>())
        {
            ["step"] = step.ToString(System.Globalization.CultureInfo.InvariantCulture),
            [report.MetricName] = report.Metric.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        };
        prompt.Snapshot(metadata).Save(path);
    }
}
