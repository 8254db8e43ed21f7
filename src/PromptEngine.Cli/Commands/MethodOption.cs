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

    /// <summary>A deep prompt from a PEFT PREFIX_TUNING adapter folder or a deep-prompt file, checked against the model.</summary>
    public static DeepPrompt LoadDeep(string path, TransformerConfig config) =>
        Directory.Exists(path) ? PeftAdapter.LoadPrefix(path, config) : DeepPromptFile.Load(path, config);
}
