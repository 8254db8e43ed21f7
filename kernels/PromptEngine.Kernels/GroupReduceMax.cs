using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Device helper for the GPU-shaped softmax kernels: the maximum across one group through shared memory.</summary>
/// <remarks>The same fixed tree as <see cref="GroupReduce.Sum"/>, kept in its own file so the softmax ops
/// (attention, cross-entropy) bring their helper with them.</remarks>
internal static class GroupReduceMax
{
    /// <summary>Maximum of <paramref name="value"/> over the group, returned to every thread (−∞ when all are −∞).
    /// Group.DimX must be a power of two; <paramref name="scratch"/> holds at least Group.DimX floats.</summary>
    public static float Max(ArrayView<float> scratch, float value)
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
        Group.Barrier(); // The caller may reuse scratch straight away.
        return total;
    }
}
