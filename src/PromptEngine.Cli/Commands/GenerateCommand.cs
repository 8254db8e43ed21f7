using System.CommandLine;
using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine generate</c>: continue a text (or start from BOS), optionally under a soft prompt.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var model = new Option<string>("--model") { Description = "Hugging Face model folder.", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt file placed before the text (prefix)." };
        var input = new Option<string?>("--input") { Description = "Text to continue; without it generation starts from BOS." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate at most.", Required = true };
        var temperature = new Option<float>("--temperature") { Description = "0 (default) is greedy decoding.", DefaultValueFactory = _ => 0f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 0 };
        var command = new Command("generate", "Generate text with the model, optionally under a soft prompt (no KV cache yet: each token re-runs the forward pass).");
        foreach (var option in new Option[] { model, prompt, input, maxNew, temperature, seed }) command.Options.Add(option);
        OptionChecks.Positive(maxNew);
        OptionChecks.Require(temperature, t => t >= 0 && float.IsFinite(t), "must be a finite number ≥ 0");
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            var soft = parse.GetValue(prompt) is { } path ? PromptFile.Load(path, folder.Config.HiddenSize) : null;
            var tokenizer = folder.Tokenizer;
            var text = parse.GetValue(input) ?? "";
            var tokens = tokenizer.Encode(text, addBos: tokenizer.BosId >= 0).ToList();
            if (tokens.Count == 0) throw new PromptEngineException("nothing to start from: the tokenizer has no BOS and --input is empty");
            var n = soft?.VirtualTokens ?? 0;
            var maxLength = Math.Min(folder.Config.MaxPositions, n + tokens.Count + parse.GetValue(maxNew));
            if (n + tokens.Count >= folder.Config.MaxPositions)
                throw new PromptEngineException($"prompt {n} + input {tokens.Count} tokens leave no room in the model's {folder.Config.MaxPositions} positions");
            using var kernels = KernelContext.Create(KernelBackend.Auto);
            using var engine = new TransformerEngine(kernels, folder, new EngineOptions(1, maxLength, n, Training: false));
            if (soft is not null) engine.SetPrompt(soft.Values);
            var generated = Generator.Generate(engine, tokens, Enumerable.Range(0, n).ToArray(),
                new SamplingOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(seed), tokenizer.EosId >= 0 ? tokenizer.EosId : null));
            CliRunner.Out.Write(new Spectre.Console.Text(tokenizer.Decode(tokens.Concat(generated)) + Environment.NewLine));
            return 0;
        }));
        return command;
    }
}
