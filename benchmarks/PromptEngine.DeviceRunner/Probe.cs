using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.DeviceRunner;

/// <summary>Step 0: does ILGPU create the CUDA accelerator and run a kernel? ILGPU 1.5.3's driver table stops at
/// CUDA 12.9; on a newer driver (the H200's 580 / CUDA 13) it may refuse or pick a wrong ISA, so each failure is
/// retried with the PTX ISA pinned (8.5, 8.3, 8.0, 7.8: all JIT-compiled by any newer driver for sm_90).</summary>
public static class Probe
{
    static void FillKernel(Index1D i, ArrayView<int> values) => values[i] = 3 * i + 1;

    /// <summary>Opens the CUDA accelerator: with <paramref name="pinnedIsa"/> only that PTX ISA is tried, else ILGPU's
    /// default and then the pinned fallbacks.</summary>
    public static KernelContext? OpenCuda(Results results, CudaInstructionSet? pinnedIsa = null)
    {
        LogDriverLibraries(results);
        try
        {
            // What ILGPU's driver binding reads, before any device enumeration can hide a failure.
            var status = CudaAPI.CurrentAPI.GetDriverVersion(out var driver);
            Report(results, $"libcuda driver API: {status}, driver version {driver}");
        }
        catch (Exception error)
        {
            Report(results, $"libcuda driver API: unavailable ({error.GetType().Name}: {error.Message})");
        }
        CudaInstructionSet?[] attempts = pinnedIsa is { } forced ? [forced]
            : [null, CudaInstructionSet.ISA_85, CudaInstructionSet.ISA_83, CudaInstructionSet.ISA_80, CudaInstructionSet.ISA_78];
        foreach (var isa in attempts)
        {
            string label = isa is null ? "ILGPU's default ISA" : $"pinned {isa}";
            KernelContext? context = null;
            try
            {
                context = KernelContext.CreateCuda(isa);
                var accelerator = context.Accelerator;
                using var buffer = accelerator.Allocate1D<int>(1000);
                var kernel = accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<int>>(FillKernel);
                kernel(1000, buffer.View);
                accelerator.Synchronize();
                var values = buffer.GetAsArray1D();
                int wrong = Enumerable.Range(0, 1000).Count(i => values[i] != 3 * i + 1);
                if (wrong > 0)
                    throw new InvalidOperationException($"the trivial kernel wrote {wrong} wrong values of 1000");
                var cuda = (CudaAccelerator)accelerator;
                string line = $"probe with {label}: OK ({accelerator.Name}, {cuda.Architecture}, {cuda.InstructionSet}, driver {cuda.DriverVersion})";
                Report(results, line);
                return context;
            }
            catch (Exception error)
            {
                context?.Dispose();
                string line = $"probe with {label}: FAILED {error.GetType().Name}: {error.Message}";
                // No early exit on "no device": an unknown driver version may hide the device from enumeration
                // under ILGPU's default and show it with a pinned ISA.
                Report(results, line);
            }
        }
        return null;
    }

    /// <summary>ILGPU P/Invokes the library <c>cuda</c>, which .NET resolves as <c>libcuda.so</c> and never as the
    /// driver's <c>libcuda.so.1</c>, and swallows the load failure ("no CUDA device"). run_on_device.sh links the real
    /// libcuda.so.1 as libcuda.so in a folder on LD_LIBRARY_PATH; this says whether each name loads.</summary>
    public static void LogDriverLibraries(Results results)
    {
        Report(results, $"LD_LIBRARY_PATH={Environment.GetEnvironmentVariable("LD_LIBRARY_PATH")}");
        foreach (var name in new[] { "libcuda.so", "libcuda.so.1" })
        {
            bool loaded = NativeLibrary.TryLoad(name, out _); // left loaded: ILGPU is about to use it
            Report(results, $"NativeLibrary.TryLoad(\"{name}\"): {(loaded ? "loaded" : "not found")}");
        }
    }

    static void Report(Results results, string line)
    {
        results.Probe.Add(line);
        Program.Log(line);
    }
}
