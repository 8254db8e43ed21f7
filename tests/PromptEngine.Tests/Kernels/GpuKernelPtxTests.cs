using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.Kernels;

/// <summary>Reads the sm_90 PTX of the GPU kernels for the instructions their design depends on, so a change that
/// quietly loses them (a reduction back on shared memory, accumulators spilled to local memory, weights widened in a
/// loop instead of by one conversion) fails without a GPU. PtxCompileTests checks that every kernel compiles.</summary>
public sealed class GpuKernelPtxTests
{
    static string Ptx(Type type, string kernel)
    {
        var method = type.GetMethod(kernel, BindingFlags.Static | BindingFlags.NonPublic | BindingFlags.Public)
            ?? throw new MissingMethodException(type.Name, kernel);
        using var context = Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90),
            CudaArchitecture.SM_90, CudaInstructionSet.ISA_78, nvvmAPI: null);
        var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), KernelSpecialization.Empty);
        return compiled.PTXAssembly;
    }

    static int Count(string ptx, string pattern) => Regex.Matches(ptx, pattern).Count;

    [TestCase(typeof(RmsNorm), "ForwardGroupKernel")]
    [TestCase(typeof(LayerNorm), "BackwardGroupKernel")]
    [TestCase(typeof(CrossEntropy), "LossGroupKernel")]
    public void GroupReductionsUseWarpShuffles(Type type, string kernel)
    {
        var ptx = Ptx(type, kernel);
        Assert.That(Count(ptx, @"shfl\.sync\.bfly"), Is.GreaterThan(0), $"{type.Name}.{kernel}: no butterfly shuffle in its PTX");
    }

    [TestCase("ForwardF32Kernel")]
    [TestCase("BackwardF32Kernel")]
    [TestCase("ForwardBf16Kernel")]
    [TestCase("ForwardF16Kernel")]
    public void LinearBlockedKeepsItsSixteenAccumulatorsInRegisters(string kernel)
    {
        var ptx = Ptx(typeof(LinearBlocked), kernel);
        int fmas = Count(ptx, @"\bfma\.rn\.f32\b") + Count(ptx, @"\bmul\.f32\b.*\n\s*add\.f32");
        TestContext.Out.WriteLine($"{kernel}: {fmas} fma.rn.f32, {Count(ptx, @"ld\.shared")} ld.shared, {Count(ptx, @"\.local")} .local");
        Assert.That(fmas, Is.GreaterThanOrEqualTo(16), "the 4×4 register block should unroll into 16 multiply-adds per step");
        Assert.That(Count(ptx, @"\bld\.local|\bst\.local"), Is.Zero, "accumulators or operands went to local memory");
    }

    [Test]
    public void HalfWeightsAreWidenedByOneConversion()
    {
        Assert.That(Count(Ptx(typeof(LinearBlocked), "ForwardF16Kernel"), @"cvt\.f32\.f16"), Is.GreaterThan(0));
        Assert.That(Count(Ptx(typeof(LinearBlocked), "ForwardBf16Kernel"), @"\bshl\.b32\b"), Is.GreaterThan(0), "bf16 widens by a 16-bit shift");
    }
}
