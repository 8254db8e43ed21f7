using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>Work one call of a benchmark method does, so a column can turn its mean time into a rate.
/// Implemented by the shape objects the op benchmarks take as parameters.</summary>
public interface IWorkCount
{
    /// <summary>Floating-point operations of one call of <paramref name="method"/> (a multiply-add counts 2).</summary>
    double Flops(string method);

    /// <summary>Bytes one call of <paramref name="method"/> must read and write at least (each tensor once).</summary>
    double Bytes(string method);
}

/// <summary>GFLOP/s or GB/s beside the time: the case's <see cref="IWorkCount"/> parameter divided by its mean.</summary>
public sealed class ThroughputColumn(bool flops) : IColumn
{
    /// <summary>GFLOP/s.</summary>
    public static readonly IColumn GigaFlops = new ThroughputColumn(true);

    /// <summary>GB/s.</summary>
    public static readonly IColumn GigaBytes = new ThroughputColumn(false);

    public string Id => flops ? "GFLOP/s" : "GB/s";
    public string ColumnName => Id;
    public bool AlwaysShow => true;
    public ColumnCategory Category => ColumnCategory.Custom;
    public int PriorityInCategory => flops ? 0 : 1;
    public bool IsNumeric => true;
    public UnitType UnitType => UnitType.Dimensionless;
    public string Legend => flops
        ? "Floating-point operations per second of one call (multiply-add = 2; causal attention counts the unmasked half), from the mean time"
        : "Minimum bytes moved per second of one call (every input read once, every output written once), from the mean time";

    public bool IsAvailable(Summary summary) => true;
    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var work = benchmarkCase.Parameters.Items.Select(p => p.Value).OfType<IWorkCount>().FirstOrDefault();
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean; // nanoseconds
        if (work is null || mean is not > 0) return "-";
        var amount = flops ? work.Flops(benchmarkCase.Descriptor.WorkloadMethod.Name) : work.Bytes(benchmarkCase.Descriptor.WorkloadMethod.Name);
        return amount > 0 ? (amount / mean.Value).ToString("F2", System.Globalization.CultureInfo.InvariantCulture) : "-";
    }

    public override string ToString() => ColumnName;
}
