using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.Kernels;

/// <summary>
/// Compiles every kernel of the kernels assembly through ILGPU's PTX backend set up for sm_90 (H100/H200), PTX ISA 7.8, without
/// a GPU, so a kernel that would only fail on CUDA (an unsupported intrinsic, a managed type, a Span) fails here.
/// Kernels are discovered by reflection: every static void method named *Kernel taking at least one ArrayView (or a
/// struct of arguments holding one), which is what a kernel looks like and what no host helper looks like, so a new
/// kernel cannot be forgotten; a generic one is compiled for every operation struct that fits it.
/// </summary>
public sealed class PtxCompileTests
{
    static IEnumerable<MethodInfo> KernelMethods()
    {
        var types = typeof(KernelContext).Assembly.GetTypes();
        var kernels = types
            .SelectMany(type => type.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(method => method.ReturnType == typeof(void) && method.Name.EndsWith("Kernel", StringComparison.Ordinal)
                && method.GetParameters().Any(p => HoldsView(p.ParameterType)));
        // A kernel generic over one operation (the elementwise family) is loaded once per operation struct: compile it
        // for every struct of the assembly that meets its constraints, so a new operation is checked as soon as it
        // exists. Bodies generic over more (Linear's weight formats) are reached through their non-generic kernels.
        return kernels.SelectMany(method => !method.IsGenericMethodDefinition ? [method]
                : method.GetGenericArguments().Length == 1 ? Instantiations(method, types) : [])
            .OrderBy(Name);
    }

    /// <summary>An ArrayView, or a struct of kernel arguments holding one (AttentionDecode.Tensors).</summary>
    static bool HoldsView(Type type) =>
        type.IsGenericType && type.GetGenericTypeDefinition() == typeof(ArrayView<>)
        || type.IsValueType && !type.IsPrimitive && !type.IsEnum
            && type.GetFields(BindingFlags.Instance | BindingFlags.Public | BindingFlags.NonPublic).Any(field => field.FieldType != type && HoldsView(field.FieldType));

    static IEnumerable<MethodInfo> Instantiations(MethodInfo method, Type[] types)
    {
        var parameter = method.GetGenericArguments().Single();
        if (!parameter.GetGenericParameterConstraints().Any(constraint => constraint.IsInterface))
            return []; // a host helper over element types (Check.Length), not a kernel over operations
        return types.Where(type => type.IsValueType && !type.IsGenericTypeDefinition
                && parameter.GetGenericParameterConstraints().All(constraint => constraint.IsAssignableFrom(type)))
            .Select(type => method.MakeGenericMethod(type));
    }

    static string Name(MethodInfo method) => method.IsGenericMethod
        ? $"{method.DeclaringType!.Name}.{method.Name}<{method.GetGenericArguments()[0].DeclaringType?.Name}.{method.GetGenericArguments()[0].Name}>"
        : $"{method.DeclaringType!.Name}.{method.Name}";

    static IEnumerable<TestCaseData> Kernels() =>
        KernelMethods().Select(method => new TestCaseData(method).SetArgDisplayNames(Name(method)));

    [Test]
    public void DiscoversTheKernels()
    {
        var names = KernelMethods().Select(Name).ToList();
        TestContext.Out.WriteLine(string.Join("\n", names));
        // Known kernels must be among those found, so a broken discovery rule cannot pass vacuously.
        Assert.That(names, Does.Contain("Linear.ForwardMicroTileKernel").And.Contain("LinearBlocked.ForwardF32Kernel")
            .And.Contain("RmsNorm.BackwardGroupKernel").And.Contain("Embedding.BackwardKernel").And.Contain("Rope.RotateKernel")
            .And.Contain("Elementwise.MapPairKernel<Tanh.Gradient>").And.Contain("Elementwise.GateBackwardKernel<SwiGlu.SiluGate>").And.Contain("Linear.BackwardWeightsKernel").And.Contain("AttentionDecode.ForwardRowKernel").And.Contain("PrefixLayout.SwapKernel"));
        Assert.That(names, Has.Count.GreaterThanOrEqualTo(15));
    }

    [TestCaseSource(nameof(Kernels))]
    public void CompilesToPtxForSm90(MethodInfo kernel)
    {
        using var context = Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90),
            CudaArchitecture.SM_90, CudaInstructionSet.ISA_78, nvvmAPI: null);
        Assert.That(backend.Architecture, Is.EqualTo(CudaArchitecture.SM_90));
        var entry = EntryPointDescription.FromExplicitlyGroupedKernel(kernel);
        var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
        // ILGPU 1.5.3 configured for sm_90 still writes ".target sm_80" (nothing sm_90-only is used); the driver
        // JIT-compiles that PTX for the H200, so we check for a real kernel entry rather than the target string.
        Assert.That(compiled.PTXAssembly, Does.Contain(".target sm_").And.Contain(".visible .entry").And.Contain("ret;"));
        TestContext.Out.WriteLine($"{kernel.Name}: {compiled.PTXAssembly.Length} characters of PTX");
    }
}
