using PromptEngine.Benchmarks.Ops;
using PromptEngine.Benchmarks.Workloads;
using PromptEngine.TorchReference;

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

    /// <summary>TorchSharp with the engine's math: LM head only at the scored positions, softmax over the verbalizer.</summary>
    public const string TorchSameMath = "torch-same-math";

    /// <summary>TorchSharp as a Hugging Face / PEFT user writes it: logits at every position over the whole vocabulary.</summary>
    public const string TorchIdiomatic = "torch-idiomatic";

    /// <summary>Every implementation name, in table order (the engine first: ratios are engine / other).</summary>
    public static IReadOnlyList<string> All { get; } = [Engine, TorchSameMath, TorchIdiomatic];

    /// <summary>Builds <paramref name="implementation"/> for <paramref name="workload"/>, a train step when
    /// <paramref name="training"/>, otherwise an inference forward.</summary>
    public static IStepRunner Create(string implementation, Workload workload, bool training) => implementation switch
    {
        Engine => new EngineStep(new EngineRunner(workload, training), training),
        TorchSameMath => new TorchStep(workload, training, TorchLossForm.SameMath),
        TorchIdiomatic => new TorchStep(workload, training, TorchLossForm.Idiomatic),
        _ => throw new ArgumentException($"unknown implementation '{implementation}' ({string.Join(", ", All)})"),
    };

    sealed class EngineStep(EngineRunner runner, bool training) : IStepRunner
    {
        public float Step() => training ? runner.TrainStep() : runner.Forward();
        public void Dispose() => runner.Dispose();
    }

    /// <summary>TorchSharp's step: the prompt is the only leaf that requires grad; a train step is zero_grad, forward,
    /// loss, backward and torch.optim.AdamW on the prompt; a forward runs under no_grad. The loss's one host read
    /// synchronises it.</summary>
    sealed class TorchStep : IStepRunner
    {
        readonly TorchCausalLm model;
        readonly TorchBatch batch;
        readonly TorchPromptTrainer trainer;
        readonly bool training;
        readonly TorchLossForm form;

        public TorchStep(Workload workload, bool training, TorchLossForm form)
        {
            TorchThreads.Ensure();
            model = TorchCausalLm.Load(workload.ModelFolder);
            batch = model.Prepare(workload.Batch);
            trainer = new TorchPromptTrainer(model, workload.InitialPrompt(model.Config.HiddenSize), EngineRunner.LearningRate);
            this.training = training;
            this.form = form;
        }

        public float Step() => training ? trainer.Step(batch, form) : trainer.Loss(batch, form);

        public void Dispose()
        {
            trainer.Dispose();
            batch.Dispose();
            model.Dispose();
        }
    }
}
