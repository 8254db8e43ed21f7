using System.CommandLine;

namespace PromptEngine.Cli.Commands;

/// <summary>Value checks attached to options: they run on values the user typed and report one line
/// naming the flag (System.CommandLine then exits with code 1).</summary>
internal static class OptionChecks
{
    public static void Require<T>(Option<T> option, Func<T, bool> valid, string rule) =>
        option.Validators.Add(result =>
        {
            var value = result.GetValueOrDefault<T>();
            if (!valid(value)) result.AddError($"{option.Name} {rule} (got '{value}')");
        });

    public static void Positive(Option<int> option) => Require(option, v => v > 0, "must be positive");

    public static void NonNegative(Option<int> option) => Require(option, v => v >= 0, "must not be negative");
}
