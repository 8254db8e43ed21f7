using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Cli.Commands;

/// <summary>Builds the engine for a command; memory it cannot get is reported with the bytes asked for and the
/// flags that size them.</summary>
internal static class EngineFactory
{
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
