using System.Globalization;
using PromptEngine.Benchmarks.EndToEnd;
using PromptEngine.Benchmarks.Workloads;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>Peak resident memory of one case, measured in a process of its own so no other case's memory is counted.
/// Linux only: reads VmRSS and VmHWM from /proc/self/status and resets the high-water mark through
/// /proc/self/clear_refs. The same measure applies to the engine (the CPU accelerator's buffers are host memory)
/// and to TorchSharp (libtorch's CPU allocator is host memory too).</summary>
public static class MemoryProbe
{
    /// <summary>Prints one line: <c>memory WORKLOAD IMPL MODE setupRssBytes peakRssBytes</c>: the resident set after
    /// building the case and one warm-up step, and the peak resident set over one more step.</summary>
    public static int Run(string workloadName, string implementation, string mode)
    {
        if (!OperatingSystem.IsLinux()) throw new PlatformNotSupportedException("memory: needs Linux's /proc/self/status");
        using var workload = Workload.Create(workloadName);
        using var runner = StepRunners.Create(implementation, workload, mode switch
        {
            "train" => true,
            "forward" => false,
            _ => throw new ArgumentException($"memory: mode '{mode}' is neither train nor forward"),
        });
        runner.Step();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        File.WriteAllText("/proc/self/clear_refs", "5"); // reset VmHWM to the current resident set
        long setup = Read("VmRSS");
        runner.Step();
        long peak = Read("VmHWM");
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"memory {workloadName} {implementation} {mode} {setup} {peak}"));
        return 0;
    }

    /// <summary>A /proc/self/status field, in bytes.</summary>
    static long Read(string field)
    {
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith(field + ":", StringComparison.Ordinal))
                return long.Parse(line[(field.Length + 1)..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) * 1024;
        throw new InvalidOperationException($"memory: /proc/self/status has no {field}");
    }
}
