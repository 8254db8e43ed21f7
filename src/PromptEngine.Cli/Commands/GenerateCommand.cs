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
        var prompt = new Option<string?>("--prompt") { Description = "Prompt file, bank#name or PEFT adapter folder, placed before the text (prefix)." };
        var input = new Option<string?>("--input") { Description = "Text to continue; without it generation starts from BOS." };
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Tokens to generate at most; prompt, input and new tokens must fit the model's context.", Required = true };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Use a prompt whose fingerprint names another model of the same width." };
        var temperature = new Option<float>("--temperature") { Description = "0 (default) is greedy decoding.", DefaultValueFactory = _ => 0f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed.", DefaultValueFactory = _ => 0 };
        var topK = new Option<int?>("--top-k") { Description = "Sample only from the k most likely tokens (k ≥ 1; default: all)." };
        var methodOption = MethodOption.Create();
        var topP = new Option<float?>("--top-p") { Description = "Sample only from the smallest set of most likely tokens holding probability p, 0 < p ≤ 1 (default 1: all)." };
        var command = new Command("generate", """
            Generate text with the model (KV cache), optionally under a soft prompt.
            Example: promptengine generate --model stories15M --input "Once upon a time" --max-new-tokens 40 --temperature 0.8 --top-p 0.9 --seed 1
            """);
        foreach (var option in new Option[] { model, prompt, input, maxNew, temperature, seed, topK, topP, methodOption, allow }) command.Options.Add(option);
        command.Validators.Add(result =>
        {
            if (OptionChecks.TryGetValue(result, maxNew, out var n) && n <= 0) result.AddError("--max-new-tokens must be positive");
            if (OptionChecks.TryGetValue(result, temperature, out var t) && (t < 0 || !float.IsFinite(t))) result.AddError("--temperature must be a finite number ≥ 0");
            if (OptionChecks.TryGetValue(result, topK, out var k) && k is < 1) result.AddError("--top-k must be ≥ 1");
            if (OptionChecks.TryGetValue(result, topP, out var p) && p is { } q && !(q > 0 && q <= 1)) result.AddError("--top-p must be in (0, 1]");
        });
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            var tuned = MethodOption.Load(parse, prompt, methodOption, folder, parse.GetValue(allow));
            var tokenizer = folder.Tokenizer;
            var text = parse.GetValue(input) ?? "";
            var tokens = tokenizer.Encode(text, addBos: tokenizer.BosId >= 0).ToList();
            if (tokens.Count == 0) throw new PromptEngineException("nothing to start from: the tokenizer has no BOS and --input is empty");
            // Prompt rows sit in the row; a deep prompt's virtual tokens take cache slots and positions the same way.
            var n = tuned?.VirtualTokens ?? 0;
            var context = folder.Config.ContextLength;
            if (n + tokens.Count >= context)
                throw new PromptEngineException($"prompt {n} + input {tokens.Count} tokens leave no room in the model's {context} positions");
            // The last new token is sampled from the logits of the position before it, so it needs no position of its own.
            var room = context - n - tokens.Count + 1;
            if (parse.GetValue(maxNew) > room)
                throw new UsageException($"--max-new-tokens {parse.GetValue(maxNew)} does not fit: prompt {n} + input {tokens.Count} tokens leave room for {room} new tokens in the model's {context} positions");
            var maxLength = Math.Min(context, n + tokens.Count + parse.GetValue(maxNew));
            using var kernels = KernelContext.Create(KernelBackend.Auto);
            using var engine = EngineFactory.ForInference(kernels, folder, tuned, 1, maxLength, sizingFlags: "--max-new-tokens");
            // Generation reads the LM head: a classifier head the prompt carries has no say here.
            tuned?.SetValuesIn(engine);
            var promptTableRows = Enumerable.Range(0, tuned?.PromptTableRows ?? 0).ToArray();
            // Weights (or a prompt) holding NaN or infinities would decode to arbitrary tokens: say so instead.
            var probeRow = promptTableRows.Select(Slot.Prompt).Concat(tokens.Select((t, i) => Slot.Token(t, i == tokens.Count - 1 ? 0 : -1))).ToList();
            if (!engine.Logits(BatchBuilder.Build([probeRow])).All(float.IsFinite))
                throw new PromptEngineException($"{folder.Path}: the model{(tuned is null ? "" : " with this prompt")} gives non-finite logits (NaN or infinity); its weights or the prompt's values are not finite");
            var generated = Generator.Generate(engine, tokens, promptTableRows,
                new SamplingOptions(parse.GetValue(maxNew), parse.GetValue(temperature), parse.GetValue(seed), tokenizer.EosId >= 0 ? tokenizer.EosId : null,
                    parse.GetValue(topK), parse.GetValue(topP) ?? 1f));
            // The text is the result, not a layout: no wrapping at the console's width, whether stdout is a terminal or a pipe.
            CliRunner.Out.Profile.Width = int.MaxValue;
            CliRunner.Out.Write(new Spectre.Console.Text(tokenizer.Decode(tokens.Concat(generated)) + Environment.NewLine));
            return 0;
        }));
        return command;
    }
}
