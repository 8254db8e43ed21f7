namespace PromptEngine.Safetensors;

/// <summary>A safetensors file (or shard index) is missing, broken or hostile, or a tensor asked of it
/// is absent or of the wrong type. The message always names the file, and the tensor where one is
/// involved, so that a user can find the culprit without a debugger.</summary>
public class SafetensorsException : PromptEngineException
{
    /// <summary>Creates the exception; the message is composed from the file, tensor and detail.</summary>
    /// <param name="filePath">The file at fault (a .safetensors file or a shard index).</param>
    /// <param name="tensorName">The tensor involved, or null when the fault is not about one tensor.</param>
    /// <param name="detail">What is wrong, in words.</param>
    /// <param name="inner">The underlying exception, if any.</param>
    public SafetensorsException(string filePath, string? tensorName, string detail, Exception? inner = null)
        : base(Compose(filePath, tensorName, detail), inner)
    {
        FilePath = filePath;
        TensorName = tensorName;
        Detail = detail;
    }

    /// <summary>The file at fault.</summary>
    public string FilePath { get; }

    /// <summary>The tensor involved, or null when the fault is about the file as a whole.</summary>
    public string? TensorName { get; }

    /// <summary>What is wrong, without the file and tensor prefix.</summary>
    public string Detail { get; }

    private static string Compose(string filePath, string? tensorName, string detail) =>
        tensorName is null
            ? $"safetensors file '{filePath}': {detail}"
            : $"safetensors file '{filePath}', tensor '{tensorName}': {detail}";
}
