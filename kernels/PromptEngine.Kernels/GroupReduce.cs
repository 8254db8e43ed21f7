using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>An associative combination for <see cref="GroupReduce"/>: its identity and how two partial results combine.</summary>
internal interface IReduceOp
{
    /// <summary>The value that leaves any other unchanged (0 for a sum, −∞ for a maximum).</summary>
    float Identity { get; }

    /// <summary>Two partial results combined, <paramref name="accumulated"/> first.</summary>
    float Combine(float accumulated, float next);
}

/// <summary>Device helpers for the GPU-shaped kernels: reductions across one (one-dimensional) group, one generic body
/// for every combination (<see cref="Sum"/> for norms and dot products, <see cref="Max"/> for the softmax ops).</summary>
/// <remarks>
/// Each warp first reduces its lanes with a butterfly of <c>Warp.ShuffleXor</c> (every lane ends with the warp's
/// total, no shared memory and no barrier), then lane 0 of each warp leaves its total in shared memory and every
/// thread combines those Group.DimX / WarpSize totals in warp order: one barrier pair instead of log₂(Group.DimX).
/// The order is fixed by lane and warp index, so results are deterministic run to run. Groups narrower than a
/// warp, or not a whole number of warps, fall back to a shared-memory tree; the CPU device's warps of two
/// threads exercise the shuffle path in the tests.
/// </remarks>
internal static class GroupReduce
{
    /// <summary>Addition.</summary>
    internal readonly struct Add : IReduceOp
    {
        public float Identity => 0f;
        public float Combine(float accumulated, float next) => accumulated + next;
    }

    /// <summary>The larger of two values.</summary>
    internal readonly struct Larger : IReduceOp
    {
        public float Identity => float.NegativeInfinity;
        public float Combine(float accumulated, float next) => Math.Max(accumulated, next);
    }

    /// <summary>Sum of <paramref name="value"/> over the group, returned to every thread (see <see cref="Reduce{TOp}"/>).</summary>
    public static float Sum(ArrayView<float> scratch, float value) => Reduce<Add>(scratch, value);

    /// <summary>Maximum of <paramref name="value"/> over the group, returned to every thread (−∞ when all are −∞).</summary>
    public static float Max(ArrayView<float> scratch, float value) => Reduce<Larger>(scratch, value);

    /// <summary><paramref name="value"/> combined over the group by <typeparamref name="TOp"/>, returned to every thread.
    /// Called from uniform control flow (every thread of the group). Group.DimX must be a power of two;
    /// <paramref name="scratch"/> holds at least Group.DimX floats and may be reused as soon as this returns.</summary>
    public static float Reduce<TOp>(ArrayView<float> scratch, float value) where TOp : struct, IReduceOp
    {
        var op = default(TOp);
        int warpSize = Warp.WarpSize, threads = Group.DimX;
        if (threads < warpSize || threads % warpSize != 0)
            return TreeReduce<TOp>(scratch, value);
        for (int lane = warpSize / 2; lane > 0; lane >>= 1)
            value = op.Combine(value, Warp.ShuffleXor(value, lane));
        int warps = threads / warpSize;
        if (warps == 1)
            return value;
        int thread = Group.IdxX;
        if (thread % warpSize == 0)
            scratch[thread / warpSize] = value;
        Group.Barrier();
        float total = op.Identity;
        for (int warp = 0; warp < warps; warp++)
            total = op.Combine(total, scratch[warp]);
        Group.Barrier(); // The caller may reuse scratch straight away.
        return total;
    }

    /// <summary>The shared-memory tree: correct for any group that is a power of two.</summary>
    static float TreeReduce<TOp>(ArrayView<float> scratch, float value) where TOp : struct, IReduceOp
    {
        var op = default(TOp);
        int thread = Group.IdxX;
        scratch[thread] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (thread < stride)
                scratch[thread] = op.Combine(scratch[thread], scratch[thread + stride]);
            Group.Barrier();
        }
        float total = scratch[0];
        Group.Barrier();
        return total;
    }
}
