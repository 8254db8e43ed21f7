using System.Diagnostics;
using System.Text.Json;
using ILGPU.Runtime.Cuda;
using PromptEngine.Kernels;

namespace PromptEngine.DeviceRunner;

/// <summary>
/// The device kit's runner. Before any CUDA call: the memory plan of every shape (Llama-2-7B at B8 × T512 among them)
/// and every model folder torch_baseline.py needs, so the PyTorch half runs whatever happens next. On a GPU machine:
/// (0) does the CUDA accelerator come up and run a trivial kernel (else retry with a pinned PTX ISA); (1) every GPU
/// kernel on CUDA against the CPU-shaped kernels on the CPU accelerator, at random inputs; (2) Linear GFLOP/s at
/// float32, half and bfloat16 weights; (3) train-step tokens/s for stories15M- and GPT-2-124M-shaped models (seeded
/// random float32 weights, the same folders PyTorch trains on) and Qwen2-0.5B- and Llama-2-7B-shaped ones (bfloat16
/// weights generated on the device). Results go to engine.json, saved after every step and shape; the log to stdout.
/// With <c>--cpu</c> the same steps run on the CPU accelerator (GPU-shaped kernels) at small sizes.
/// </summary>
public static class Program
{
    public static int Main(string[] args)
    {
        RunOptions options;
        try { options = RunOptions.Parse(args); }
        catch (ArgumentException error)
        {
            Console.Error.WriteLine($"PromptEngine.DeviceRunner: {error.Message}");
            return 1;
        }
        var results = new Results();
        var total = Stopwatch.StartNew();
        ShowTrace();
        Log($"PromptEngine device runner: {(options.Cpu ? "CPU mode" : "CUDA mode")}, work folder {options.Work}, output {options.Out}, budget {options.BudgetSeconds} s");
        Directory.CreateDirectory(options.Work);
        Directory.CreateDirectory(options.Out);

        KernelContext? device = null;
        try
        {
            // No GPU needed for these two: they run before the probe so that a failing CUDA start loses neither.
            Step("memory plans", () =>
            {
                foreach (var shape in BenchmarkShapes.Device.Concat(options.Cpu ? options.Shapes : []))
                {
                    results.Plans.Add(shape.DescribePlan());
                    Log($"plan: {shape.DescribePlan()}");
                }
            });
            if (!options.Skip.Contains("train"))
                Step("model folders", () => TrainBenchmark.WriteFolders(options, results));
            if (!options.Skip.Contains("ptx"))
                Step("PTX compile", () => PtxCheck.Run(results));
            device = options.Cpu ? KernelContext.Create(KernelBackend.Cpu, KernelShape.Gpu) : Probe.OpenCuda(results, options.PinnedIsa);
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
            // The matmuls take seconds; the train shapes, up to Llama-2-7B, may run into the device script's timeout.
            if (!options.Skip.Contains("matmul"))
                Step("matmul benchmark", () => MatmulBenchmark.Run(device, results, options));
            if (!options.Skip.Contains("train"))
                Step("train-step benchmark", () => TrainBenchmark.Run(device, reference, results, options, () => Save(options, results), total));
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

    /// <summary>Writes engine.json; called after every step and every train shape, so a run cut short keeps what it measured.</summary>
    internal static string Save(RunOptions options, Results results)
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

    static bool traceShown;

    /// <summary>ILGPU reports ptxas and driver JIT errors through <see cref="Trace"/> only; echo them on stdout so that
    /// the device log shows why a kernel failed to load.</summary>
    static void ShowTrace()
    {
        if (traceShown) return;
        traceShown = true;
        Trace.Listeners.Add(new ConsoleTraceListener());
        Trace.AutoFlush = true;
    }

    /// <summary>Writes one timestamped line to stdout (the device script tees it into the output folder).</summary>
    public static void Log(string line) => Console.WriteLine($"[{DateTime.UtcNow:HH:mm:ss}] {line}");
}

/// <summary>Command line: <c>[--cpu] [--small] [--out DIR] [--work DIR] [--skip ptx,checks,train,matmul] [--isa 85] [--budget SECONDS]</c>.
/// <c>--small</c>: the toy train shapes of the CPU mode, on CUDA too (a quick smoke run); <c>--isa</c> pins the PTX ISA
/// the probe uses (no fallback to others); <c>--budget</c>: train shapes whose turn comes later are skipped (default 150 s).</summary>
public sealed record RunOptions(bool Cpu, string Out, string Work, HashSet<string> Skip, CudaInstructionSet? PinnedIsa, int BudgetSeconds = 150,
    bool Small = false)
{
    /// <summary>The train-step shapes of this run.</summary>
    public BenchmarkShape[] Shapes => Cpu || Small ? BenchmarkShapes.Cpu : BenchmarkShapes.Device;

    public static RunOptions Parse(string[] args)
    {
        bool cpu = false, small = false;
        string output = Environment.GetEnvironmentVariable("OUT") is { Length: > 0 } o ? o : "devicekit-out";
        string work = Path.Combine(Path.GetTempPath(), "pe-devicekit");
        var skip = new HashSet<string>();
        CudaInstructionSet? isa = null;
        int budget = 150;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"option {args[i]} needs a value");
            switch (args[i])
            {
                case "--cpu": cpu = true; break;
                case "--small": small = true; break;
                case "--out": output = Next(); break;
                case "--work": work = Next(); break;
                case "--skip": skip.UnionWith(Next().Split(',', StringSplitOptions.RemoveEmptyEntries)); break;
                case "--isa":
                    // CudaInstructionSet is a struct with one static field per ISA ILGPU knows, not an enum.
                    var name = "ISA_" + Next();
                    isa = typeof(CudaInstructionSet).GetField(name, System.Reflection.BindingFlags.Public | System.Reflection.BindingFlags.Static)?.GetValue(null)
                        is CudaInstructionSet known ? known
                        : throw new ArgumentException($"--isa: {name} is not an ILGPU CudaInstructionSet (e.g. 85 for PTX 8.5)");
                    break;
                case "--budget":
                    var text = Next();
                    budget = int.TryParse(text, out var seconds) && seconds > 0 ? seconds
                        : throw new ArgumentException($"--budget: '{text}' is not a positive number of seconds");
                    break;
                default: throw new ArgumentException($"unknown option {args[i]}; expected --cpu, --small, --out DIR, --work DIR, --skip LIST, --isa NN, --budget SECONDS");
            }
        }
        return new RunOptions(cpu, output, work, skip, isa, budget, small);
    }
}

/// <summary>Everything the runner measured, serialised to engine.json for report.py.</summary>
public sealed class Results
{
    public string Device = "";
    public List<string> Plans = [];
    public List<string> Probe = [];
    public List<CheckResult> Checks = [];
    public List<TrainResult> Train = [];
    public List<MatmulResult> Matmul = [];
    public List<string> Errors = [];
}

/// <summary>One kernel check: relative L2 error and largest absolute error against the CPU reference.</summary>
public sealed record CheckResult(string Name, double RelativeError, double MaxAbsError, double Tolerance, bool Passed);

/// <summary>One train-step measurement. <paramref name="Generated"/>: weights generated on the device, so PyTorch's
/// first loss (its own random weights) is not comparable.</summary>
public sealed record TrainResult(string Model, int Batch, int Length, int PromptTableRows, double StepMs, double TokensPerSecond,
    double ForwardMs, float FirstLoss, long DeviceBytes, string Weights, bool Generated, long WeightBytes);

/// <summary>One Linear forward measurement.</summary>
public sealed record MatmulResult(string Name, int N, int K, int M, string Weights, double Ms, double Gflops);
