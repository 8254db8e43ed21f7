namespace PromptEngine;

/// <summary>Base of every error PromptEngine reports about its inputs (files, configs, data rows,
/// assets). The message is written for the user: it names the file and the tensor, field or line
/// at fault. The CLI prints it without a stack trace.</summary>
public class PromptEngineException : Exception
{
    /// <summary>Creates the exception with a user-facing message.</summary>
    public PromptEngineException(string message, Exception? inner = null) : base(message, inner) { }
}
