using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Engine;

/// <summary>The loss of one text under the model (with an optional soft prompt), and dLoss/dPrompt.</summary>
/// <param name="Loss">Mean cross-entropy over the scored tokens, in nats.</param>
/// <param name="ScoredTokens">How many tokens were scored.</param>
/// <param name="InputTokens">Tokens of the input (BOS included).</param>
/// <param name="VirtualTokens">Virtual tokens of the prompt (0 without one).</param>
/// <param name="PromptGradient">(n_virtual_tokens, hidden) dLoss/dPrompt, when asked for.</param>
/// <param name="Memory">Device memory the engine held, by arena.</param>
public sealed record TextLoss(float Loss, int ScoredTokens, int InputTokens, int VirtualTokens, float[]? PromptGradient, MemoryReport Memory);

/// <summary>Scores a text the way <c>promptengine loss</c> does: BOS + input (+ target), the prompt
/// placed before everything (prefix) or between input and target (suffix); the loss is the mean over
/// the target tokens, or over every input token after BOS when there is no target.</summary>
public static class TextScoring
{
    /// <summary>Computes the loss and, with <paramref name="withGradient"/>, dLoss/dPrompt.</summary>
    public static TextLoss Score(KernelContext kernels, ModelFolder model, SoftPrompt? prompt, string input, string? target,
        PromptPlacement placement, bool withGradient)
    {
        var tokenizer = model.Tokenizer;
        var inputIds = tokenizer.Encode(input, addBos: tokenizer.BosId >= 0);
        var targetIds = string.IsNullOrEmpty(target) ? [] : tokenizer.Encode(target, addBos: false);
        var n = prompt?.VirtualTokens ?? 0;
        if (targetIds.Count == 0 && inputIds.Count < 2)
            throw new PromptEngineException("the input has fewer than two tokens and there is no target: nothing to score");
        var row = BatchBuilder.LanguageModelRow(inputIds, targetIds, Enumerable.Range(0, n).ToArray(), placement);
        if (row.Count > model.Config.ContextLength)
            throw new PromptEngineException($"{row.Count} positions (prompt {n} + input {inputIds.Count} + target {targetIds.Count}) exceed the model's {model.Config.ContextLength}"
                + (model.Config.ContextLength < model.Config.MaxPositions ? $" (its sliding attention window, which this engine does not implement)" : ""));
        var batch = BatchBuilder.Build([row]);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(1, row.Count, n, Training: withGradient && n > 0));
        if (prompt is not null) engine.SetPrompt(prompt.Values);
        if (withGradient && n > 0)
        {
            var loss = engine.LossAndPromptGradient(batch);
            return new TextLoss(loss, batch.LossPositions.Length, inputIds.Count, n, engine.GetPromptGradient(), engine.Memory);
        }
        return new TextLoss(engine.Loss(batch), batch.LossPositions.Length, inputIds.Count, n, null, engine.Memory);
    }
}
