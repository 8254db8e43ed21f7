using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Device helpers for the GPU-shaped kernels: reductions across one (one-dimensional) group.</summary>
/// <remarks>
/// Each warp first reduces its lanes with a butterfly of <c>Warp.ShuffleXor</c> (every lane ends with the warp's
/// total, no shared memory and no barrier), then lane 0 of each warp leaves its total in shared memory and every
/// thread adds those Group.DimX / WarpSize totals in warp order: one barrier pair instead of log₂(Group.DimX).
/// The order is fixed by lane and warp index, so results are deterministic run to run. Groups narrower than a
/// warp, or not a whole number of warps, fall back to a shared-memory tree; the CPU device's warps of two
/// threads exercise the shuffle path in the tests.
/// </remarks>
internal static class GroupReduce
{
    /// <summary>Sum of <paramref name="value"/> over the group, returned to every thread. Called from uniform control
    /// flow (every thread of the group). Group.DimX must be a power of two; <paramref name="scratch"/> holds at least
    /// Group.DimX floats.</summary>
    public static float Sum(ArrayView<float> scratch, float value)
    {
        int warpSize = Warp.WarpSize, threads = Group.DimX;
        if (threads < warpSize || threads % warpSize != 0)
            return TreeSum(scratch, value);
        for (int lane = warpSize / 2; lane > 0; lane >>= 1)
            value += Warp.ShuffleXor(value, lane);
        int warps = threads / warpSize;
        if (warps == 1)
            return value;
        int thread = Group.IdxX;
        if (thread % warpSize == 0)
            scratch[thread / warpSize] = value;
        Group.Barrier();
        float total = 0;
        for (int warp = 0; warp < warps; warp++)
            total += scratch[warp];
        Group.Barrier(); // The caller may reuse scratch straight away.
        return total;
    }

    /// <summary>The shared-memory tree: correct for any group that is a power of two.</summary>
    static float TreeSum(ArrayView<float> scratch, float value)
    {
        int thread = Group.IdxX;
        scratch[thread] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (thread < stride)
                scratch[thread] += scratch[thread + stride];
            Group.Barrier();
        }
        float total = scratch[0];
        Group.Barrier();
        return total;
    }
}
