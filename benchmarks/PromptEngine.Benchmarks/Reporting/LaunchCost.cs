using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>The fixed cost of one kernel launch on ILGPU's CPU accelerator: a trivial kernel (one thread writes one
/// int) launched many times in a row, for several CPU device layouts and launch shapes.</summary>
/// <remarks>
/// ILGPU 1.5.3's CPU accelerator (Runtime/CPU/CPUAccelerator.cs, CPUMultiprocessor.cs) starts every thread of every
/// multiprocessor when the accelerator is built (all of them when there are at most 32 per multiprocessor); each launch
/// wakes all of them with one Monitor.PulseAll, every thread of a multiprocessor meets the others at a
/// System.Threading.Barrier before and after the kernel, and the launching thread waits at one more barrier. So a
/// launch's fixed cost grows with threads per multiprocessor × multiprocessors, whatever the group size of the launch:
/// a group-size-1 kernel pays for the idle threads of the multiprocessor too.
/// </remarks>
public static class LaunchCost
{
    /// <summary>One measurement.</summary>
    /// <param name="ThreadsPerMultiprocessor">Threads the CPU device gives each multiprocessor (warp size × warps).</param>
    /// <param name="Multiprocessors">Multiprocessors of the CPU device.</param>
    /// <param name="Groups">Groups of the launch.</param>
    /// <param name="GroupSize">Threads per group of the launch.</param>
    /// <param name="Microseconds">Median over rounds of the mean wall time per launch, synchronised.</param>
    /// <param name="CpuMicroseconds">Median over rounds of this process's CPU time (user + system, all threads) per
    /// launch: what the launch costs the machine, less sensitive than wall time to other processes' load.</param>
    public sealed record Sample(int ThreadsPerMultiprocessor, int Multiprocessors, int Groups, int GroupSize, double Microseconds, double CpuMicroseconds);

    static void TrivialKernel(ArrayView<int> counter)
    {
        if (Grid.GlobalIndex.X == 0 && Group.IdxX == 0)
            counter[0] += 1;
    }

    /// <summary>Launch cost of the trivial kernel on a CPU device with <paramref name="threadsPerMultiprocessor"/> threads
    /// (warps of 2, the smallest ILGPU accepts) on each of <paramref name="multiprocessors"/> multiprocessors, for each
    /// (groups, group size) launch shape; <paramref name="launches"/> launches per round.</summary>
    public static IReadOnlyList<Sample> Measure(int threadsPerMultiprocessor, int multiprocessors, IEnumerable<(int Groups, int GroupSize)> shapes,
        int launches = 2000, int rounds = 3)
    {
        const int warp = 2;
        var device = new CPUDevice(numThreadsPerWarp: warp, numWarpsPerMultiprocessor: Math.Max(1, threadsPerMultiprocessor / warp), numMultiprocessors: multiprocessors);
        using var context = Context.Create(builder => builder.CPU(device).Optimize(OptimizationLevel.O2));
        using var accelerator = context.GetCPUDevice(0).CreateAccelerator(context);
        var kernel = accelerator.LoadKernel<ArrayView<int>>(TrivialKernel);
        using var counter = accelerator.Allocate1D<int>(1);
        counter.MemSetToZero();
        var samples = new List<Sample>();
        foreach (var (groups, groupSize) in shapes)
        {
            var config = new KernelConfig(groups, groupSize);
            for (var i = 0; i < 50; i++) kernel(accelerator.DefaultStream, config, counter.View); // compile, start threads
            accelerator.Synchronize();
            var times = new List<double>();
            var cpuTimes = new List<double>();
            var process = Process.GetCurrentProcess();
            for (var r = 0; r < rounds; r++)
            {
                process.Refresh();
                var cpu = process.TotalProcessorTime;
                var clock = Stopwatch.StartNew();
                for (var i = 0; i < launches; i++) kernel(accelerator.DefaultStream, config, counter.View);
                accelerator.Synchronize();
                times.Add(clock.Elapsed.TotalMilliseconds * 1000 / launches);
                process.Refresh();
                cpuTimes.Add((process.TotalProcessorTime - cpu).TotalMilliseconds * 1000 / launches);
            }
            samples.Add(new Sample(threadsPerMultiprocessor, multiprocessors, groups, groupSize, ReportMode.Median(times), ReportMode.Median(cpuTimes)));
        }
        return samples;
    }
}
