namespace PromptEngine.Data;

/// <summary>A data file does not have the expected shape: invalid JSON, or a row with a missing or
/// mistyped field. Names the file and, when one is to blame, the row (0-based).</summary>
public sealed class DataFormatException : PromptEngineException
{
    /// <summary>Creates the exception for <paramref name="file"/>, row <paramref name="row"/> (null when
    /// the problem is not in one row).</summary>
    public DataFormatException(string file, long? row, string message, Exception? inner = null)
        : base(row is null ? $"{file}: {message}" : $"{file}, row {row}: {message}", inner)
    {
        File = file;
        Row = row;
    }

    /// <summary>The offending file.</summary>
    public string File { get; }

    /// <summary>The 0-based row (array element or line) at fault; null when the problem is the file as a whole.</summary>
    public long? Row { get; }
}
