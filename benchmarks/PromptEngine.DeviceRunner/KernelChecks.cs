using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using Half = ILGPU.Half;

namespace PromptEngine.DeviceRunner;

/// <summary>Step 1: each op's GPU-shaped kernels on the device against the CPU-shaped kernels on the CPU accelerator
/// (which the test suite checks against double-precision references), on fresh random inputs. Passes when
/// ‖device − cpu‖ / ‖cpu‖ is under the tolerance: float32 accumulated in a different order lands far under 1e-4.</summary>
public static class KernelChecks
{
    const double Float32Tolerance = 1e-4;

    /// <summary>Runs <paramref name="launch"/> on a context with the given host inputs uploaded and returns the
    /// outputs named by index, downloaded. Outputs are poisoned with NaN first, so an unwritten element fails.</summary>
    static float[][] On(KernelContext context, float[][] inputs, long[] outputLengths, Action<KernelContext, ArrayView<float>[], ArrayView<float>[]> launch)
    {
        var a = context.Accelerator;
        var inBuffers = inputs.Select(values => a.Allocate1D(values)).ToArray();
        var outBuffers = outputLengths.Select(length =>
        {
            var poison = new float[length];
            Array.Fill(poison, float.NaN);
            return a.Allocate1D(poison);
        }).ToArray();
        try
        {
            launch(context, inBuffers.Select(b => (ArrayView<float>)b.View).ToArray(), outBuffers.Select(b => (ArrayView<float>)b.View).ToArray());
            context.Synchronize();
            return outBuffers.Select(b => b.GetAsArray1D()).ToArray();
        }
        finally
        {
            foreach (var b in inBuffers) b.Dispose();
            foreach (var b in outBuffers) b.Dispose();
        }
    }

    static void Compare(Results results, string name, float[][] device, float[][] cpu, string[] outputNames, double tolerance = Float32Tolerance)
    {
        for (int o = 0; o < device.Length; o++)
        {
            double diff = 0, norm = 0, maxAbs = 0;
            bool finite = true;
            for (int i = 0; i < cpu[o].Length; i++)
            {
                double d = (double)device[o][i] - cpu[o][i];
                if (!double.IsFinite(device[o][i]) && device[o][i] != cpu[o][i]) finite = false;
                if (double.IsFinite(d))
                {
                    diff += d * d;
                    maxAbs = Math.Max(maxAbs, Math.Abs(d));
                }
                if (double.IsFinite(cpu[o][i])) norm += (double)cpu[o][i] * cpu[o][i];
            }
            double relative = Math.Sqrt(diff / Math.Max(norm, 1e-30));
            var check = new CheckResult($"{name} {outputNames[o]}", relative, maxAbs, tolerance, finite && relative <= tolerance);
            results.Checks.Add(check);
            Program.Log($"{(check.Passed ? "PASS" : "FAIL")} {check.Name}: rel {relative:E2}, max |err| {maxAbs:E2} (tol {tolerance:E0}){(finite ? "" : ", non-finite values")}");
        }
    }

    static float[] Random(Random random, long length, float scale = 1f)
    {
        var values = new float[length];
        for (long i = 0; i < length; i++) values[i] = scale * (float)(2 * random.NextDouble() - 1);
        return values;
    }

