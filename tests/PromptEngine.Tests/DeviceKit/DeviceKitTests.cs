using System.Text.Json;
using PromptEngine.DeviceRunner;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using DeviceRunnerProgram = PromptEngine.DeviceRunner.Program;

namespace PromptEngine.Tests.DeviceKit;

/// <summary>The device kit without a GPU: the runner's <c>--cpu</c> dry run end to end (what run_on_device.sh runs on
/// CUDA, at toy sizes on the CPU accelerator), its command line, and the memory plan it prints for Llama-2-7B.</summary>
[NonParallelizable]
public class DeviceKitTests
{
    /// <summary>The whole runner in --cpu mode: plans, folders, kernel checks (GPU-shaped kernels against CPU-shaped ones),
    /// the tiny engines, both kinds of train shape (folder float32; generated bfloat16 with GQA) and the matmuls. The PTX
    /// step is skipped as on the device (GpuKernelPtxTests compiles every kernel to sm_90).</summary>
    [Test]
    public void CpuDryRunPassesAndLeavesWhatTorchBaselineReads()
    {
        var root = Directory.CreateTempSubdirectory("pe-kit-").FullName;
        try
        {
            string output = Path.Combine(root, "out"), work = Path.Combine(root, "work");
            int code = DeviceRunnerProgram.Main(["--cpu", "--out", output, "--work", work, "--skip", "ptx"]);
            using var engine = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "engine.json")));
            var json = engine.RootElement;
            Assert.That(json.GetProperty("Errors").GetArrayLength(), Is.Zero, json.GetProperty("Errors").ToString());
            var checks = json.GetProperty("Checks").EnumerateArray().ToList();
            Assert.That(checks, Has.Count.GreaterThanOrEqualTo(25));
            Assert.That(checks.Where(c => !c.GetProperty("Passed").GetBoolean()).Select(c => c.GetProperty("Name").GetString()), Is.Empty);
            Assert.That(code, Is.Zero);

            var train = json.GetProperty("Train").EnumerateArray().ToList();
            Assert.That(train.Select(t => t.GetProperty("Model").GetString()), Is.EqualTo(BenchmarkShapes.Cpu.Select(s => s.Name)));
            foreach (var t in train)
            {
                // Random weights: the first loss sits near ln V, far from 0 and finite.
                Assert.That(t.GetProperty("FirstLoss").GetSingle(), Is.InRange(3f, 9f), t.GetProperty("Model").GetString());
                Assert.That(t.GetProperty("TokensPerSecond").GetDouble(), Is.GreaterThan(0));
            }
            Assert.That(train[1].GetProperty("Generated").GetBoolean() && train[1].GetProperty("Weights").GetString() == "Bf16");
            Assert.That(json.GetProperty("Plans").EnumerateArray().Select(p => p.GetString()), Has.Some.StartsWith("llama2-7b (6.74 B parameters, Bf16 projections) at B8 T512"));
            Assert.That(json.GetProperty("Matmul").GetArrayLength(), Is.EqualTo(3));

            // torch_baseline.py reads these; the generated shape has no weights file to read.
            var shapes = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, "shapes.json"))).RootElement.EnumerateArray().Select(s => s.GetProperty("name").GetString());
            Assert.That(shapes, Is.EqualTo(BenchmarkShapes.Cpu.Select(s => s.Name)));
            Assert.That(File.Exists(Path.Combine(work, "tiny-llama", "model.safetensors")));
            Assert.That(File.Exists(Path.Combine(work, "tiny-qwen2-gqa", "model.safetensors")), Is.False);
            foreach (var shape in BenchmarkShapes.Cpu)
            {
                using var batch = JsonDocument.Parse(File.ReadAllText(Path.Combine(work, shape.Name, "batch.json")));
                Assert.That(batch.RootElement.GetProperty("input_ids").GetArrayLength(), Is.EqualTo(shape.Batch));
                Assert.That(batch.RootElement.GetProperty("input_ids")[0].GetArrayLength(), Is.EqualTo(shape.Length - shape.PromptTableRows));
                Assert.That(batch.RootElement.GetProperty("generated").GetBoolean(), Is.EqualTo(shape.Generated));
                Assert.That(new FileInfo(Path.Combine(work, shape.Name, "prompt.f32")).Length, Is.EqualTo(4L * shape.PromptTableRows * shape.Config.HiddenSize));
            }
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    /// <summary>CUDA mode on this machine, which has no GPU: the probe fails (exit code 2), but the memory plans and the
    /// folders torch_baseline.py reads were written before it, the driver libraries' load attempts are logged under
    /// both names, and ILGPU's Trace output goes to the console. --small keeps the folders tiny.</summary>
    [Test]
    public void FoldersAndPlansComeBeforeTheCudaProbe()
    {
        var root = Directory.CreateTempSubdirectory("pe-kit-").FullName;
        try
        {
            string output = Path.Combine(root, "out"), work = Path.Combine(root, "work");
            int code = DeviceRunnerProgram.Main(["--small", "--out", output, "--work", work, "--skip", "ptx"]);
            if (code == 0)
                Assert.Ignore("a CUDA device answered here; this test is about a machine without one");
            Assert.That(code, Is.EqualTo(2));
            using var engine = JsonDocument.Parse(File.ReadAllText(Path.Combine(output, "engine.json")));
            var probe = engine.RootElement.GetProperty("Probe").EnumerateArray().Select(p => p.GetString()).ToList();
            Assert.That(probe, Has.Some.StartsWith("NativeLibrary.TryLoad(\"libcuda.so\")"));
            Assert.That(probe, Has.Some.StartsWith("NativeLibrary.TryLoad(\"libcuda.so.1\")"));
            Assert.That(probe, Has.Some.Contains("FAILED"));
            Assert.That(engine.RootElement.GetProperty("Plans").GetArrayLength(), Is.EqualTo(BenchmarkShapes.Device.Length));
            Assert.That(File.Exists(Path.Combine(work, "shapes.json")));
            foreach (var shape in BenchmarkShapes.Cpu)
                Assert.That(File.Exists(Path.Combine(work, shape.Name, "batch.json")), shape.Name);
            Assert.That(System.Diagnostics.Trace.Listeners.OfType<System.Diagnostics.ConsoleTraceListener>(), Is.Not.Empty);
        }
        finally { Directory.Delete(root, recursive: true); }
    }

    [TestCase("--budget", "soon", "--budget: 'soon' is not a positive number of seconds")]
    [TestCase("--isa", "99", "--isa: ISA_99 is not an ILGPU CudaInstructionSet")]
    [TestCase("--speed", "max", "unknown option --speed")]
    public void BadOptionIsNamedWithExitCodeOne(string option, string value, string message)
    {
        var error = new StringWriter();
        var saved = Console.Error;
        Console.SetError(error);
        try { Assert.That(DeviceRunnerProgram.Main([option, value]), Is.EqualTo(1)); }
        finally { Console.SetError(saved); }
        Assert.That(error.ToString(), Does.Contain(message));
    }

    [Test]
    public void PinnedIsaReachesTheProbe()
    {
        var options = RunOptions.Parse(["--isa", "85", "--budget", "90"]);
        Assert.That(options.PinnedIsa, Is.EqualTo(ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_85));
        Assert.That(options.BudgetSeconds, Is.EqualTo(90));
    }

    /// <summary>Llama-2-7B (bfloat16 projections) at B8 × T512 with 20 prompt rows, arena by arena, from the model's
    /// dimensions alone (N = B·T positions, S = B·(T − P − 1) scored positions), against the engine's own plan.</summary>
    [Test]
    public void Llama2_7BMemoryPlanAddsUp()
    {
        var shape = BenchmarkShapes.Llama2_7BPlanShape;
        var config = shape.Config;
        Assert.That((config.NumLayers, config.HiddenSize, config.NumHeads, config.NumKvHeads, config.IntermediateSize, config.VocabSize),
            Is.EqualTo((32, 4096, 32, 32, 11008, 32000)));
        long L = 32, C = 4096, I = 11008, V = 32000, B = 8, T = 512, P = 20, H = 32;
        long N = B * T, S = B * (T - P - 1);
        Assert.That(shape.LossPositions, Is.EqualTo(S));

        // Weights: q, k, v, o (C×C each, no GQA) and gate, up, down (C×I each) per layer in bf16; embedding, untied head,
        // two norms per layer and the final norm in float32.
        long projections = L * (4 * C * C + 3 * C * I);
        long floats = 2 * V * C + 2 * L * C + C;
        Assert.That(projections + floats, Is.EqualTo(6_738_415_616L), "Llama-2-7B's published parameter count");
        long weights = 2 * projections + 4 * floats;
        // Saved for the backward: the residual stream entering each block and leaving the last; per layer the mid
        // stream, q, k, v, the attention output (N·C each), gate and up (N·2I together), two rstd (N) and the lse (B·H·T);
        // the final norm's output and rstd.
        long activations = 4 * ((L + 1) * N * C + L * (5 * N * C + 2 * N * I + 2 * N + B * H * T) + N * C + N);
        // Scratch: ln, projection, dResidual, dLn, dAttention, dQ, dK, dV (N·C each; RMSNorm's backward adds into dResidual
        // itself, so no dTemp as GPT-2's LayerNorm needs); the fused q/k/v projection and
        // then its gradient (N·3C); activated, dActivated (N·I each), dGate and dUp together (N·2I); delta (B·H·T); per-position losses (S), the mean (1), the logits (S·V); the last block at
        // the scored rows: their attention output (S·H·hs = S·C here), block input and residual gradient (S·C each).
        long scratch = 4 * (8 * N * C + 3 * N * C + 4 * N * I + B * H * T + S + 1 + S * V + 3 * S * C);
        // Indices: source map, key mask, position ids, prompt-use positions (N each); loss positions, targets, the scored
        // rows' order and a head's targets (S each); verbalizer (16); prompt-use offsets (P + 1).
        long indices = 4 * (4 * N + 4 * S + 16 + P + 1);
        // The prompt, its gradient and two AdamW moments (P·C each), sum of squares, clip scale, 64 norm partials.
        long prompt = 4 * (4 * P * C + 2 + GradNorm.Partitions);

        var plan = shape.MemoryPlan();
        Assert.That(plan, Is.EqualTo(new MemoryReport(weights, activations, scratch, indices, prompt)));
        TestContext.Out.WriteLine(shape.DescribePlan());
        // The float32 arena would hold 26.95 GB; bf16 projections bring it to 14.00 GB.
        Assert.That(TransformerEngine.PlanMemory(config, shape.Options with { WeightFormat = WeightFormat.F32 }).FrozenWeights, Is.EqualTo(4 * (projections + floats)));
        Assert.That(plan.Total, Is.LessThan(139L << 30), "fits the H200's 139 GiB");
    }
}
