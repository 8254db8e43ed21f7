using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using PromptEngine.Benchmarks.Reporting;
using PromptEngine.Benchmarks.Workloads;

namespace PromptEngine.Benchmarks.EndToEnd;

/// <summary>A train step (forward, loss, backward to the prompt, AdamW on the prompt) and an inference forward
/// with the loss, for one workload. Each implementation is built in its own targeted setup, so a case pays
/// only for its own model load and kernel compilation, outside the measurement.</summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory), CategoriesColumn, MemoryDiagnoser]
public abstract class EndToEndBenchmarks
{
    Workload workload = null!;
    EngineRunner? engine;

    /// <summary>The workload this class measures.</summary>
    protected abstract Workload CreateWorkload();

    [GlobalSetup(Target = nameof(EngineTrainStep))]
    public void SetupEngineTrain() => engine = Warm(new EngineRunner(workload = CreateWorkload(), training: true), training: true);

    [GlobalSetup(Target = nameof(EngineForward))]
    public void SetupEngineForward() => engine = Warm(new EngineRunner(workload = CreateWorkload(), training: false), training: false);

    static EngineRunner Warm(EngineRunner runner, bool training)
    {
        // The first launch of each kernel compiles it; keep that out of every iteration, Dry jobs included.
        if (training) runner.TrainStep(); else runner.Forward();
        return runner;
    }

    [Benchmark, BenchmarkCategory("TrainStep")]
    public float EngineTrainStep() => engine!.TrainStep();

    [Benchmark, BenchmarkCategory("Forward")]
    public float EngineForward() => engine!.Forward();

    [GlobalCleanup]
    public void Cleanup()
    {
        engine?.Dispose();
        engine = null;
        workload?.Dispose();
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
