using System.Diagnostics;
using System.Text.Json;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.DeviceRunner;

/// <summary>
/// The device kit's runner. On a GPU machine: (0) does the CUDA accelerator come up and run a trivial kernel
/// (else retry with a pinned PTX ISA); (1) every GPU kernel on CUDA against the CPU-shaped kernels on the CPU
/// accelerator, at random inputs; (2) train-step tokens/s for stories15M- and GPT-2-124M-shaped models with seeded
/// random weights, written as safetensors folders that torch_baseline.py then trains on the same batch;
/// (3) Linear GFLOP/s at float32, half and bfloat16 weights. Results go to engine.json; the log to stdout.
/// With <c>--cpu</c> the same steps run on the CPU accelerator (GPU-shaped kernels) at small sizes.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var options = RunOptions.Parse(args);
        var results = new Results();
        var total = Stopwatch.StartNew();
        Log($"PromptEngine device runner: {(options.Cpu ? "CPU mode" : "CUDA mode")}, work folder {options.Work}, output {options.Out}");
        Directory.CreateDirectory(options.Work);
        Directory.CreateDirectory(options.Out);

        KernelContext? device = null;
        try
        {
            if (!options.Skip.Contains("ptx"))
                Step("PTX compile", () => PtxCheck.Run(results));
            device = options.Cpu ? KernelContext.Create(KernelBackend.Cpu, KernelShape.Gpu) : Probe.OpenCuda(results);
            if (device is null)
            {
                Log("No working CUDA accelerator: kernel checks and engine benchmarks skipped.");
                return Finish(options, results, 2);
            }
            results.Device = Describe(device);
            Log($"Device: {results.Device}");
            using var reference = KernelContext.Create(KernelBackend.Cpu, KernelShape.Cpu);

            if (!options.Skip.Contains("checks"))
                Step("kernel checks", () => KernelChecks.Run(device, reference, results, options));
            if (!options.Skip.Contains("train"))
                Step("train-step benchmark", () => TrainBenchmark.Run(device, reference, results, options));
            if (!options.Skip.Contains("matmul"))
                Step("matmul benchmark", () => MatmulBenchmark.Run(device, results, options));
        }
        finally
        {
            device?.Dispose();
        }
        Log($"runner finished in {total.Elapsed.TotalSeconds:F1} s");
        return Finish(options, results, results.Checks.All(c => c.Passed) ? 0 : 1);

        void Step(string name, Action action)
        {
            var watch = Stopwatch.StartNew();
            Log($"== {name}");
            try { action(); }
            catch (Exception error)
            {
                // One failing step must not cost the others their device time.
                results.Errors.Add($"{name}: {error.GetType().Name}: {error.Message}");
                Log($"!! {name} failed: {error}");
            }
            Log($"== {name}: {watch.Elapsed.TotalSeconds:F1} s");
            Save(options, results); // a run cut short by the device script's timeout still leaves what it measured
        }
    }

    static int Finish(RunOptions options, Results results, int code)
    {
        Log($"wrote {Save(options, results)}; exit code {code}");
        return code;
    }

    static string Save(RunOptions options, Results results)
    {
        var path = Path.Combine(options.Out, "engine.json");
        File.WriteAllText(path, JsonSerializer.Serialize(results, new JsonSerializerOptions { WriteIndented = true, IncludeFields = true }));
        return path;
    }

    static string Describe(KernelContext context)
    {
        var a = context.Accelerator;
        string extra = a is CudaAccelerator cuda
            ? $", {cuda.Architecture}, PTX {cuda.InstructionSet}, driver {cuda.DriverVersion}, {a.NumMultiprocessors} SMs, {a.MemorySize / (1L << 30)} GiB"
            : $", {a.NumMultiprocessors} cores";
        return $"{a.Name} ({a.AcceleratorType}{extra}); kernels {context.Shape}-shaped, group {context.GroupSize}, warp {a.WarpSize}";
    }

    /// <summary>Writes one timestamped line to stdout (the device script tees it into the output folder).</summary>
    public static void Log(string line) => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {line}");
}

/// <summary>Command line: <c>[--cpu] [--out DIR] [--work DIR] [--skip ptx,checks,train,matmul] [--isa 85]</c>.</summary>
public sealed record RunOptions(bool Cpu, string Out, string Work, HashSet<string> Skip, CudaInstructionSet? PinnedIsa)
{
    public static RunOptions Parse(string[] args)
    {
        bool cpu = false;
        string output = Environment.GetEnvironmentVariable("OUT") is { Length: > 0 } o ? o : "devicekit-out";
        string work = Path.Combine(Path.GetTempPath(), "pe-devicekit");
        var skip = new HashSet<string>();
        CudaInstructionSet? isa = null;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"option {args[i]} needs a value");
            switch (args[i])
            {
                case "--cpu": cpu = true; break;
                case "--out": output = Next(); break;
                case "--work": work = Next(); break;
                case "--skip": skip.UnionWith(Next().Split(',', StringSplitOptions.RemoveEmptyEntries)); break;
                case "--isa":
                    var name = "ISA_" + Next();
                    isa = Enum.TryParse<CudaInstructionSet>(name, out var parsed) ? parsed
                        : throw new ArgumentException($"--isa: {name} is not an ILGPU CudaInstructionSet (e.g. 85 for PTX 8.5)");
                    break;
                default: throw new ArgumentException($"unknown option {args[i]}; expected --cpu, --out DIR, --work DIR, --skip LIST, --isa NN");
            }
        }
        return new RunOptions(cpu, output, work, skip, isa);
    }
}

/// <summary>Everything the runner measured, serialised to engine.json for report.py.</summary>
public sealed class Results
{
    public string Device = "";
    public List<string> Probe = [];
    public List<CheckResult> Checks = [];
    public List<TrainResult> Train = [];
    public List<MatmulResult> Matmul = [];
    public List<string> Errors = [];
}

/// <summary>One kernel check: relative L2 error and largest absolute error against the CPU reference.</summary>
public sealed record CheckResult(string Name, double RelativeError, double MaxAbsError, double Tolerance, bool Passed);

/// <summary>One train-step measurement.</summary>
public sealed record TrainResult(string Model, int Batch, int Length, int PromptRows, double StepMs, double TokensPerSecond,
    double ForwardMs, float FirstLoss, long DeviceBytes);

/// <summary>One Linear forward measurement.</summary>
public sealed record MatmulResult(string Name, int N, int K, int M, string Weights, double Ms, double Gflops);
