using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using PromptEngine.Benchmarks.Reporting;
using PromptEngine.Benchmarks.Workloads;

namespace PromptEngine.Benchmarks.EndToEnd;

/// <summary>A train step (forward, loss, backward to the prompt, AdamW on the prompt) and an inference forward
/// with the loss, for one workload: the engine, TorchSharp with the same math (the baseline) and TorchSharp in the
/// idiomatic Hugging Face / PEFT form. Each case is built in its own targeted setup, so it pays only for its own
/// model load and kernel compilation, outside the measurement, and is warmed by one step there.</summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory), CategoriesColumn, MemoryDiagnoser]
public abstract class EndToEndBenchmarks
{
    Workload? workload;
    IStepRunner? runner;

    /// <summary>The workload this class measures.</summary>
    protected abstract Workload CreateWorkload();

    void Setup(string implementation, bool training)
    {
        workload = CreateWorkload();
        runner = StepRunners.Create(implementation, workload, training);
        runner.Step(); // the engine compiles each kernel at its first launch; keep that out of every iteration
    }

    [GlobalSetup(Target = nameof(EngineTrainStep))]
    public void SetupEngineTrain() => Setup(StepRunners.Engine, training: true);

    [GlobalSetup(Target = nameof(TorchSameMathTrainStep))]
    public void SetupTorchSameMathTrain() => Setup(StepRunners.TorchSameMath, training: true);

    [GlobalSetup(Target = nameof(TorchIdiomaticTrainStep))]
    public void SetupTorchIdiomaticTrain() => Setup(StepRunners.TorchIdiomatic, training: true);

    [GlobalSetup(Target = nameof(EngineForward))]
    public void SetupEngineForward() => Setup(StepRunners.Engine, training: false);

    [GlobalSetup(Target = nameof(TorchSameMathForward))]
    public void SetupTorchSameMathForward() => Setup(StepRunners.TorchSameMath, training: false);

    [GlobalSetup(Target = nameof(TorchIdiomaticForward))]
    public void SetupTorchIdiomaticForward() => Setup(StepRunners.TorchIdiomatic, training: false);

    [Benchmark, BenchmarkCategory("TrainStep")]
    public float EngineTrainStep() => runner!.Step();

    [Benchmark(Baseline = true), BenchmarkCategory("TrainStep")]
    public float TorchSameMathTrainStep() => runner!.Step();

    [Benchmark, BenchmarkCategory("TrainStep")]
    public float TorchIdiomaticTrainStep() => runner!.Step();

    [Benchmark, BenchmarkCategory("Forward")]
    public float EngineForward() => runner!.Step();

    [Benchmark(Baseline = true), BenchmarkCategory("Forward")]
    public float TorchSameMathForward() => runner!.Step();

    [Benchmark, BenchmarkCategory("Forward")]
    public float TorchIdiomaticForward() => runner!.Step();

    [GlobalCleanup]
    public void Cleanup()
    {
        runner?.Dispose();
        runner = null;
        workload?.Dispose();
        workload = null;
    }
}

/// <summary>Tiny Llama (2 layers, d128, 4 heads, vocabulary 1000), B4, T64 + 20 prompt rows, LM loss.</summary>
[TokensPerStep(4 * (64 + 20))]
public class TinyEndToEnd : EndToEndBenchmarks
{
    protected override Workload CreateWorkload() => Workload.Tiny();
}

/// <summary>stories15M, B8, T96 + 20 prompt rows, two-word verbalizer at the last position.</summary>
[TokensPerStep(8 * (96 + 20))]
public class Stories15MEndToEnd : EndToEndBenchmarks
{
    protected override Workload CreateWorkload() => Workload.Stories15M();
}
