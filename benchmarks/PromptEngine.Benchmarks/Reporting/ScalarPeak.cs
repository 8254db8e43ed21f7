using System.Diagnostics;
using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>The machine's scalar float FMA peak and SIMD width, the yardstick for the engine's efficiency.</summary>
/// <remarks>
/// ILGPU's CPU accelerator compiles kernels to scalar code, so the ceiling for the engine's kernels is one scalar FMA per
/// FMA port per cycle, not the SIMD peak a vectorised library (TorchSharp) reaches. <see cref="Measure"/> runs
/// <see cref="Chains"/> independent chains of <c>MathF.FusedMultiplyAdd</c> (the JIT emits one scalar
/// <c>vfmadd…ss</c> per call when the CPU has FMA3; check with <c>DOTNET_JitDisasm=FmaChains</c>): enough chains to cover
/// the FMA latency (4 cycles) on two ports, so the loop is throughput-bound. Each FMA counts as 2 FLOP.
/// </remarks>
public static class ScalarPeak
{
    /// <summary>Independent accumulators per thread: latency 4 × 2 ports = 8 in flight, doubled for margin.</summary>
    public const int Chains = 16;

    /// <summary>FMAs per thread per timed run: about 0.1–0.3 s at a few GFLOP/s.</summary>
    const long FmasPerRun = 1L << 29;

    /// <summary>One measurement.</summary>
    /// <param name="Threads">Threads running chains at once.</param>
    /// <param name="GigaFlops">Sum over the threads: 2 × FMAs / wall seconds / 1e9 (the best of the runs).</param>
    public sealed record Peak(int Threads, double GigaFlops);

    /// <summary>The SIMD width and ISA extensions the .NET runtime sees (what TorchSharp's kernels can use, ours cannot).</summary>
    public static string SimdDescription() =>
        $"Vector<float>.Count = {Vector<float>.Count} ({Vector<float>.Count * 32} bits); Avx512F {Avx512F.IsSupported}, Avx2 {Avx2.IsSupported}, Fma {Fma.IsSupported}";

    /// <summary>Best of <paramref name="runs"/> timed runs of the FMA chains on <paramref name="threads"/> threads at once.</summary>
    public static Peak Measure(int threads, int runs = 3)
    {
        FmaChains(1 << 16); // JIT the loop (tiered compilation: the attribute below skips tier 0)
        double best = 0;
        for (var r = 0; r < runs; r++)
        {
            using var start = new Barrier(threads + 1);
            var workers = Enumerable.Range(0, threads).Select(_ => new Thread(() =>
            {
                start.SignalAndWait();
                Sink(FmaChains(FmasPerRun / Chains));
            })).ToList();
            foreach (var worker in workers) worker.Start();
            start.SignalAndWait();
            var clock = Stopwatch.StartNew();
            foreach (var worker in workers) worker.Join();
            best = Math.Max(best, 2.0 * FmasPerRun * threads / clock.Elapsed.TotalSeconds / 1e9);
        }
        return new Peak(threads, best);
    }

    /// <summary><paramref name="iterations"/> × <see cref="Chains"/> FMAs in independent chains. Each chain converges to
    /// a / (1 − m) ≈ 0.84 and stays finite and normal, so no denormal or overflow slows it down.</summary>
    [MethodImpl(MethodImplOptions.NoInlining | MethodImplOptions.AggressiveOptimization)]
    public static float FmaChains(long iterations)
    {
        const float m = 0.9999999f, a = 1e-7f;
        float c0 = 0, c1 = 0.01f, c2 = 0.02f, c3 = 0.03f, c4 = 0.04f, c5 = 0.05f, c6 = 0.06f, c7 = 0.07f;
        float c8 = 0.08f, c9 = 0.09f, c10 = 0.1f, c11 = 0.11f, c12 = 0.12f, c13 = 0.13f, c14 = 0.14f, c15 = 0.15f;
        for (long i = 0; i < iterations; i++)
        {
            c0 = MathF.FusedMultiplyAdd(c0, m, a);
            c1 = MathF.FusedMultiplyAdd(c1, m, a);
            c2 = MathF.FusedMultiplyAdd(c2, m, a);
            c3 = MathF.FusedMultiplyAdd(c3, m, a);
            c4 = MathF.FusedMultiplyAdd(c4, m, a);
            c5 = MathF.FusedMultiplyAdd(c5, m, a);
            c6 = MathF.FusedMultiplyAdd(c6, m, a);
            c7 = MathF.FusedMultiplyAdd(c7, m, a);
            c8 = MathF.FusedMultiplyAdd(c8, m, a);
            c9 = MathF.FusedMultiplyAdd(c9, m, a);
            c10 = MathF.FusedMultiplyAdd(c10, m, a);
            c11 = MathF.FusedMultiplyAdd(c11, m, a);
            c12 = MathF.FusedMultiplyAdd(c12, m, a);
            c13 = MathF.FusedMultiplyAdd(c13, m, a);
            c14 = MathF.FusedMultiplyAdd(c14, m, a);
            c15 = MathF.FusedMultiplyAdd(c15, m, a);
        }
        return c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7 + c8 + c9 + c10 + c11 + c12 + c13 + c14 + c15;
    }

    static float sink;

    /// <summary>Keeps the chains' result alive so the JIT cannot drop the loop.</summary>
    static void Sink(float value) => Volatile.Write(ref sink, value);
}
