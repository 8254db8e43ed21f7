using System.Globalization;
using System.Reflection;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>Tokens one call of the class's benchmarks processes: B·(T+P).</summary>
[AttributeUsage(AttributeTargets.Class)]
public sealed class TokensPerStepAttribute(int tokens) : Attribute
{
    /// <summary>B·(T+P).</summary>
    public int Tokens { get; } = tokens;
}

/// <summary>tokens/s = B·(T+P) / mean step time, for classes marked with <see cref="TokensPerStepAttribute"/>.</summary>
public sealed class TokensPerSecondColumn : IColumn
{
    /// <summary>The column.</summary>
    public static readonly IColumn Instance = new TokensPerSecondColumn();

    public string Id => "tokens/s";
    public string ColumnName => Id;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => 2;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => "Tokens B·(T+P) of one step divided by the mean step time";
    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var tokens = benchmarkCase.Descriptor.Type.GetCustomAttribute<TokensPerStepAttribute>()?.Tokens;
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean; // nanoseconds
        return tokens is null || mean is not > 0 ? "-" : (tokens.Value / (mean.Value * 1e-9)).ToString("F0", CultureInfo.InvariantCulture);
    }

    public override string ToString() => ColumnName;
}
