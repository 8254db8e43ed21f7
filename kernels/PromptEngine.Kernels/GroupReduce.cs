using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Device helpers for the GPU-shaped kernels: reductions across one group through shared memory.</summary>
/// <remarks>
/// A shared-memory tree rather than warp shuffles: it is correct for any warp size (the CPU device uses
/// warps of one thread) and sums in a fixed order, so results are deterministic run to run.
/// </remarks>
internal static class GroupReduce
{
    /// <summary>Sum of <paramref name="value"/> over the group, returned to every thread.
    /// Group.DimX must be a power of two; <paramref name="scratch"/> holds at least Group.DimX floats.</summary>
    public static float Sum(ArrayView<float> scratch, float value)
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
        Group.Barrier(); // The caller may reuse scratch straight away.
        return total;
    }
}
