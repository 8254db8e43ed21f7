using System.CommandLine;
using PromptEngine.Data;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine prepare-spam MESSAGES.tar --out DIR</c>: the SpamAssassin corpus as a seeded,
/// stratified train/validation/test split of JSONL.</summary>
internal static class PrepareSpamCommand
{
    public static Command Create()
    {
        var messages = new Argument<string>("messages") { Description = "messages.tar as fetch-assets installs it: GROUP/NAME.txt entries holding raw e-mails (GROUP easy-ham-1, easy-ham-2, hard-ham-1, spam-1 or spam-2)." };
        var output = new Option<string>("--out") { Description = "Folder for train.jsonl, validation.jsonl, test.jsonl and split.json.", Required = true };
        var seed = new Option<int>("--seed") { Description = "Shuffle seed.", DefaultValueFactory = _ => 1234 };
        var validation = new Option<int>("--validation") { Description = "Rows in the validation split.", DefaultValueFactory = _ => 1000 };
        var test = new Option<int>("--test") { Description = "Rows in the test split.", DefaultValueFactory = _ => 1000 };
        var maxChars = new Option<int>("--max-chars") { Description = "Cap on each row's text (\"Subject: …\" and the body), in characters.", DefaultValueFactory = _ => SpamAssassinPreparer.DefaultMaxChars };
        var command = new Command("prepare-spam", "Convert SpamAssassin e-mails to text and split them into train/validation/test JSONL ({\"text\", \"label\": \"ham\"|\"spam\"}), seeded and stratified.");
        command.Arguments.Add(messages);
        foreach (var option in new Option[] { output, seed, validation, test, maxChars }) command.Options.Add(option);
        OptionChecks.NonNegative(validation);
        OptionChecks.NonNegative(test);
        OptionChecks.Positive(maxChars);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            SpamSplitSummary summary;
            try
            {
                summary = SpamAssassinPreparer.Prepare(parse.GetValue(messages)!, parse.GetValue(output)!, parse.GetValue(seed),
                    parse.GetValue(validation), parse.GetValue(test), parse.GetValue(maxChars));
            }
            catch (ArgumentOutOfRangeException e)
            {
                // The sizes asked for do not fit the corpus: a property of the data, reported like other bad input.
                CliRunner.Error.WriteLine($"error: --validation/--test: {e.Message.Split(" (Parameter")[0]}");
                return 2;
            }
            var table = new Table().AddColumns("split", "rows", "ham", "spam");
            foreach (var (name, counts) in new[] { ("train", summary.Train), ("validation", summary.Validation), ("test", summary.Test) })
                table.AddRow(name, counts.Count.ToString(), counts.Ham.ToString(), counts.Spam.ToString());
            table.Caption(Markup.Escape($"{summary.OutDir} (seed {summary.Seed}; {summary.Messages} messages, {summary.DuplicatesDropped} duplicates dropped)"));
            CliRunner.Out.Write(table);
            return 0;
        }));
        return command;
    }
}
