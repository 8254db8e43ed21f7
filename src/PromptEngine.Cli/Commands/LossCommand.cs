using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine loss</c>: the loss of a text (or of a target after an input) under a model
/// and optional soft prompt, and dLoss/dPrompt.</summary>
internal static class LossCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder.", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt file (safetensors, tensor prompt_embeddings (n, hidden)). Without it no prompt is used." };
        var input = new Option<string>("--input") { Description = "Input text (BOS is prepended).", Required = true };
        var target = new Option<string?>("--target") { Description = "Target text scored after the input; without it the whole input is scored." };
        var placement = new Option<PromptPlacement>("--placement") { Description = "Where the prompt goes: prefix (before everything) or suffix (after the input).", DefaultValueFactory = _ => PromptPlacement.Prefix };
        var gradOut = new Option<string?>("--grad-out") { Description = "Write dLoss/dPrompt here (safetensors, same layout as the prompt). Needs --prompt." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text." };
        var command = new Command("loss", """
            Mean cross-entropy of a text (or of --target after --input), optionally with a soft prompt, and its gradient to the prompt.
            Example: promptengine loss --model stories15M --prompt prompt.safetensors --input "Lily went to the park." --target " She saw a dog." --grad-out grad.safetensors
            """);
        foreach (var option in new Option[] { model, prompt, input, target, placement, gradOut, json }) command.Options.Add(option);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var gradientPath = parse.GetValue(gradOut);
            var promptPath = parse.GetValue(prompt);
            if (gradientPath is not null && promptPath is null)
                throw new PromptEngineException("--grad-out needs --prompt: without a prompt there is no gradient to write");
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            var soft = promptPath is null ? null : PromptFile.Load(promptPath, folder.Config.HiddenSize);
            using var kernels = KernelContext.Create(KernelBackend.Auto);
            var result = TextScoring.Score(kernels, folder, soft, parse.GetValue(input)!, parse.GetValue(target), parse.GetValue(placement), gradientPath is not null);
            if (gradientPath is not null)
                PromptFile.Save(gradientPath, result.PromptGradient!, result.PromptTokens, folder.Config.HiddenSize,
                    new Dictionary<string, string> { ["loss"] = result.Loss.ToString("R", CultureInfo.InvariantCulture) }, isGradient: true);
            if (parse.GetValue(json))
            {
                CliRunner.Out.Profile.Width = int.MaxValue;
                var payload = JsonSerializer.Serialize(new { loss = result.Loss, perplexity = Math.Exp(result.Loss), scored_tokens = result.ScoredTokens, input_tokens = result.InputTokens, prompt_tokens = result.PromptTokens, grad_out = gradientPath,
                    memory_bytes = new { frozen_weights = result.Memory.FrozenWeights, activations = result.Memory.Activations, gradients_and_scratch = result.Memory.GradientsAndScratch, indices = result.Memory.Indices, prompt_and_optimizer = result.Memory.PromptAndOptimizer, total = result.Memory.Total } });
                CliRunner.Out.Write(new Spectre.Console.Text(payload + Environment.NewLine));
            }
            else
            {
                CliRunner.Out.Write(new Spectre.Console.Text(string.Create(CultureInfo.InvariantCulture,
                    $"loss {result.Loss:F6} nats/token (perplexity {Math.Exp(result.Loss):F3}) over {result.ScoredTokens} tokens; input {result.InputTokens} tokens, prompt {result.PromptTokens} virtual tokens{(gradientPath is null ? "" : $"; dLoss/dPrompt written to {gradientPath}")}") + Environment.NewLine));
            }
            return 0;
        }));
        return command;
    }
}
