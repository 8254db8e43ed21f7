using System.Diagnostics;
using System.Globalization;
using System.Text;
using PromptEngine.Benchmarks.EndToEnd;
using PromptEngine.Benchmarks.Ops;
using PromptEngine.Benchmarks.Workloads;
using PromptEngine.Kernels;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>
/// <c>report</c>: every end-to-end case of every implementation side by side, in rounds (round r times each
/// implementation in turn, so a burst of load from elsewhere hits all of them alike), then the peak memory of each
/// case in a process of its own, then each op at the models' shapes; prints markdown tables. Before all that, the
/// machine: its scalar FMA peak, SIMD width and kernel launch cost; after the end-to-end table, the engine's
/// efficiency against that peak (<see cref="EfficiencyTable"/>) and its step with the old and new CPU device layout.
/// Options: <c>--rounds N</c> (default 3), <c>--workloads tiny,stories15M</c>, <c>--no-memory</c>, <c>--no-ops</c>,
/// <c>--no-profile</c> (skip the engine's per-op breakdown of a step, and with it the Linear efficiency),
/// <c>--no-layout</c> (skip the CPU device layout before/after).
/// </summary>
public static class ReportMode
{
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs the report and prints it to standard output.</summary>
    public static int Run(string[] args)
    {
        int rounds = 3;
        string[] workloads = ["tiny", "stories15M"];
        bool memory = true, ops = true, profile = true, layout = true;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--rounds" when i + 1 < args.Length && int.TryParse(args[i + 1], out var r) && r > 0: rounds = r; i++; break;
                case "--workloads" when i + 1 < args.Length: workloads = args[++i].Split(',', StringSplitOptions.RemoveEmptyEntries); break;
                case "--no-memory": memory = false; break;
                case "--no-ops": ops = false; break;
                case "--no-profile": profile = false; break;
                case "--no-layout": layout = false; break;
                default:
                    Console.Error.WriteLine($"report: unknown option '{args[i]}'. Options: --rounds N, --workloads tiny,stories15M, --no-memory, --no-ops, --no-profile, --no-layout");
                    return 2;
            }
        }

        // Each table is printed as soon as it is complete (a full run takes minutes); progress goes to stderr.
        var clock = Stopwatch.StartNew();
        Print(Header() + "\n");
        Print(MachineSection(out var peak, out var launchMicroseconds));
        Print($"### End to end ({rounds} rounds; median, with the range over rounds)\n");
        var engineMilliseconds = new Dictionary<(string, bool), double>();
        Print(EndToEndTable(workloads, rounds, engineMilliseconds));
        var efficiency = new List<EfficiencyRow>();
        foreach (var name in workloads)
            foreach (var training in new[] { true, false })
            {
                using var workload = Workload.Create(name);
                using var runner = new EngineRunner(workload, training);
                var flops = StepFlops.Count(runner.Config, runner.Batch, training);
                long launches = LaunchesPerStep(runner, training);
                double? linearSeconds = null;
                if (profile)
                {
                    Print($"### Engine, one {name} {(training ? "train step" : "forward")} by op (KernelProfiler)\n");
                    Print(ProfileTable(name, runner, training, out var linear));
                    linearSeconds = linear;
                }
                efficiency.Add(new EfficiencyRow(name, training ? "train" : "forward", flops, engineMilliseconds[(name, training)], linearSeconds, launches));
            }
        Print("### Engine efficiency against the scalar FMA peak\n");
        Print(EfficiencyTable.Render(efficiency, peak, launchMicroseconds));
        if (layout)
        {
            Print($"### Engine step on CPU multiprocessors of {KernelContext.CpuMaxGroupSize} threads (before) and {KernelContext.CpuWarpSize} (now), interleaved ({rounds} rounds; median)\n");
            Print(LayoutTable(workloads, rounds));
        }
        if (memory)
        {
            Print("### Peak memory (each case in its own process)\n");
            Print(MemoryTable(workloads));
        }
        if (ops)
        {
            Print($"### Ops at the models' shapes ({rounds} rounds; median)\n");
            Print(OpsTable(rounds));
        }
        Print($"Report took {clock.Elapsed.TotalSeconds:F0} s; load average at the end: {LoadAverage()}.");
        return 0;
    }

    /// <summary>Prints the machine section alone (<c>machine</c>).</summary>
    public static int RunMachine()
    {
        Print(Header() + "\n");
        Print(MachineSection(out _, out _));
        return 0;
    }

    /// <summary>The scalar FMA peak on 1 and <see cref="Environment.ProcessorCount"/> threads, the SIMD width, and the CPU
    /// accelerator's launch cost; <paramref name="peak"/> is the all-threads peak in GFLOP/s (the efficiency yardstick),
    /// <paramref name="launchMicroseconds"/> a trivial elementwise-shaped launch on the engine's CPU device layout.</summary>
    static string MachineSection(out double peak, out double launchMicroseconds)
    {
        Progress("scalar FMA peak");
        var one = ScalarPeak.Measure(1);
        var all = ScalarPeak.Measure(Environment.ProcessorCount);
        peak = all.GigaFlops;
        var text = new StringBuilder();
        text.AppendLine("### Machine: scalar FMA peak, SIMD width, kernel launch cost\n");
        text.AppendLine(string.Create(Invariant, $"- Scalar float FMA peak ({ScalarPeak.Chains} independent `MathF.FusedMultiplyAdd` chains per thread, 2 FLOP per FMA, best of 3): {one.GigaFlops:F2} GFLOP/s on 1 thread, {all.GigaFlops:F2} GFLOP/s on {all.Threads} threads."));
        text.AppendLine($"- SIMD: {ScalarPeak.SimdDescription()}. The engine's kernels are scalar (ILGPU's CPU accelerator does not vectorise); efficiencies below are against the {all.Threads}-thread scalar peak.");
        text.AppendLine();
        Progress("launch cost");
        int cores = Environment.ProcessorCount;
        // 4·cores groups of 1 is the shape of the engine's elementwise and CPU-shaped Linear launches (ParallelThreads).
        (int, int)[] shapes = [(1, 1), (cores, 1), (4 * cores, 1), (cores, 2)];
        launchMicroseconds = 0;
        text.AppendLine("| CPU device threads per multiprocessor | multiprocessors | launch groups × group size | µs per launch (trivial kernel, median of 3 × 2000) | CPU µs per launch (all threads) |");
        text.AppendLine("|---|---|---|---|---|");
        foreach (var threads in new[] { KernelContext.CpuMaxGroupSize, KernelContext.CpuWarpSize })
            foreach (var sample in LaunchCost.Measure(threads, cores, shapes))
            {
                if (threads == KernelContext.CpuWarpSize && sample.Groups == 4 * cores && sample.GroupSize == 1) launchMicroseconds = sample.Microseconds;
                text.AppendLine(string.Create(Invariant, $"| {sample.ThreadsPerMultiprocessor} | {sample.Multiprocessors} | {sample.Groups} × {sample.GroupSize} | {sample.Microseconds:F1} | {sample.CpuMicroseconds:F1} |"));
            }
        text.AppendLine();
        text.AppendLine($"The engine's CPU-shaped kernels now run on multiprocessors of {KernelContext.CpuWarpSize} threads (the GPU-shaped ones, in the tests, on {KernelContext.CpuMaxGroupSize}).");
        return text.ToString();
    }

    static void Print(string text)
    {
        Console.WriteLine(text);
        Console.Out.Flush();
    }

    static void Progress(string text) => Console.Error.WriteLine($"[report {DateTime.UtcNow:HH:mm:ss}] {text}");

    /// <summary>The CPU's model name from /proc/cpuinfo, or null.</summary>
    public static string? CpuName() => File.Exists("/proc/cpuinfo")
        ? File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim()
        : null;

    static string Header()
    {
        var cpu = CpuName();
        return $"""
            ## Report {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC
            - Machine: {cpu ?? "unknown CPU"}, {Environment.ProcessorCount} logical cores, {Environment.OSVersion}
            - .NET {Environment.Version}; ILGPU {typeof(ILGPU.Context).Assembly.GetName().Version}; implementations: {string.Join(", ", StepRunners.All)}
            - Load average at the start (`uptime`): {LoadAverage()}
            """;
    }

    /// <summary>The 1, 5 and 15 minute load averages.</summary>
    public static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(", ", File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";

    /// <summary>The end-to-end table; records each case's engine median in <paramref name="engineMilliseconds"/>.</summary>
    static string EndToEndTable(string[] workloadNames, int rounds, Dictionary<(string, bool), double> engineMilliseconds)
    {
        var implementations = StepRunners.All;
        var table = new StringBuilder();
        table.Append("| case | step | tokens/step |");
        foreach (var impl in implementations) table.Append(Invariant, $" {impl} ms |");
        foreach (var impl in implementations.Skip(1)) table.Append(Invariant, $" engine / {impl} |");
        foreach (var impl in implementations) table.Append(Invariant, $" {impl} tokens/s |");
        table.AppendLine(" loss (same order) |");
        table.AppendLine("|" + string.Concat(Enumerable.Repeat("---|", 4 + 3 * implementations.Count - 1)));
        foreach (var name in workloadNames)
        {
            using var workload = Workload.Create(name);
            foreach (var training in new[] { true, false })
            {
                Progress($"{name} {(training ? "train" : "forward")}");
                var runners = implementations.Select(impl => StepRunners.Create(impl, workload, training)).ToList();
                try
                {
                    // Warm-up: compilation, first-touch allocation. Its time over-estimates a step, so the repeats below
                    // (enough steps that one round of one implementation takes about 0.3 s) err low, never high.
                    var losses = new List<float>();
                    var warm = runners.Select(r => { var clock = Stopwatch.StartNew(); losses.Add(r.Step()); return clock.Elapsed.TotalMilliseconds; }).ToList();
                    var repeats = warm.Select(ms => Math.Max(1, (int)Math.Ceiling(300 / Math.Max(ms, 1e-3)))).ToList();
                    var samples = implementations.Select(_ => new List<double>()).ToList();
                    for (var r = 0; r < rounds; r++)
                        for (var i = 0; i < runners.Count; i++)
                            samples[i].Add(Time(runners[i], repeats[i]));
                    var medians = samples.Select(Median).ToList();
                    engineMilliseconds[(name, training)] = medians[0];
                    table.Append(Invariant, $"| {name} | {(training ? "train" : "forward")} | {workload.TokensPerStep} |");
                    foreach (var s in samples) table.Append(Invariant, $" {Median(s):F1} ({s.Min():F1}–{s.Max():F1}) |");
                    foreach (var m in medians.Skip(1)) table.Append(Invariant, $" {medians[0] / m:F2} |");
                    foreach (var m in medians) table.Append(Invariant, $" {workload.TokensPerStep / (m / 1000):F0} |");
                    table.AppendLine(string.Create(Invariant, $" {string.Join(" / ", losses.Select(l => l.ToString("F4", Invariant)))} |"));
                }
                finally
                {
                    foreach (var runner in runners) runner.Dispose();
                }
            }
        }
        return table.ToString();
    }

    /// <summary>Launcher calls of one step of <paramref name="runner"/> (after a warm-up step).</summary>
    static long LaunchesPerStep(EngineRunner runner, bool training)
    {
        Step(runner, training);
        long before = runner.Kernels.Launches;
        Step(runner, training);
        return runner.Kernels.Launches - before;
    }

    static float Step(EngineRunner runner, bool training) => training ? runner.TrainStep() : runner.Forward();

    /// <summary>One engine step with a <see cref="KernelProfiler"/> attached: the profiler synchronises after every
    /// launch and charges the time to the op, so the step runs a little slower than unprofiled.
    /// <paramref name="linearSeconds"/>: the time charged to the <c>Linear.*</c> launchers.</summary>
    static string ProfileTable(string name, EngineRunner runner, bool training, out double linearSeconds)
    {
        Progress($"profile {name} {(training ? "train" : "forward")}");
        Step(runner, training); // compile every kernel first
        var profiler = new KernelProfiler();
        var clock = Stopwatch.StartNew();
        profiler.Start(runner.Kernels);
        Step(runner, training);
        profiler.Stop();
        linearSeconds = profiler.Ops.Where(op => op.Op.StartsWith("Linear.", StringComparison.Ordinal)).Sum(op => op.Seconds);
        var wall = clock.Elapsed.TotalMilliseconds;
        var table = new StringBuilder();
        table.AppendLine("| op | launches | ms | share of the profiled step |");
        table.AppendLine("|---|---|---|---|");
        foreach (var op in profiler.Ops)
            table.AppendLine(string.Create(Invariant, $"| {op.Op} | {op.Launches} | {op.Seconds * 1000:F1} | {op.Seconds * 1000 / wall:P1} |"));
        table.AppendLine(string.Create(Invariant, $"| all ops | {profiler.Ops.Sum(o => o.Launches)} | {profiler.TotalSeconds * 1000:F1} | {profiler.TotalSeconds * 1000 / wall:P1} |"));
        table.AppendLine(string.Create(Invariant, $"| profiled step, wall | | {wall:F1} | 100% |"));
        table.AppendLine();
        table.AppendLine($"Load average after the profiled step: {LoadAverage()}.");
        return table.ToString();
    }

    /// <summary>The engine's step on the old CPU device layout (16 threads per multiprocessor) and the new one (2), built
    /// side by side and timed in alternation, so that background load falls on both alike.</summary>
    static string LayoutTable(string[] workloadNames, int rounds)
    {
        var table = new StringBuilder();
        table.AppendLine($"| case | step | {KernelContext.CpuMaxGroupSize} threads ms | {KernelContext.CpuWarpSize} threads ms | speedup | {KernelContext.CpuMaxGroupSize} threads CPU ms | {KernelContext.CpuWarpSize} threads CPU ms | CPU time ratio | loss (same order) |");
        table.AppendLine("|---|---|---|---|---|---|---|---|---|");
        foreach (var name in workloadNames)
        {
            using var workload = Workload.Create(name);
            foreach (var training in new[] { true, false })
            {
                Progress($"layout {name} {(training ? "train" : "forward")}");
                using var before = new EngineRunner(workload, training, KernelContext.CpuMaxGroupSize);
                using var after = new EngineRunner(workload, training, KernelContext.CpuWarpSize);
                var runners = new[] { before, after };
                var losses = runners.Select(r => Step(r, training)).ToList();
                var warm = Stopwatch.StartNew();
                Step(before, training);
                int repeats = Math.Max(1, (int)Math.Ceiling(300 / Math.Max(warm.Elapsed.TotalMilliseconds, 1e-3)));
                var samples = runners.Select(_ => new List<double>()).ToArray();
                var cpuSamples = runners.Select(_ => new List<double>()).ToArray();
                var process = Process.GetCurrentProcess();
                for (var r = 0; r < rounds; r++)
                    for (var i = 0; i < runners.Length; i++)
                    {
                        process.Refresh();
                        var cpu = process.TotalProcessorTime;
                        var clock = Stopwatch.StartNew();
                        for (var k = 0; k < repeats; k++) Step(runners[i], training);
                        samples[i].Add(clock.Elapsed.TotalMilliseconds / repeats);
                        process.Refresh();
                        cpuSamples[i].Add((process.TotalProcessorTime - cpu).TotalMilliseconds / repeats);
                    }
                double old = Median(samples[0]), now = Median(samples[1]), oldCpu = Median(cpuSamples[0]), nowCpu = Median(cpuSamples[1]);
                table.AppendLine(string.Create(Invariant,
                    $"| {name} | {(training ? "train" : "forward")} | {old:F1} | {now:F1} | {old / now:F2}x | {oldCpu:F1} | {nowCpu:F1} | {oldCpu / nowCpu:F2}x | {losses[0]:F4} / {losses[1]:F4} |"));
            }
        }
        table.AppendLine();
        table.AppendLine($"CPU ms: this process's user + system time per step over all its threads (the other processes' load changes it less than wall time). Load average after: {LoadAverage()}.");
        return table.ToString();
    }

    static double Time(IStepRunner runner, int repeats)
    {
        var clock = Stopwatch.StartNew();
        for (var i = 0; i < repeats; i++) runner.Step();
        return clock.Elapsed.TotalMilliseconds / repeats;
    }

    /// <summary>The median of <paramref name="values"/> (the mean of the middle two for an even count).</summary>
    public static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }

    static string MemoryTable(string[] workloadNames)
    {
        var table = new StringBuilder();
        table.AppendLine("| case | step | implementation | resident after setup MB | peak resident during a step MB | engine arenas MB |");
        table.AppendLine("|---|---|---|---|---|---|");
        foreach (var name in workloadNames)
            foreach (var mode in new[] { "train", "forward" })
                foreach (var impl in StepRunners.All)
                {
                    Progress($"memory {name} {mode} {impl}");
                    var (setup, peak) = ProbeInChild(name, impl, mode);
                    var arenas = impl == StepRunners.Engine ? EngineArenaMegabytes(name, mode == "train") : "-";
                    table.AppendLine(string.Create(Invariant, $"| {name} | {mode} | {impl} | {setup / 1e6:F0} | {peak / 1e6:F0} | {arenas} |"));
                }
        return table.ToString();
    }

    static string EngineArenaMegabytes(string name, bool training)
    {
        using var workload = Workload.Create(name);
        using var runner = new EngineRunner(workload, training);
        var m = runner.Memory;
        return string.Create(Invariant, $"{m.Total / 1e6:F1} (weights {m.FrozenWeights / 1e6:F1}, activations {m.Activations / 1e6:F1}, scratch {m.GradientsAndScratch / 1e6:F1})");
    }

    /// <summary>Runs <see cref="MemoryProbe"/> in a fresh process of this program.</summary>
    static (long Setup, long Peak) ProbeInChild(string workload, string implementation, string mode)
    {
        var start = new ProcessStartInfo(Environment.ProcessPath!) { RedirectStandardOutput = true, RedirectStandardError = true };
        // Under `dotnet Program.dll` the process is dotnet itself and needs the assembly; the apphost does not.
        if (Path.GetFileNameWithoutExtension(Environment.ProcessPath!) == "dotnet") start.ArgumentList.Add(typeof(Program).Assembly.Location);
        foreach (var a in new[] { "memory", workload, implementation, mode }) start.ArgumentList.Add(a);
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        process.WaitForExit();
        var line = stdout.Result.Split('\n').FirstOrDefault(l => l.StartsWith("memory ", StringComparison.Ordinal));
        if (process.ExitCode != 0 || line is null)
            throw new InvalidOperationException($"memory probe {workload} {implementation} {mode} failed (exit {process.ExitCode}): {stderr.Result}{stdout.Result}");
        var fields = line.Split(' ');
        return (long.Parse(fields[4], Invariant), long.Parse(fields[5], Invariant));
    }

    /// <summary>One op case: a name, its shape, how often a train step of its model calls it, and the engine's and
    /// TorchSharp's ready methods.</summary>
    sealed record OpCase(string Op, IWorkCount Shape, string Method, int CallsPerStep, Action Engine, Action Torch, Action Cleanup);

    static double TimeOp(Action run, int rounds)
    {
        run(); // compile, first-touch allocation
        var single = Stopwatch.StartNew();
        run();
        int repeats = Math.Max(1, (int)Math.Ceiling(100 / Math.Max(single.Elapsed.TotalMilliseconds, 1e-3)));
        var samples = new List<double>();
        for (var r = 0; r < rounds; r++)
        {
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < repeats; i++) run();
            samples.Add(clock.Elapsed.TotalMilliseconds / repeats);
        }
        return Median(samples);
    }

    static string OpsTable(int rounds)
    {
        var table = new StringBuilder();
        table.AppendLine("| op | shape | engine ms | engine GFLOP/s | engine GB/s | TorchSharp ms | TorchSharp GFLOP/s | engine / TorchSharp | calls per train step | engine ms per step | TorchSharp ms per step |");
        table.AppendLine("|---|---|---|---|---|---|---|---|---|---|---|");
        var perModel = new Dictionary<string, (double Engine, double Torch)>();
        foreach (var op in OpCases())
        {
            try
            {
                Progress($"{op.Op} {op.Shape}");
                var engine = TimeOp(op.Engine, rounds);
                var torch = TimeOp(op.Torch, rounds);
                var model = op.Shape.ToString()!.Split(' ')[0];
                var sums = perModel.GetValueOrDefault(model);
                perModel[model] = (sums.Engine + engine * op.CallsPerStep, sums.Torch + torch * op.CallsPerStep);
                var flops = op.Shape.Flops(op.Method);
                string Rate(double ms) => flops > 0 ? (flops / ms / 1e6).ToString("F2", Invariant) : "-";
                table.AppendLine(string.Create(Invariant,
                    $"| {op.Op} | {op.Shape} | {engine:F3} | {Rate(engine)} | {op.Shape.Bytes(op.Method) / engine / 1e6:F2} | {torch:F3} | {Rate(torch)} | {engine / torch:F1} | {op.CallsPerStep} | {engine * op.CallsPerStep:F1} | {torch * op.CallsPerStep:F1} |"));
            }
            finally { op.Cleanup(); }
        }
        table.AppendLine();
        foreach (var (model, (engine, torch)) in perModel)
            table.AppendLine(string.Create(Invariant, $"Sum over the ops measured here of one {model} train step: engine {engine:F1} ms, TorchSharp {torch:F1} ms (the rest of a step is RoPE, SwiGLU, residual adds, the embedding and AdamW)."));
        return table.ToString();
    }

    static IEnumerable<OpCase> OpCases()
    {
        static int Layers(string model) => model == "tiny" ? 2 : 6;
        foreach (var shape in LinearShape.All())
        {
            // Per layer: q, k, v and o share a shape (4 calls), gate and up (2), down (1); forward and backward each.
            int calls = Layers(shape.Model) * (shape.Projection switch { "qkvo" => 4, "gate/up" => 2, _ => 1 });
            foreach (var backward in new[] { false, true })
            {
                var bench = new LinearOps { Shape = shape };
                bench.Setup();
                yield return new OpCase(backward ? "linear backward-data" : "linear forward", shape, backward ? nameof(LinearOps.EngineBackward) : nameof(LinearOps.EngineForward),
                    calls, backward ? bench.EngineBackward : bench.EngineForward, backward ? bench.TorchBackward : bench.TorchForward, bench.Cleanup);
            }
        }
        foreach (var shape in AttentionShape.All())
            foreach (var backward in new[] { false, true })
            {
                var bench = new AttentionOps { Shape = shape };
                bench.Setup();
                yield return new OpCase(backward ? "attention backward" : "attention forward", shape, backward ? nameof(AttentionOps.EngineBackward) : nameof(AttentionOps.EngineForward),
                    Layers(shape.Model), backward ? bench.EngineBackward : bench.EngineForward, backward ? bench.TorchBackward : bench.TorchForward, bench.Cleanup);
            }
        foreach (var shape in NormShape.All())
            foreach (var backward in new[] { false, true })
            {
                var bench = new RmsNormOps { Shape = shape };
                bench.Setup();
                yield return new OpCase(backward ? "rmsnorm backward" : "rmsnorm forward", shape, backward ? nameof(RmsNormOps.EngineBackward) : nameof(RmsNormOps.EngineForward),
                    2 * Layers(shape.Model) + 1, backward ? bench.EngineBackward : bench.EngineForward, backward ? bench.TorchBackward : bench.TorchForward, bench.Cleanup);
            }
        foreach (var shape in CrossEntropyShape.All())
            foreach (var backward in new[] { false, true })
            {
                var bench = new CrossEntropyOps { Shape = shape };
                bench.Setup();
                // The full-vocabulary stories15M row is a comparison point, not part of the step.
                yield return new OpCase(backward ? "cross-entropy backward" : "cross-entropy forward", shape, backward ? nameof(CrossEntropyOps.EngineBackward) : nameof(CrossEntropyOps.EngineForward),
                    shape.Model.Contains("full", StringComparison.Ordinal) ? 0 : 1, backward ? bench.EngineBackward : bench.EngineForward, backward ? bench.TorchBackward : bench.TorchForward, bench.Cleanup);
            }
    }
}
