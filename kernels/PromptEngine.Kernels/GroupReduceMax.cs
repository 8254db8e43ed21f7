using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Device helper for the GPU-shaped softmax kernels: the maximum across one group.</summary>
/// <remarks>The same two levels as <see cref="GroupReduce.Sum"/> (a <c>Warp.ShuffleXor</c> butterfly per warp, then
/// the warps' maxima through shared memory), kept in its own file so the softmax ops (attention, cross-entropy)
/// bring their helper with them.</remarks>
internal static class GroupReduceMax
{
    /// <summary>Maximum of <paramref name="value"/> over the group, returned to every thread (−∞ when all are −∞).
    /// Called from uniform control flow. Group.DimX must be a power of two; <paramref name="scratch"/> holds at least
    /// Group.DimX floats.</summary>
    public static float Max(ArrayView<float> scratch, float value)
    {
        int warpSize = Warp.WarpSize, threads = Group.DimX;
        if (threads < warpSize || threads % warpSize != 0)
            return TreeMax(scratch, value);
        for (int lane = warpSize / 2; lane > 0; lane >>= 1)
            value = Math.Max(value, Warp.ShuffleXor(value, lane));
        int warps = threads / warpSize;
        if (warps == 1)
            return value;
        int thread = Group.IdxX;
        if (thread % warpSize == 0)
            scratch[thread / warpSize] = value;
        Group.Barrier();
        float total = float.NegativeInfinity;
        for (int warp = 0; warp < warps; warp++)
            total = Math.Max(total, scratch[warp]);
        Group.Barrier(); // The caller may reuse scratch straight away.
        return total;
    }

    /// <summary>The shared-memory tree: correct for any group that is a power of two.</summary>
    static float TreeMax(ArrayView<float> scratch, float value)
    {
        int thread = Group.IdxX;
        scratch[thread] = value;
        Group.Barrier();
        for (int stride = Group.DimX / 2; stride > 0; stride >>= 1)
        {
            if (thread < stride)
                scratch[thread] = Math.Max(scratch[thread], scratch[thread + stride]);
            Group.Barrier();
        }
        float total = scratch[0];
        Group.Barrier();
        return total;
    }
}
