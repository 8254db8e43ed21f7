using System.Globalization;
using System.Text;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>One engine case of the efficiency table.</summary>
/// <param name="Workload">The workload's name.</param>
/// <param name="Step">"train" or "forward".</param>
/// <param name="Flops">The step's counted FLOPs (<see cref="StepFlops"/>).</param>
/// <param name="EngineMilliseconds">The engine's median step time from the end-to-end table.</param>
/// <param name="LinearSeconds">Seconds the profiled step spent in the Linear launchers (<c>Linear.*</c> in the
/// <see cref="PromptEngine.Kernels.KernelProfiler"/> breakdown), or null when not profiled.</param>
/// <param name="LaunchesPerStep">Launcher calls of one step (<see cref="PromptEngine.Kernels.KernelContext.Launches"/>).</param>
public sealed record EfficiencyRow(string Workload, string Step, StepFlops Flops, double EngineMilliseconds, double? LinearSeconds, long LaunchesPerStep);

/// <summary>Renders the engine's achieved rate against the machine's scalar FMA peak, for the whole step and for the
/// Linear ops alone, with the launches per step and what they cost at the measured trivial-launch time.</summary>
public static class EfficiencyTable
{
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>The markdown table. <paramref name="peakGigaFlops"/> is the all-threads scalar peak;
    /// <paramref name="launchMicroseconds"/> a trivial launch's cost on the engine's CPU device layout.</summary>
    public static string Render(IEnumerable<EfficiencyRow> rows, double peakGigaFlops, double launchMicroseconds)
    {
        var table = new StringBuilder();
        table.AppendLine("| case | step | GFLOP per step (Linear + attention + head) | engine ms | engine GFLOP/s | step % of scalar peak | Linear GFLOP/s (profiled) | Linear % of scalar peak | launches per step | launches × trivial launch, ms |");
        table.AppendLine("|---|---|---|---|---|---|---|---|---|---|");
        foreach (var row in rows)
        {
            var f = row.Flops;
            double rate = f.Total / (row.EngineMilliseconds / 1000) / 1e9;
            double? linearRate = row.LinearSeconds is { } seconds && seconds > 0 ? f.Linear / seconds / 1e9 : null;
            table.AppendLine(string.Create(Invariant,
                $"| {row.Workload} | {row.Step} | {f.Total / 1e9:F3} ({f.Linear / 1e9:F3} + {(f.AttentionForward + f.AttentionBackward) / 1e9:F3} + {f.Head / 1e9:F3}) | {row.EngineMilliseconds:F1} | {rate:F2} | {rate / peakGigaFlops:P0} | {(linearRate is { } l ? l.ToString("F2", Invariant) : "-")} | {(linearRate is { } p ? (p / peakGigaFlops).ToString("P0", Invariant) : "-")} | {row.LaunchesPerStep} | {row.LaunchesPerStep * launchMicroseconds / 1000:F1} |"));
        }
        table.AppendLine();
        table.AppendLine(string.Create(Invariant,
            $"Peak: {peakGigaFlops:F2} GFLOP/s (scalar FMA, {Environment.ProcessorCount} threads). FLOPs: every Linear 2·M·N·K forward and the same again for its input gradient; attention QKᵀ and P·V over causal pairs, backward twice that; the LM head at the scored rows over the loss's vocabulary; the last block's o and MLP at the scored rows only (as the engine runs them); norms, RoPE, activations, softmax and AdamW not counted. Linear's rate divides its counted FLOPs by the profiled time of the `Linear.*` launchers (the profiler synchronises after each launch). A launch is a launcher call; a few launchers run two kernels."));
        return table.ToString();
    }
}
