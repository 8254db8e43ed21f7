namespace PromptEngine.Assets;

/// <summary>An asset could not be installed: npm is missing or failed, a download does not match its
/// pinned hash, or a package is malformed (an unsafe tar entry, a file missing from it).</summary>
public sealed class AssetException : PromptEngineException
{
    /// <summary>Creates the exception for <paramref name="package"/> ("name@version", or null when no
    /// single package is concerned).</summary>
    public AssetException(string? package, string message, Exception? inner = null)
        : base(package is null ? message : $"{package}: {message}", inner)
    {
        Package = package;
    }

    /// <summary>The npm package concerned, as "name@version"; null when none is.</summary>
    public string? Package { get; }
}
