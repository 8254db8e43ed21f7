using System.CommandLine;
using System.CommandLine.Parsing;

namespace PromptEngine.Cli.Commands;

/// <summary>Value checks attached to options: they run on values the user typed and report one line
/// naming the flag (System.CommandLine then exits with code 1).</summary>
internal static class OptionChecks
{
    /// <summary>Adds a check of the typed value. A value that does not even convert to <typeparamref name="T"/> is
    /// left to the parser, which reports it naming the flag; reading it here would throw instead.</summary>
    public static void Require<T>(Option<T> option, Func<T, bool> valid, string rule) =>
        option.Validators.Add(result =>
        {
            if (TryGetValue(result, out T value) && !valid(value)) result.AddError($"{option.Name} {rule} (got '{Show(value)}')");
        });

    public static void Positive(Option<int> option) => Require(option, v => v > 0, "must be positive");

    public static void NonNegative(Option<int> option) => Require(option, v => v >= 0, "must not be negative");

    /// <summary>A number in [<paramref name="min"/>, <paramref name="max"/>] (or (min, max] when <paramref name="minExclusive"/>).</summary>
    public static void InRange(Option<float> option, float min, float max, bool minExclusive = false) =>
        // A non-finite value is left to the rule every float option has, so that it is reported once.
        Require(option, v => !float.IsFinite(v) || (minExclusive ? v > min : v >= min) && v <= max,
            string.Create(System.Globalization.CultureInfo.InvariantCulture, $"must be in {(minExclusive ? "(" : "[")}{min:R}, {max:R}]"));

    /// <summary>The value of <paramref name="option"/> under <paramref name="result"/> (its default when not given);
    /// false when the typed text does not convert, which the parser reports by itself.</summary>
    public static bool TryGetValue<T>(SymbolResult result, Option<T> option, out T value)
    {
        var optionResult = result.GetResult(option);
        if (optionResult is null)
        {
            value = option.HasDefaultValue ? (T)option.GetDefaultValue()! : default!;
            return true;
        }
        return TryGetValue(optionResult, out value);
    }

    static bool TryGetValue<T>(OptionResult result, out T value)
    {
        try
        {
            value = result.GetValueOrDefault<T>();
            return true;
        }
        catch (InvalidOperationException)
        {
            value = default!;
            return false;
        }
    }

    /// <summary>Rules every command shares, added once over the whole tree so that no option can miss them:
    /// a floating-point value must be finite (NaN and infinities are refused before they reach a schedule or a
    /// fingerprint), and a path must not be empty.</summary>
    public static void AddCommonRules(Command command)
    {
        foreach (var option in command.Options)
        {
            switch (option)
            {
                case Option<float> f: Require(f, float.IsFinite, "must be a finite number"); break;
                case Option<float?> f: Require(f, v => v is not { } x || float.IsFinite(x), "must be a finite number"); break;
                case Option<double> d: Require(d, double.IsFinite, "must be a finite number"); break;
                case Option<string> s when PathOptions.Contains(s.Name): Require(s, v => v is null || v.Trim().Length > 0, "must not be empty"); break;
                case Option<string?> s when PathOptions.Contains(s.Name): Require(s, v => v is null || v.Trim().Length > 0, "must not be empty"); break;
            }
        }
        foreach (var argument in command.Arguments)
            if (argument is Argument<string> a)
                a.Validators.Add(r =>
                {
                    if (r.Tokens.Count > 0 && r.Tokens[0].Value.Trim().Length == 0) r.AddError($"<{a.Name}> must not be empty");
                });
        foreach (var sub in command.Subcommands) AddCommonRules(sub);
    }

    /// <summary>Options that name a file or folder.</summary>
    static readonly HashSet<string> PathOptions =
        ["--model", "--out", "--train", "--validation", "--data", "--prompt", "--init-file", "--grad-out", "--peft", "--cache"];

    /// <summary>A value as the message shows it: long values are cut, so that a typed 100 KB value is not echoed back.</summary>
    public static string Show<T>(T value) => Cut(Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture) ?? "");

    /// <summary><paramref name="text"/> cut to <paramref name="max"/> characters with a count of what was left out.</summary>
    public static string Cut(string text, int max = 80) =>
        text.Length <= max ? text : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{text[..max]}… ({text.Length} characters)");
}
