using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using PromptEngine.Benchmarks.Reporting;

namespace PromptEngine.Benchmarks;

/// <summary>Entry point. <c>dotnet run -c Release --project benchmarks/PromptEngine.Benchmarks -- ARGS</c> with:
/// <list type="bullet">
/// <item><c>--filter '*'</c> (any BenchmarkDotNet arguments): the full job, for BENCHMARKS.md;</item>
/// <item><c>--quick --filter '*Tiny*'</c>: one launch, one warm-up and three iterations (CI-sized);</item>
/// <item><c>report</c>: every end-to-end case side by side, a few rounds, one markdown table (see <see cref="ReportMode"/>);</item>
/// <item><c>deep</c>: prompt-KV reuse speedups, activation recomputation's memory and time, the cost of a deep prompt
/// (see <see cref="DeepReport"/>);</item>
/// <item><c>machine</c>: the scalar FMA peak, the SIMD width and the CPU accelerator's launch cost (the report's first
/// section, alone);</item>
/// <item><c>memory WORKLOAD IMPLEMENTATION MODE</c>: peak resident memory of one case (the report starts these).</item>
/// </list></summary>
public static class Program
{
    public static int Main(string[] args)
    {
        if (args is ["report", .. var reportArgs]) return ReportMode.Run(reportArgs);
        if (args is ["deep", .. var deepArgs]) return DeepReport.Run(deepArgs);
        if (args is ["machine"]) return ReportMode.RunMachine();
        if (args is ["memory", var workload, var implementation, var mode]) return MemoryProbe.Run(workload, implementation, mode);

        bool quick = args.Contains("--quick");
        var rest = args.Where(a => a != "--quick").ToArray();
        // In-process: no generated project to build per case (slow on 2 shared cores), and the benchmarks run inside
        // this process's TorchSharp native-library setup.
        var job = quick
            ? Job.Dry.WithWarmupCount(1).WithIterationCount(3).WithId("Quick")
            : Job.Default.WithMinIterationCount(5).WithMaxIterationCount(20).WithId("Full");
        var config = DefaultConfig.Instance
            .AddJob(job.WithToolchain(InProcessEmitToolchain.Instance))
            .AddColumn(ThroughputColumn.GigaFlops, ThroughputColumn.GigaBytes, TokensPerSecondColumn.Instance)
            .WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(40))
            .WithOptions(ConfigOptions.JoinSummary);
        var summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(rest, config);
        return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
    }
}
