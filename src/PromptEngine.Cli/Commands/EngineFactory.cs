using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Cli.Commands;

/// <summary>Builds the engine for a command; memory it cannot get is reported with the bytes asked for and the
/// flags that size them.</summary>
internal static class EngineFactory
{
    /// <summary>An inference engine sized for <paramref name="prompt"/> (its prompt rows or deep-prompt tokens), or for no
    /// prompt at all.</summary>
    public static TransformerEngine ForInference(KernelContext kernels, ModelFolder model, TunedPrompt? prompt, int maxRows, int maxLength, int maxVerbalizer = 16,
        string sizingFlags = "--batch-size or --max-length") =>
        Create(kernels, model, prompt?.EngineOptions(maxRows, maxLength, maxVerbalizer: maxVerbalizer)
            ?? new EngineOptions(maxRows, maxLength, 0, Training: false, MaxVerbalizer: maxVerbalizer), sizingFlags);

    public static TransformerEngine Create(KernelContext kernels, ModelFolder model, EngineOptions options, string sizingFlags = "--batch-size or --max-length")
    {
        try
        {
            return new TransformerEngine(kernels, model, options);
        }
        catch (DeviceMemoryException e)
        {
            throw new PromptEngineException($"{e.Message}; a smaller {sizingFlags} needs less", e);
        }
    }
}
