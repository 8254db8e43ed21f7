using System.CommandLine;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine version</c>: prints the host's version.</summary>
internal static class VersionCommand
{
    public static Command Create()
    {
        var command = new Command("version", "Print the version of PromptEngine.");
        command.SetAction(_ =>
        {
            CliRunner.Out.WriteLine(typeof(VersionCommand).Assembly.GetName().Version?.ToString() ?? "unknown");
            return 0;
        });
        return command;
    }
}
