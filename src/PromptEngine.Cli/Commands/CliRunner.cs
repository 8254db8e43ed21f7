using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary>A command line that parses but asks for something impossible (a flag's value that only the data or the
/// model can refute, two flags that contradict each other, an output over an input): exit code 1, like a parse error.
/// The message names the flag.</summary>
internal sealed class UsageException(string message) : Exception(message);

/// <summary>Runs a command's body and turns the library's input errors into one readable line on
/// stderr and exit code 2, and <see cref="UsageException"/> into exit code 1 (System.CommandLine's code for a bad command line).</summary>
internal static class CliRunner
{
    /// <summary>Where commands write; tests replace it to capture output.</summary>
    public static IAnsiConsole Out { get; set; } = AnsiConsole.Console;

    /// <summary>Where errors go.</summary>
    public static TextWriter Error { get; set; } = Console.Error;

    public static int Run(Func<int> body)
    {
        try
        {
            return body();
        }
        catch (UsageException e)
        {
            Error.WriteLine($"error: {e.Message}");
            return 1;
        }
        catch (PromptEngineException e)
        {
            Error.WriteLine($"error: {e.Message}{FlagHint(e)}");
            return 2;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    /// <summary>The flag that answers a library error, for errors the library describes in its own terms.</summary>
    static string FlagHint(PromptEngineException e) => e switch
    {
        Prompts.PromptKindException kind => $" (use --method {(kind.Found == Prompts.PromptMethod.Prefix ? "prefix" : "prompt")})",
        Prompts.PromptCompatibilityException { MismatchCanBeAllowed: true } => " (pass --allow-model-mismatch to use it anyway)",
        _ => "",
    };
}
