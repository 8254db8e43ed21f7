using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.DeviceRunner;

/// <summary>Step 0a, no GPU needed: compiles every kernel of the kernels assembly to PTX for sm_90, inside this very
/// publish, so a trimmed kit that lost something ILGPU's PTX backend reflects on fails here, not on the device.
/// Kernels are found as PtxCompileTests finds them: static void methods taking an ArrayView.</summary>
public static class PtxCheck
{
    public static void Run(Results results)
    {
        var kernels = typeof(KernelContext).Assembly.GetTypes()
            .SelectMany(type => type.GetMethods(BindingFlags.Static | BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.DeclaredOnly))
            .Where(method => method.ReturnType == typeof(void) && !method.IsGenericMethodDefinition
                && method.GetParameters().Any(p => p.ParameterType.IsGenericType && p.ParameterType.GetGenericTypeDefinition() == typeof(ArrayView<>)))
            .OrderBy(method => method.DeclaringType!.Name + "." + method.Name)
            .ToList();
        using var context = Context.Create(builder => builder.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, new CudaCapabilityContext(CudaArchitecture.SM_90),
            CudaArchitecture.SM_90, CudaInstructionSet.ISA_78, nvvmAPI: null);
        int compiled = 0;
        long characters = 0;
        var failures = new List<string>();
        foreach (var kernel in kernels)
        {
            try
            {
                var ptx = ((PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel), KernelSpecialization.Empty)).PTXAssembly;
                if (!ptx.Contains(".visible .entry"))
                    throw new InvalidOperationException("no entry point in the PTX");
                compiled++;
                characters += ptx.Length;
            }
            catch (Exception error)
            {
                failures.Add($"{kernel.DeclaringType!.Name}.{kernel.Name}: {error.GetType().Name}: {error.Message}");
            }
        }
        bool passed = failures.Count == 0 && compiled >= 15;
        results.Checks.Add(new CheckResult($"PTX sm_90: {compiled}/{kernels.Count} kernels compiled", failures.Count, 0, 0, passed));
        Program.Log($"{(passed ? "PASS" : "FAIL")} PTX sm_90: {compiled} of {kernels.Count} kernels compiled ({characters / 1000} k characters)");
        foreach (var failure in failures)
            Program.Log($"  {failure}");
    }
}
