using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace PromptEngine.TorchReference;

/// <summary>
/// Prompt tuning in TorchSharp the way a user writes it: the prompt bank is the only parameter (a leaf that requires
/// grad), the model is frozen, and each step is <c>zero_grad → loss → backward → AdamW.step</c> with
/// <c>torch.optim.AdamW</c> on the prompt alone. The loss is either the engine's math or the idiomatic full-logits form
/// (<see cref="TorchLossForm"/>).
/// </summary>
public sealed class TorchPromptTrainer : IDisposable
{
    readonly TorchCausalLm model;
    readonly Parameter prompt;
    readonly AdamW optimizer;

    /// <summary>Starts from <paramref name="initialPrompt"/> (P, C) row-major with AdamW's hyper-parameters
    /// (PyTorch's defaults, except weight decay 0 as the engine's <c>OptimizerStep</c> defaults to).</summary>
    public TorchPromptTrainer(TorchCausalLm model, float[] initialPrompt, double learningRate,
        double beta1 = 0.9, double beta2 = 0.999, double eps = 1e-8, double weightDecay = 0)
    {
        this.model = model;
        int C = model.Config.HiddenSize;
        if (initialPrompt.Length == 0 || initialPrompt.Length % C != 0)
            throw new ArgumentException($"prompt: {initialPrompt.Length} values is not a positive whole number of rows of width {C}", nameof(initialPrompt));
        using var scope = NewDisposeScope();
        var values = tensor(initialPrompt, [initialPrompt.Length / C, C], float32).to_type(model.DType);
        prompt = new Parameter(values, requires_grad: true);
        prompt.MoveToOuterDisposeScope();
        optimizer = optim.AdamW([prompt], learningRate, beta1, beta2, eps, weightDecay);
    }

    /// <summary>The prompt bank (P, C): a leaf parameter that requires grad.</summary>
    public Parameter Prompt => prompt;

    /// <summary>One training step on <paramref name="batch"/>: zero the gradient, forward, loss in <paramref name="form"/>,
    /// backward, AdamW step. Returns the loss before the step (one host read).</summary>
    public float Step(TorchBatch batch, TorchLossForm form = TorchLossForm.SameMath)
    {
        using var scope = NewDisposeScope();
        optimizer.zero_grad();
        var loss = model.Loss(batch, prompt, form);
        loss.backward();
        optimizer.step();
        return loss.to_type(ScalarType.Float32).item<float>();
    }

    /// <summary>Forward and loss only, without a graph (evaluation, or the forward-only benchmark).</summary>
    public float Loss(TorchBatch batch, TorchLossForm form = TorchLossForm.SameMath)
    {
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        return model.Loss(batch, prompt, form).to_type(ScalarType.Float32).item<float>();
    }

    /// <summary>The prompt bank (P, C), row-major.</summary>
    public float[] GetPrompt() => TorchCausalLm.ToFloats(prompt);

    /// <summary>The gradient of the last step (P, C), row-major, or zeros before the first step.</summary>
    public float[] GetPromptGradient() => prompt.grad is { } g ? TorchCausalLm.ToFloats(g) : new float[prompt.numel()];

    /// <inheritdoc/>
    public void Dispose()
    {
        optimizer.Dispose();
        prompt.Dispose();
    }
}
