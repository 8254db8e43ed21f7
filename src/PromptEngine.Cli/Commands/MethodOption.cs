using System.CommandLine;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Cli.Commands;

/// <summary>The <c>--method prompt|prefix</c> option shared by train, eval and generate, and the loading of a deep prompt.</summary>
internal static class MethodOption
{
    /// <summary>A new <c>--method</c> option (default prompt); any other value is refused naming the flag.</summary>
    public static Option<string> Create()
    {
        var option = new Option<string>("--method")
        {
            Description = "prompt: plain prompt tuning (virtual tokens in the input embeddings); prefix: deep prompts (prefix tuning / P-tuning v2, "
                + "trainable keys and values at every layer, PEFT PREFIX_TUNING).",
            DefaultValueFactory = _ => "prompt",
        };
        OptionChecks.Require(option, v => v is "prompt" or "prefix", "must be prompt or prefix");
        return option;
    }

    /// <summary>The method a (validated) option value names.</summary>
    public static PromptMethod Parse(string? value) => value == "prefix" ? PromptMethod.Prefix : PromptMethod.Prompt;

    /// <summary>The option value that names <paramref name="method"/>: "prompt" or "prefix".</summary>
    public static string Name(PromptMethod method) => method == PromptMethod.Prefix ? "prefix" : "prompt";

    /// <summary>What a message calls a prompt of <paramref name="method"/>: "prompt" or "deep prompt".</summary>
    public static string Noun(PromptMethod method) => method == PromptMethod.Prefix ? "deep prompt" : "prompt";

    /// <summary>The tuned prompt <paramref name="prompt"/> names (a prompt file, a PEFT adapter folder or bank.safetensors#name),
    /// of the method <paramref name="method"/> says, with its head; checked against the model (a warning printed for a
    /// mismatch allowed). Null without <c>--prompt</c>.</summary>
    /// <exception cref="PromptEngineException">--method prefix without --prompt, no such file, a prompt of the other method,
    /// or one that does not fit the model.</exception>
    public static TunedPrompt? Load(ParseResult parse, Option<string?> prompt, Option<string> method, ModelFolder model, bool allowMismatch)
    {
        var expected = Parse(parse.GetValue(method));
        if (parse.GetValue(prompt) is not { } path)
            return expected == PromptMethod.Prefix
                ? throw new PromptEngineException("--method prefix needs --prompt (a deep-prompt file or a PEFT PREFIX_TUNING adapter folder)") : null;
        PathChecks.PromptInput("--prompt", path);
        var tuned = TunedPrompt.Load(path, model.Config, expected);
        if (tuned.CheckCompatibility(model, allowMismatch).Warning is { } warning) CliRunner.Error.WriteLine($"warning: {warning}");
        return tuned;
    }
}
