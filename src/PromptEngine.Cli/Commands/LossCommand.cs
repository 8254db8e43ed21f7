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
        var gradOut = new Option<string?>("--grad-out") { Description = "Write dLoss/dPrompt here (safetensors, same layout as the prompt). Needs --prompt; replaces only a gradient file written before." };
        var json = new Option<bool>("--json") { Description = "Print one JSON object instead of text." };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Use a prompt whose fingerprint names another model of the same width." };
        var command = new Command("loss", """
            Mean cross-entropy of a text (or of --target after --input), optionally with a soft prompt, and its gradient to the prompt.
            Example: promptengine loss --model stories15M --prompt prompt.safetensors --input "Lily went to the park." --target " She saw a dog." --grad-out grad.safetensors
            """);
        foreach (var option in new Option[] { model, prompt, input, target, placement, gradOut, json, allow }) command.Options.Add(option);
        command.Validators.Add(r =>
        {
            if (OptionChecks.TryGetValue(r, gradOut, out var g) && g is not null && OptionChecks.TryGetValue(r, prompt, out var p) && p is null)
                r.AddError("--grad-out needs --prompt: without a prompt there is no gradient to write");
        });
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var gradientPath = parse.GetValue(gradOut);
            var promptPath = parse.GetValue(prompt);
            if (gradientPath is not null)
            {
                PathChecks.OutputFile("--grad-out", gradientPath);
                PathChecks.NotOverInputs("--grad-out", [gradientPath], ("--prompt", promptPath), ("--model", parse.GetValue(model)));
                if (File.Exists(gradientPath) && !IsGradientFile(gradientPath))
                    throw new UsageException($"--grad-out {gradientPath} exists and is not a gradient file written by this command; choose another file");
            }
            if (promptPath is not null) PathChecks.InputFile("--prompt", promptPath);
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            var soft = promptPath is null ? null : PromptFile.Load(promptPath, folder.Config.HiddenSize);
            if (soft is not null && PromptCompatibility.Check(soft, folder, parse.GetValue(allow)).Warning is { } warning)
                CliRunner.Error.WriteLine($"warning: {warning}");
            using var kernels = KernelContext.Create(KernelBackend.Auto);
            var result = TextScoring.Score(kernels, folder, soft, parse.GetValue(input)!, parse.GetValue(target), parse.GetValue(placement), gradientPath is not null);
            if (!float.IsFinite(result.Loss))
                throw new PromptEngineException($"{folder.Path}: the loss is {result.Loss}: the model{(soft is null ? "" : " with this prompt")} gives non-finite logits; its weights or the prompt's values are not finite");
            if (gradientPath is not null)
                PromptFile.Save(gradientPath, result.PromptGradient!, result.VirtualTokens, folder.Config.HiddenSize,
                    new Dictionary<string, string> { ["loss"] = result.Loss.ToString("R", CultureInfo.InvariantCulture) }, isGradient: true);
            if (parse.GetValue(json))
            {
                CliRunner.Out.Profile.Width = int.MaxValue;
                var payload = JsonSerializer.Serialize(new { loss = result.Loss, perplexity = Math.Exp(result.Loss), scored_tokens = result.ScoredTokens, input_tokens = result.InputTokens, prompt_tokens = result.VirtualTokens, grad_out = gradientPath,
                    memory_bytes = new { frozen_weights = result.Memory.FrozenWeights, activations = result.Memory.Activations, gradients_and_scratch = result.Memory.GradientsAndScratch, indices = result.Memory.Indices, prompt_and_optimizer = result.Memory.PromptAndOptimizer, total = result.Memory.Total } });
                CliRunner.Out.Write(new Spectre.Console.Text(payload + Environment.NewLine));
            }
            else
            {
                CliRunner.Out.Write(new Spectre.Console.Text(string.Create(CultureInfo.InvariantCulture,
                    $"loss {result.Loss:F6} nats/token (perplexity {Math.Exp(result.Loss):F3}) over {result.ScoredTokens} tokens; input {result.InputTokens} tokens, prompt {result.VirtualTokens} virtual tokens{(gradientPath is null ? "" : $"; dLoss/dPrompt written to {gradientPath}")}") + Environment.NewLine));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>Whether <paramref name="path"/> is a gradient file (a safetensors file whose metadata says so), which a new
    /// gradient may replace; anything else at that path is not this command's to overwrite.</summary>
    static bool IsGradientFile(string path)
    {
        try
        {
            using var file = Safetensors.SafetensorsFile.Open(path);
            return file.Metadata.TryGetValue("content", out var content) && content == "gradient";
        }
        catch (Exception e) when (e is PromptEngineException or IOException or UnauthorizedAccessException)
        {
            return false;
        }
    }
}
