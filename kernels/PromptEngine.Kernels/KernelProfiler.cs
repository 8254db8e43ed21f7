using System.Diagnostics;

namespace PromptEngine.Kernels;

/// <summary>Wall time and launch count of one op, summed over a profiled run.</summary>
/// <param name="Op">The launcher's name, e.g. <c>Linear.Backward</c>.</param>
/// <param name="Seconds">Time from this op's launch to the next launch (or <see cref="KernelProfiler.Stop"/>), synchronized.</param>
/// <param name="Launches">How many times it was launched.</param>
public sealed record OpTime(string Op, double Seconds, int Launches);

/// <summary>
/// Attributes device time to ops for a per-op breakdown of a step. While attached to a
/// <see cref="KernelContext"/>, every launcher calls <see cref="Enter"/> before it launches: the profiler then
/// waits for the device and charges the time since the previous launch to the previous op. Waiting after
/// every launch serialises the device, so a profiled step is a little slower than an unprofiled one: use it
/// to see where time goes, and time steps without it.
/// </summary>
public sealed class KernelProfiler
{
    readonly Dictionary<string, (double Seconds, int Launches)> totals = [];
    readonly Stopwatch clock = new();
    KernelContext? context;
    string? running;

    /// <summary>Starts charging launches of <paramref name="kernels"/> to this profiler (attaching it).</summary>
    public void Start(KernelContext kernels)
    {
        kernels.Synchronize();
        context = kernels;
        kernels.Profiler = this;
        running = null;
        clock.Restart();
    }

    /// <summary>Waits for the last launch, charges it, and detaches from the context.</summary>
    public void Stop()
    {
        if (context is null)
            return;
        Charge();
        context.Profiler = null;
        context = null;
    }

    /// <summary>Called by a launcher before it launches <paramref name="op"/>.</summary>
    internal void Enter(string op)
    {
        Charge();
        running = op;
    }

    void Charge()
    {
        context!.Synchronize();
        if (running is not null)
        {
            var (seconds, launches) = totals.GetValueOrDefault(running);
            totals[running] = (seconds + clock.Elapsed.TotalSeconds, launches + 1);
        }
        running = null;
        clock.Restart();
    }

    /// <summary>Forgets what was recorded.</summary>
    public void Reset() => totals.Clear();

    /// <summary>Ops by time, largest first.</summary>
    public IReadOnlyList<OpTime> Ops =>
        totals.Select(pair => new OpTime(pair.Key, pair.Value.Seconds, pair.Value.Launches)).OrderByDescending(op => op.Seconds).ToList();

    /// <summary>Sum of all ops' time.</summary>
    public double TotalSeconds => totals.Values.Sum(value => value.Seconds);
}
