using System.CommandLine;
using PromptEngine.Cli.Commands;

namespace PromptEngine.Cli;

/// <summary>Entry point of the <c>promptengine</c> command-line host.</summary>
public static class Program
{
    /// <summary>Builds the command tree; one file per command under Commands/.</summary>
    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("PromptEngine: train soft prompts on frozen transformers, in C#.");
        root.Subcommands.Add(DemoCommand.Create());
        root.Subcommands.Add(FetchAssetsCommand.Create());
        root.Subcommands.Add(ImportLlama2cCommand.Create());
        root.Subcommands.Add(PrepareImdbCommand.Create());
        root.Subcommands.Add(PrepareSpamCommand.Create());
        root.Subcommands.Add(InspectCommand.Create());
        root.Subcommands.Add(LossCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(PromptCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(EvalCommand.Create());
        root.Subcommands.Add(VersionCommand.Create());
        OptionChecks.AddCommonRules(root);
        return root;
    }

    /// <summary>Runs the host.</summary>
    public static int Main(string[] args)
    {
        try
        {
            var result = Parse(args);
            return ReportParseErrors(result, Console.Error) ?? result.Invoke();
        }
        catch (InvalidOperationException e) when (IsConversionError(e))
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 1;
        }
    }

    /// <summary>The parser's own report of a value that does not convert to its option's type (e.g. <c>--steps abc</c>):
    /// it names the flag and the value. It reaches here only if a check reads the value before the parser reports it.</summary>
    static bool IsConversionError(InvalidOperationException e) => e.Message.StartsWith("Cannot parse argument", StringComparison.Ordinal);

    /// <summary>Parses <paramref name="args"/>; a bad command line reports its errors, one line each, without
    /// the full help text after them (<c>--help</c> shows that).</summary>
    public static ParseResult Parse(string[] args)
    {
        var result = BuildRoot().Parse(args);
        if (result.Action is System.CommandLine.Invocation.ParseErrorAction errors) errors.ShowHelp = false;
        return result;
    }

    /// <summary>A bad command line is reported in one line, the first problem and how many more there are (fix one, see
    /// the next), with exit code 1; null when the command line parsed.</summary>
    static int? ReportParseErrors(ParseResult result, TextWriter error)
    {
        if (result.Errors.Count == 0 || result.Action is not System.CommandLine.Invocation.ParseErrorAction) return null;
        var first = result.Errors[0].Message.ReplaceLineEndings(" ").Trim();
        error.WriteLine(result.Errors.Count == 1 ? $"error: {first}" : $"error: {first} (and {result.Errors.Count - 1} more problem(s) with the command line)");
        return 1;
    }

    /// <summary>Runs the host with its output and errors sent to the given writers (for tests and embedding).</summary>
    public static int Run(string[] args, TextWriter output, TextWriter error)
    {
        var (previousOut, previousError) = (CliRunner.Out, CliRunner.Error);
        CliRunner.Out = Spectre.Console.AnsiConsole.Create(new Spectre.Console.AnsiConsoleSettings
        {
            Out = new Spectre.Console.AnsiConsoleOutput(output),
            Ansi = Spectre.Console.AnsiSupport.No,
            ColorSystem = Spectre.Console.ColorSystemSupport.NoColors,
        });
        CliRunner.Error = error;
        try
        {
            var result = Parse(args);
            return ReportParseErrors(result, error) ?? result.Invoke(new InvocationConfiguration { Output = output, Error = error });
        }
        catch (InvalidOperationException e) when (IsConversionError(e))
        {
            error.WriteLine($"error: {e.Message}");
            return 1;
        }
        finally
        {
            (CliRunner.Out, CliRunner.Error) = (previousOut, previousError);
        }
    }
}
