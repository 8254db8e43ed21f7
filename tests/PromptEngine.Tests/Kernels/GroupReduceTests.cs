using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.Kernels;

/// <summary>The group sum and max (warp-shuffle butterfly, then warps through shared memory; a shared-memory tree
/// for groups narrower than a warp) on the CPU device, whose warps have two lanes, at every group size it offers.</summary>
public sealed class GroupReduceTests() : KernelTestBase(KernelShape.Gpu)
{
    static void ReduceKernel(ArrayView<float> sums, ArrayView<float> maxima, ArrayView<float> input)
    {
        var scratch = SharedMemory.GetDynamic<float>();
        float value = input[Grid.IdxX * Group.DimX + Group.IdxX];
        float sum = GroupReduce.Sum(scratch, value);
        float max = GroupReduce.Max(scratch, value);
        // Every thread must receive the result: each writes its own copy.
        sums[Grid.IdxX * Group.DimX + Group.IdxX] = sum;
        maxima[Grid.IdxX * Group.DimX + Group.IdxX] = max;
    }

    [TestCase(1)]
    [TestCase(2)]
    [TestCase(4)]
    [TestCase(8)]
    [TestCase(16)]
    public void EveryThreadGetsTheGroupsSumAndMax(int groupSize)
    {
        const int groups = 3;
        var random = new Random(groupSize);
        var input = RandomValues(random, groups * groupSize);
        using var inputBuffer = Upload(input);
        using var sums = Poisoned(input.Length);
        using var maxima = Poisoned(input.Length);
        var kernel = Kernels.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>>(ReduceKernel);
        kernel(new KernelConfig(groups, groupSize, SharedMemoryConfig.RequestDynamic<float>(groupSize)), sums.View, maxima.View, inputBuffer.View);
        var expectedSums = new double[input.Length];
        var expectedMaxima = new double[input.Length];
        for (int g = 0; g < groups; g++)
        {
            var members = input.Skip(g * groupSize).Take(groupSize).ToArray();
            double sum = members.Sum(), max = members.Max();
            for (int i = 0; i < groupSize; i++)
            {
                expectedSums[g * groupSize + i] = sum;
                expectedMaxima[g * groupSize + i] = max;
            }
        }
        // Float sums of ≤ 16 values below 1 against double: a few ulps. The max is exact.
        TensorAssert.Close($"sum, groups of {groupSize}", Download(sums), expectedSums, 1e-6, 1e-6);
        TensorAssert.Close($"max, groups of {groupSize}", Download(maxima), expectedMaxima, 0, 0);
    }
}
