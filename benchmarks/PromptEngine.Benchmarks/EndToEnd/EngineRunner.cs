using PromptEngine.Benchmarks.Workloads;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Benchmarks.EndToEnd;

/// <summary>The engine on ILGPU's CPU accelerator, built for one workload: a train step (forward, loss, backward to
/// the prompt, AdamW on the prompt) or an inference forward with the loss.</summary>
public sealed class EngineRunner : IDisposable
{
    /// <summary>AdamW learning rate of every implementation's step.</summary>
    public const float LearningRate = 1e-3f;

    readonly KernelContext kernels;
    readonly ModelFolder model;
    readonly TransformerEngine engine;
    readonly Batch batch;

    /// <summary>Uploads the weights and plans the arenas: saving every layer for a train step, or one layer's worth
    /// when <paramref name="training"/> is false. <paramref name="cpuThreadsPerMultiprocessor"/> overrides the CPU
    /// device's layout (see <see cref="KernelContext.Create"/>), for the report's before/after of the launch cost.</summary>
    public EngineRunner(Workload workload, bool training, int? cpuThreadsPerMultiprocessor = null)
    {
        kernels = KernelContext.Create(KernelBackend.Cpu, cpuThreadsPerMultiprocessor: cpuThreadsPerMultiprocessor);
        model = ModelFolder.Open(workload.ModelFolder);
        batch = workload.Batch;
        engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, workload.PromptTableRows, training,
            MaxLossPositions: batch.LossPositions.Length));
        engine.SetPrompt(workload.InitialPrompt(model.Config.HiddenSize));
    }

    /// <summary>The kernel context the engine launches on (to attach a <see cref="KernelProfiler"/>, to count launches).</summary>
    public KernelContext Kernels => kernels;

    /// <summary>The model's dimensions.</summary>
    public TransformerConfig Config => model.Config;

    /// <summary>The batch every step runs.</summary>
    public Batch Batch => batch;

    /// <summary>Device memory by arena (host memory on the CPU accelerator).</summary>
    public MemoryReport Memory => engine.Memory;

    /// <summary>One train step; returns the loss (the engine's one host read synchronises the step).</summary>
    public float TrainStep()
    {
        engine.ZeroPromptGradient();
        var loss = engine.LossAndPromptGradient(batch);
        engine.OptimizerStep(LearningRate);
        kernels.Synchronize();
        return loss;
    }

    /// <summary>Forward and loss at the scored positions, saving nothing for a backward.</summary>
    public float Forward()
    {
        var loss = engine.Loss(batch);
        kernels.Synchronize();
        return loss;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        engine.Dispose();
        model.Dispose();
        kernels.Dispose();
    }
}
