using System.CommandLine;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine version</c>: prints the host's version.</summary>
internal static class VersionCommand
{
    public static Command Create()
    {
        var command = new Command("version", "Print the version of PromptEngine.");
        command.SetAction(_ =>
        {
            Console.WriteLine(typeof(VersionCommand).Assembly.GetName().Version);
            return 0;
        });
        return command;
    }
}
