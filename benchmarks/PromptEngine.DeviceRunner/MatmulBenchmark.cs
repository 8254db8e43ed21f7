using System.Diagnostics;
using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using Half = ILGPU.Half;

namespace PromptEngine.DeviceRunner;

/// <summary>Step 3: the engine's Linear forward (Y = X·Wᵀ, float32 activations) in GFLOP/s, with float32, half and
/// bfloat16 weights, at a square size and at GPT-2's MLP projection; torch_baseline.py times torch.matmul on the same
/// shapes. Median of several launches after a warm-up, each timed between two synchronisations.</summary>
public static class MatmulBenchmark
{
    public static void Run(KernelContext device, Results results, RunOptions options)
    {
        var sizes = options.Cpu
            ? new[] { ("small", 128, 128, 128) }
            : new[] { ("square 4096", 4096, 4096, 4096), ("gpt2 mlp up 4096x768x3072", 4096, 768, 3072) };
        var random = new Random(3);
        var a = device.Accelerator;
        foreach (var (name, n, k, m) in sizes)
        {
            var x = RandomArray(random, (long)n * k);
            var wf = RandomArray(random, (long)m * k);
            using var xBuffer = a.Allocate1D(x);
            using var yBuffer = a.Allocate1D<float>((long)n * m);
            using var w32 = a.Allocate1D(wf);
            using var w16 = a.Allocate1D(Array.ConvertAll(wf, v => (Half)v));
            using var wbf = a.Allocate1D(Array.ConvertAll(wf, v => (ushort)(BitConverter.SingleToUInt32Bits(v) >> 16)));
            var variants = new (string Weights, Action Launch)[]
            {
                ("f32", () => device.LinearBlocked.Forward(yBuffer.View, xBuffer.View, w32.View, default, n, k, m)),
                ("f16", () => device.LinearBlocked.ForwardF16(yBuffer.View, xBuffer.View, w16.View, default, n, k, m)),
                ("bf16", () => device.LinearBlocked.ForwardBf16(yBuffer.View, xBuffer.View, wbf.View, default, n, k, m)),
            };
            foreach (var (weights, launch) in variants)
            {
                launch(); // warm-up: compiles and loads
                device.Synchronize();
                var times = new List<double>();
                for (int i = 0; i < (options.Cpu ? 3 : 10); i++)
                {
                    var watch = Stopwatch.StartNew();
                    launch();
                    device.Synchronize();
                    times.Add(watch.Elapsed.TotalMilliseconds);
                }
                times.Sort();
                double ms = times[times.Count / 2];
                double gflops = 2.0 * n * k * m / (ms * 1e6);
                results.Matmul.Add(new MatmulResult(name, n, k, m, weights, ms, gflops));
                Program.Log($"matmul {name} ({n}x{k}x{m}) weights {weights}: {ms:F3} ms = {gflops:F0} GFLOP/s");
            }
        }
    }

    static float[] RandomArray(Random random, long length)
    {
        var values = new float[length];
        for (long i = 0; i < length; i++) values[i] = (float)(2 * random.NextDouble() - 1);
        return values;
    }
}