    static ushort ToBf16(float value)
    {
        uint bits = BitConverter.SingleToUInt32Bits(value);
        return (ushort)((bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16);
    }

    public static void Run(KernelContext device, KernelContext reference, Results results, RunOptions options)
    {
        bool small = options.Cpu;
        var random = new Random(2026);
        void Check(string name, float[][] inputs, long[] outputs, string[] outputNames, Action<KernelContext, ArrayView<float>[], ArrayView<float>[]> launch,
            double tolerance = Float32Tolerance) =>
            Compare(results, name, On(device, inputs, outputs, launch), On(reference, inputs, outputs, launch), outputNames, tolerance);

        // Linear at a projection of stories15M (288 → 768) and ragged edges; 16-bit weights against float32 on the widened values.
        var (n, k, m) = small ? (37, 45, 29) : (515, 288, 770);
        var x = Random(random, (long)n * k);
        var w = Random(random, (long)m * k, 0.1f);
        var bias = Random(random, m, 0.1f);
        var dY = Random(random, (long)n * m);
        var dXStart = Random(random, (long)n * k);
        Check($"Linear.Forward {n}x{k}x{m}", [x, w, bias], [(long)n * m], ["Y"],
            (c, i, o) => c.Linear.Forward(o[0], i[0], i[1], i[2], n, k, m));
        Check($"Linear.Backward += {n}x{k}x{m}", [dY, w, dXStart], [(long)n * k], ["dX"],
            (c, i, o) => { i[2].CopyTo(o[0]); c.Linear.Backward(o[0], i[0], i[1], n, k, m, accumulate: true); });

        var wHalf = Array.ConvertAll(w, v => (Half)v);
        var wHalfWide = Array.ConvertAll(wHalf, v => (float)v);
        var wBf16 = Array.ConvertAll(w, ToBf16);
        var wBf16Wide = Array.ConvertAll(wBf16, v => BitConverter.UInt32BitsToSingle((uint)v << 16));
        foreach (var (format, wide) in new[] { ("F16", wHalfWide), ("BF16", wBf16Wide) })
        {
            var device16 = On(device, [x, dY, bias], [(long)n * m, (long)n * k], (c, i, o) =>
            {
                if (format == "F16")
                {
                    using var wb = c.Accelerator.Allocate1D(wHalf);
                    c.LinearBlocked.ForwardF16(o[0], i[0], wb.View, i[2], n, k, m);
                    c.LinearBlocked.BackwardF16(o[1], i[1], wb.View, n, k, m);
                    c.Synchronize();
                }
                else
                {
                    using var wb = c.Accelerator.Allocate1D(wBf16);
                    c.LinearBlocked.ForwardBf16(o[0], i[0], wb.View, i[2], n, k, m);
                    c.LinearBlocked.BackwardBf16(o[1], i[1], wb.View, n, k, m);
                    c.Synchronize();
                }
            });
            var cpu16 = On(reference, [x, dY, bias, wide], [(long)n * m, (long)n * k], (c, i, o) =>
            {
                c.Linear.Forward(o[0], i[0], i[3], i[2], n, k, m);
                c.Linear.Backward(o[1], i[1], i[3], n, k, m);
            });
            Compare(results, $"LinearBlocked {format} weights {n}x{k}x{m}", device16, cpu16, ["Y", "dX"]);
        }

        // Attention at stories15M's heads (6 × 48) with grouped kv heads, left padding and a masked middle key.
        var (b, t, h, kv, hs) = small ? (2, 19, 4, 2, 8) : (4, 256, 6, 2, 48);
        var q = Random(random, (long)b * t * h * hs);
        var kk = Random(random, (long)b * t * kv * hs);
        var v = Random(random, (long)b * t * kv * hs);
        var dOut = Random(random, (long)b * t * h * hs);
        var mask = new int[b * t];
        for (int row = 0; row < b; row++)
            for (int j = 0; j < t; j++)
                mask[row * t + j] = row == 0 && j < 3 || row == 1 && j == t / 2 ? 0 : 1;
        Check($"Attention B{b} T{t} H{h} KV{kv} hs{hs}", [q, kk, v, dOut], [q.Length, (long)b * h * t, q.Length, kk.Length, v.Length],
            ["out", "lse", "dQ", "dK", "dV"], (c, i, o) =>
            {
                using var maskBuffer = c.Accelerator.Allocate1D(mask);
                using var delta = c.Accelerator.Allocate1D<float>((long)b * h * t);
                c.Attention.Forward(o[0], o[1], i[0], new(i[1], i[2]), maskBuffer.View, new(b, t, h, kv, hs));
                c.Attention.Backward(o[2], new(o[3], o[4]), delta.View, i[3], i[0], new(i[1], i[2]), maskBuffer.View, o[0], o[1], new(b, t, h, kv, hs));
                c.Synchronize();
            });

        // Norms with the warp-shuffle group reductions.
        var (rows, channels) = small ? (7, 37) : (1024, 768);
        var input = Random(random, (long)rows * channels);
        var scale = Random(random, channels);
        var shift = Random(random, channels, 0.1f);
        var dNorm = Random(random, (long)rows * channels);
        Check($"RmsNorm {rows}x{channels}", [input, scale, dNorm], [input.Length, rows, input.Length], ["out", "rstd", "dX"], (c, i, o) =>
        {
            c.RmsNorm.Forward(o[0], i[0], i[1], o[1], rows, channels, 1e-5f);
            c.RmsNorm.Backward(o[2], i[2], i[0], i[1], o[1], rows, channels);
        });
        // The fused residual + RMSNorm (GPU-only) against Residual then RmsNorm on the CPU.
        var residualDevice = On(device, [input, dNorm, scale], [input.Length, input.Length, rows], (c, i, o) =>
            c.ResidualRmsNorm.Forward(o[0], o[1], o[2], i[0], i[1], i[2], rows, channels, 1e-5f));
        var residualCpu = On(reference, [input, dNorm, scale], [input.Length, input.Length, rows], (c, i, o) =>
        {
            c.Residual.Forward(o[0], i[0], i[1], input.Length);
            c.RmsNorm.Forward(o[1], o[0], i[2], o[2], rows, channels, 1e-5f);
        });
        Compare(results, $"ResidualRmsNorm {rows}x{channels}", residualDevice, residualCpu, ["residual", "out", "rstd"]);
        Check($"LayerNorm {rows}x{channels}", [input, scale, shift, dNorm], [input.Length, rows, rows, input.Length], ["out", "mean", "rstd", "dX"], (c, i, o) =>
        {
            c.LayerNorm.Forward(o[0], i[0], i[1], i[2], o[1], o[2], rows, channels, 1e-5f);
            c.LayerNorm.Backward(o[3], i[3], i[0], i[1], o[1], o[2], rows, channels);
        });
        // Gate and up as one (rows, 2·channels) tensor: any values serve, the device is compared with the CPU.
        Check($"SwiGlu {rows}x{channels}", [input.Concat(scale.Concat(input).Take(input.Length)).ToArray(), dNorm], [input.Length, 2 * input.Length],
            ["out", "dGateUp"], (c, i, o) =>
            {
                c.SwiGlu.Forward(o[0], i[0], rows, channels);
                c.SwiGlu.Backward(o[1], i[1], i[0], rows, channels);
            });
        Check($"Gelu {rows}x{channels}", [input, dNorm], [input.Length, input.Length], ["out", "dX"], (c, i, o) =>
        {
            c.Gelu.Forward(o[0], i[0], input.Length);
            c.Gelu.Backward(o[1], i[1], i[0], input.Length);
        });
    }
}
