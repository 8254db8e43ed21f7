using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>
/// The one convention for splitting items (elements, rows, register blocks) over the threads of a barrier-free launch:
/// the launcher asks <see cref="KernelContext.RunConfig"/> for a launch and a run length, and each thread takes the
/// run of that many consecutive items starting at its global index times the length. On the CPU the runs are long
/// (about <see cref="KernelContext.ParallelThreads"/> of them, so the CPU accelerator's per-group cost is paid a few
/// times per core, not once per item); on a GPU every run is one item, so neighbouring threads touch neighbouring
/// memory. Items never share a thread's arithmetic, so results do not depend on the split. A thread past the last item
/// gets an empty run and its loop does nothing; kernels may take pointers to their (never empty) views before it.
/// </summary>
internal readonly struct ThreadRun
{
    /// <summary>First item of this thread's run.</summary>
    public readonly long Start;

    /// <summary>One past the last item (at most the item count).</summary>
    public readonly long End;

    ThreadRun(long start, long end)
    {
        Start = start;
        End = end;
    }

    /// <summary>This thread's run of <paramref name="perThread"/> items out of <paramref name="count"/> (inside a kernel).</summary>
    public static ThreadRun Of(long count, int perThread)
    {
        long start = (long)Grid.GlobalIndex.X * perThread;
        return new ThreadRun(start, Math.Min(start + perThread, count));
    }
}
