using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.Kernels;

/// <summary>The kernel context's op table (each launcher created once, whoever asks first) and the one convention for
/// splitting items over threads (<see cref="KernelContext.RunConfig"/> with <see cref="ThreadRun"/>), in both shapes.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class KernelContextTests(KernelShape shape) : KernelTestBase(shape)
{
    static void CountKernel(ArrayView<int> visits, long count, int perThread)
    {
        var run = ThreadRun.Of(count, perThread);
        for (long i = run.Start; i < run.End; i++)
            Atomic.Add(ref visits[i], 1);
    }

    [TestCase(1)]
    [TestCase(7)]
    [TestCase(1000)]
    [TestCase(12345)]
    public void ThreadRunsVisitEveryItemOnce(int count)
    {
        using var visits = Kernels.Accelerator.Allocate1D<int>(count);
        visits.MemSetToZero();
        var kernel = Kernels.Accelerator.LoadStreamKernel<ArrayView<int>, long, int>(CountKernel);
        kernel(Kernels.RunConfig(count, out int perThread), visits.View, count, perThread);
        Kernels.Synchronize();
        var counted = visits.GetAsArray1D();
        Assert.That(counted, Has.All.EqualTo(1), $"{count} items, {perThread} per thread");
        if (Shape == KernelShape.Gpu)
            Assert.That(perThread, Is.EqualTo(1), "a GPU-shaped launch gives each thread one item (coalesced)");
    }

    [Test]
    public void EachLauncherIsCreatedOnceWhoeverAsksFirst()
    {
        var launchers = new object[16];
        Parallel.For(0, launchers.Length, i => launchers[i] = i % 2 == 0 ? Kernels.Gelu : Kernels.Linear);
        Assert.That(launchers.Where((_, i) => i % 2 == 0), Has.All.SameAs(Kernels.Gelu));
        Assert.That(launchers.Where((_, i) => i % 2 == 1), Has.All.SameAs(Kernels.Linear));
        Assert.That(Kernels.LinearBlocked, Is.SameAs(Kernels.LinearBlocked));
    }
}
