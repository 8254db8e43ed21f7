using PromptEngine.Benchmarks.Workloads;

namespace PromptEngine.Benchmarks.EndToEnd;

/// <summary>One implementation of one end-to-end case, built and ready: each call is a whole train step or a whole
/// inference forward, synchronised, returning the loss.</summary>
public interface IStepRunner : IDisposable
{
    /// <summary>One step; returns its loss.</summary>
    float Step();
}

/// <summary>The implementations the report compares, and how to build each.</summary>
public static class StepRunners
{
    /// <summary>The engine on ILGPU's CPU accelerator.</summary>
    public const string Engine = "engine";

    /// <summary>Every implementation name, in table order.</summary>
    public static IReadOnlyList<string> All { get; } = [Engine];

    /// <summary>Builds <paramref name="implementation"/> for <paramref name="workload"/>, a train step when
    /// <paramref name="training"/>, otherwise an inference forward.</summary>
    public static IStepRunner Create(string implementation, Workload workload, bool training) => implementation switch
    {
        Engine => new EngineStep(new EngineRunner(workload, training), training),
        _ => throw new ArgumentException($"unknown implementation '{implementation}' ({string.Join(", ", All)})"),
    };

    sealed class EngineStep(EngineRunner runner, bool training) : IStepRunner
    {
        public float Step() => training ? runner.TrainStep() : runner.Forward();
        public void Dispose() => runner.Dispose();
    }
}
