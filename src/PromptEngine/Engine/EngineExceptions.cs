using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Engine;

/// <summary>The device (or, on the CPU accelerator, the process) could not give the engine the memory it plans for:
/// the message says how many bytes were asked for and for which batch shape, so that a smaller batch or length can be chosen.</summary>
public sealed class DeviceMemoryException(string message, long requestedBytes, Exception inner) : PromptEngineException(message, inner)
{
    /// <summary>Bytes the engine asked for at construction.</summary>
    public long RequestedBytes { get; } = requestedBytes;

    internal static DeviceMemoryException For(KernelContext kernels, long bytes, EngineOptions options, Exception inner) =>
        new(string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"not enough memory on {kernels.Accelerator.Name}: the engine needs {bytes:N0} bytes ({bytes / (1024.0 * 1024 * 1024):F2} GiB) for batches of {options.MaxRows} rows × {options.MaxLength} positions"),
            bytes, inner);
}

/// <summary>The prompt gradient became NaN or infinite; the step was not applied.</summary>
public sealed class NonFiniteGradientException(string message) : PromptEngineException(message);

/// <summary>An optimizer step made the trainable values NaN, infinite or too large for float; they must not be saved.</summary>
public sealed class NonFinitePromptException(string message) : PromptEngineException(message);

/// <summary>A sequence longer than the model's sliding attention window: the engine computes full causal attention, which
/// is the windowed model's function only up to the window's length, so longer sequences are refused, not computed wrongly.</summary>
public sealed class SlidingWindowException(TransformerConfig config, int length)
    : PromptEngineException($"{config.Architecture} attends within a sliding window of {config.SlidingWindow} positions, which this engine "
        + $"does not implement; sequences of up to {config.ContextLength} positions are computed exactly, {length} would not be")
{
    /// <summary>The longest sequence computed exactly.</summary>
    public int ContextLength { get; } = config.ContextLength;
}
