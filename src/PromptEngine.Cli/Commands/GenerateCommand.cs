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
        var topK = new Option<int?>("--top-k") { Description = "Sample only from the k most likely tokens (k ≥ 1; default: all)." };
        var methodOption = MethodOption.Create();
        var topP = new Option<float?>("--top-p") { Description = "Sample only from the smallest set of most likely tokens holding probability p, 0 < p ≤ 1 (default 1: all)." };
        var command = new Command("generate", """
            Generate text with the model (KV cache), optionally under a soft prompt.
            Example: promptengine generate --model stories15M --input "Once upon a time" --max-new-tokens 40 --temperature 0.8 --top-p 0.9 --seed 1
            """);
        foreach (var option in new Option[] { model, prompt, input, maxNew, temperature, seed, topK, topP, methodOption }) command.Options.Add(option);
        command.Validators.Add(result =>
        {
            if (result.GetValue(maxNew) <= 0) result.AddError("--max-new-tokens must be positive");
            var t = result.GetValue(temperature);
            if (t < 0 || !float.IsFinite(t)) result.AddError("--temperature must be a finite number ≥ 0");
            if (result.GetValue(topK) is < 1) result.AddError("--top-k must be ≥ 1");
            if (result.GetValue(topP) is { } p && !(p > 0 && p <= 1)) result.AddError("--top-p must be in (0, 1]");
        });
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            var deep = MethodOption.Parse(parse.GetValue(methodOption)) == PromptMethod.Prefix;
            if (deep && parse.GetValue(prompt) is null) throw new PromptEngineException("--method prefix needs --prompt (a deep-prompt file or a PEFT PREFIX_TUNING adapter folder)");
            var deepPrompt = deep ? MethodOption.LoadDeep(parse.GetValue(prompt)!, folder.Config) : null;
            var soft = !deep && parse.GetValue(prompt) is { } path ? PromptFile.Load(path, folder.Config.HiddenSize) : null;
            var tokenizer = folder.Tokenizer;
            var text = parse.GetValue(input) ?? "";
            var tokens = tokenizer.Encode(text, addBos: tokenizer.BosId >= 0).ToList();
            if (tokens.Count == 0) throw new PromptEngineException("nothing to start from: the tokenizer has no BOS and --input is empty");
            // Prompt rows sit in the row; a deep prompt's virtual tokens take cache slots and positions the same way.
            var n = soft?.VirtualTokens ?? deepPrompt?.VirtualTokens ?? 0;
            var maxLength = Math.Min(folder.Config.ContextLength, n + tokens.Count + parse.GetValue(maxNew));
            if (n + tokens.Count >= folder.Config.ContextLength)
                throw new PromptEngineException($"prompt {n} + input {tokens.Count} tokens leave no room in the model's {folder.Config.ContextLength} positions");
            using var kernels = KernelContext.Create(KernelBackend.Auto);
            using var engine = new TransformerEngine(kernels, folder, new EngineOptions(1, maxLength, deep ? 0 : n, Training: false, PrefixTokens: deep ? n : 0));
            if (soft is not null) engine.SetPrompt(soft.Values);
            if (deepPrompt is not null) engine.SetPrefix(deepPrompt.ToEngineLayout());
            var generated = Generator.Generate(engine, tokens, Enumerable.Range(0, deep ? 0 : n).ToArray(),
                new SamplingOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(seed), tokenizer.EosId >= 0 ? tokenizer.EosId : null,
                    parse.GetValue(topK), parse.GetValue(topP) ?? 1f));
            CliRunner.Out.Write(new Spectre.Console.Text(tokenizer.Decode(tokens.Concat(generated)) + Environment.NewLine));
            return 0;
        }));
        return command;
    }
}
