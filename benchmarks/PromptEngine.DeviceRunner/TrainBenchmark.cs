using System.Diagnostics;
using System.Text.Json;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.DeviceRunner;

/// <summary>Step 2: whole-engine checks (loss and prompt gradient on the device against the CPU-shaped engine on the
/// CPU) on tiny models, then train-step timings on stories15M- and GPT-2-124M-shaped models with seeded random
/// weights. Each benchmark model is left as a Hugging Face folder (config.json, model.safetensors) with the batch
/// (batch.json) and the initial prompt (prompt.f32), so torch_baseline.py trains PEFT prompt tuning on the same
/// weights, tokens and prompt and its first loss can be compared with the engine's.</summary>
public static class TrainBenchmark
{
    /// <summary>Tiny models for the whole-engine check: (report name, folder name, config.json).</summary>
    static readonly (string Name, string Folder, string Config)[] CheckModels =
    [
        ("tiny Llama (GQA)", "check-llama", BenchmarkShapes.Llama(64, 2, 4, 2, 301, 96, 64)),
        ("tiny GPT-2", "check-gpt2", BenchmarkShapes.Gpt2(64, 2, 4, 307, 64)),
    ];

    const int BatchSeed = 12, PromptSeed = 13, WeightSeed = 11;

    /// <summary>Step 0, before any CUDA call: every folder the later steps and torch_baseline.py read (config.json,
    /// model.safetensors unless the weights are generated on the device, batch.json, prompt.f32), so the PyTorch half
    /// runs even when the CUDA accelerator never comes up.</summary>
    public static void WriteFolders(RunOptions options, Results results)
    {
        foreach (var (_, folderName, config) in CheckModels)
            WriteModel(Path.Combine(options.Work, folderName), config, seed: 5);
        // torch_baseline.py's list of shapes, in the runner's order (cheapest first).
        File.WriteAllText(Path.Combine(options.Work, "shapes.json"),
            JsonSerializer.Serialize(options.Shapes.Select(shape => new { name = shape.Name, repeats = shape.Repeats })));
        foreach (var shape in options.Shapes)
        {
            var watch = Stopwatch.StartNew();
            var folder = Path.Combine(options.Work, shape.Name);
            if (shape.Generated)
            {
                Directory.CreateDirectory(folder);
                File.WriteAllText(Path.Combine(folder, "config.json"), shape.ConfigJson);
                File.Delete(Path.Combine(folder, "model.safetensors")); // a stale file of an earlier kit must not pass for these weights
            }
            else
                WriteModel(folder, shape.ConfigJson, WeightSeed);
            var config = shape.Config;
            LanguageModelBatch(shape.Batch, shape.Length, shape.PromptTableRows, config.VocabSize, BatchSeed, out var tokens);
            var prompt = RandomPrompt(shape.PromptTableRows * config.HiddenSize, PromptSeed);
            File.WriteAllText(Path.Combine(folder, "batch.json"), JsonSerializer.Serialize(new
            {
                rows = shape.Batch, prompt_rows = shape.PromptTableRows, input_ids = tokens,
                generated = shape.Generated, weights = shape.Weights.ToString().ToLowerInvariant(),
            }));
            File.WriteAllBytes(Path.Combine(folder, "prompt.f32"), prompt.SelectMany(BitConverter.GetBytes).ToArray());
            Program.Log($"{shape.Name}: wrote {folder}{(shape.Generated ? " (config, batch and prompt; weights are generated on the device)" : "")} in {watch.Elapsed.TotalSeconds:F1} s");
        }
    }

    /// <summary>The engine on the device against the CPU engine on tiny models, then the train step of each shape; saves
    /// the results after each shape (<paramref name="save"/>), and skips the shapes whose turn comes past the budget.</summary>
    public static void Run(KernelContext device, KernelContext reference, Results results, RunOptions options, Action save, Stopwatch clock)
    {
        foreach (var (name, folderName, _) in CheckModels)
        {
            using var model = ModelFolder.Open(Path.Combine(options.Work, folderName));
            // GPU-shaped kernels on the CPU device run every group's threads as OS threads: keep --cpu mode small.
            var (rows, length, promptTableRows) = options.Cpu ? (2, 12, 3) : (3, 40, 6);
            var batch = LanguageModelBatch(rows, length, promptTableRows, model.Config.VocabSize, seed: 6, out _);
            var prompt = RandomPrompt(promptTableRows * model.Config.HiddenSize, seed: 7);
            var (deviceLoss, deviceGradient) = LossAndGradient(device, model, batch, prompt);
            var (cpuLoss, cpuGradient) = LossAndGradient(reference, model, batch, prompt);
            double lossError = Math.Abs(deviceLoss - cpuLoss) / Math.Abs(cpuLoss);
            results.Checks.Add(new CheckResult($"engine {name} loss", lossError, Math.Abs(deviceLoss - cpuLoss), 1e-5, lossError <= 1e-5));
            double diff = 0, norm = 0, maxAbs = 0;
            for (int i = 0; i < cpuGradient.Length; i++)
            {
                double d = (double)deviceGradient[i] - cpuGradient[i];
                diff += d * d;
                norm += (double)cpuGradient[i] * cpuGradient[i];
                maxAbs = Math.Max(maxAbs, Math.Abs(d));
            }
            double gradientError = Math.Sqrt(diff / norm);
            bool finite = deviceGradient.All(float.IsFinite);
            results.Checks.Add(new CheckResult($"engine {name} dPrompt", gradientError, maxAbs, 1e-4, finite && gradientError <= 1e-4));
            Program.Log($"engine {name}: loss {deviceLoss:F6} vs CPU {cpuLoss:F6} (rel {lossError:E2}); dPrompt rel {gradientError:E2}");
        }
        save();

        // On the CPU accelerator the GPU-shaped kernels cost seconds per toy step (every group's threads are OS threads)
        // and were just checked above; the --cpu dry run times its shapes with the CPU-shaped kernels.
        var stepKernels = options.Cpu ? reference : device;
        foreach (var shape in options.Shapes)
        {
            if (clock.Elapsed.TotalSeconds > options.BudgetSeconds)
            {
                results.Errors.Add($"{shape.Name}: skipped, the runner is past its {options.BudgetSeconds} s budget");
                Program.Log($"{shape.Name}: skipped (past the {options.BudgetSeconds} s budget)");
                continue;
            }
            try
            {
                results.Train.Add(TimeShape(stepKernels, shape, options));
            }
            catch (Exception error)
            {
                // One shape failing (out of memory at 7B, say) must not cost the others.
                results.Errors.Add($"{shape.Name}: {error.GetType().Name}: {error.Message}");
                Program.Log($"!! {shape.Name} failed: {error}");
            }
            save();
        }
    }

    /// <summary>One shape's train step: first loss, then tokens/s over forward + prompt-only backward + AdamW.</summary>
    static TrainResult TimeShape(KernelContext device, BenchmarkShape shape, RunOptions options)
    {
        var watch = Stopwatch.StartNew();
        var config = shape.Config;
        var folder = Path.Combine(options.Work, shape.Name);
        var batch = LanguageModelBatch(shape.Batch, shape.Length, shape.PromptTableRows, config.VocabSize, BatchSeed, out _);
        var prompt = RandomPrompt(shape.PromptTableRows * config.HiddenSize, PromptSeed);
        Program.Log($"plan: {shape.DescribePlan()}");
        ModelFolder? model = null;
        try
        {
            TransformerEngine engine;
            if (shape.Generated)
                engine = new TransformerEngine(device, DeviceWeights.Generate(device, config, shape.Weights, WeightSeed), shape.Options);
            else
            {
                model = ModelFolder.Open(folder);
                engine = new TransformerEngine(device, model, shape.Options);
            }
            using var _ = engine;
            Program.Log($"{shape.Name}: weights on the device in {watch.Elapsed.TotalSeconds:F1} s");
            engine.SetPrompt(prompt);
            float firstLoss = engine.LossAndPromptGradient(batch); // also the warm-up: kernels compile here
            engine.OptimizerStep(1e-3f);
            var step = Stopwatch.StartNew();
            for (int i = 0; i < shape.Repeats; i++)
            {
                engine.ZeroPromptGradient();
                engine.LossAndPromptGradient(batch);
                engine.OptimizerStep(1e-3f);
            }
            device.Synchronize();
            double stepMs = step.Elapsed.TotalMilliseconds / shape.Repeats;
            var forward = Stopwatch.StartNew();
            engine.Loss(batch);
            device.Synchronize();
            double forwardMs = forward.Elapsed.TotalMilliseconds;
            var result = new TrainResult(shape.Name, shape.Batch, shape.Length, shape.PromptTableRows, stepMs, batch.Positions / (stepMs / 1000),
                forwardMs, firstLoss, engine.Memory.Total, shape.Weights.ToString(), shape.Generated, engine.Memory.FrozenWeights);
            Program.Log($"{shape.Name}: B{shape.Batch} T{shape.Length} (prompt {shape.PromptTableRows}, {shape.Weights} projections): first loss {firstLoss:F5}, " +
                $"train step {stepMs:F1} ms = {result.TokensPerSecond:F0} tokens/s, forward {forwardMs:F1} ms, device memory {engine.Memory.Total / 1e9:F2} GB " +
                $"(weights {engine.Memory.FrozenWeights / 1e9:F2} GB); {watch.Elapsed.TotalSeconds:F0} s in all");
            return result;
        }
        finally
        {
            model?.Dispose();
        }
    }

    static (float Loss, float[] Gradient) LossAndGradient(KernelContext kernels, ModelFolder model, Batch batch, float[] prompt)
    {
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, prompt.Length / model.Config.HiddenSize,
            MaxLossPositions: batch.LossPositions.Length));
        engine.SetPrompt(prompt);
        float loss = engine.LossAndPromptGradient(batch);
        return (loss, engine.GetPromptGradient());
    }

    /// <summary>The initial prompt: uniform in ±0.1, seeded.</summary>
    public static float[] RandomPrompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => (float)(0.1 * (2 * random.NextDouble() - 1))).ToArray();
    }

    /// <summary>B rows of P prompt rows then T − P random tokens, each token but the last predicting the next: the loss
    /// PEFT's prompt tuning computes with labels = input_ids once labels[:, 0] = −100 (PEFT prepends P labels of −100
    /// and Hugging Face shifts labels by one, so without that the last prompt row would be scored on input_ids[0],
    /// which this batch does not score; PeftLabellingTests proves the equality on the CPU).</summary>
    public static Batch LanguageModelBatch(int rows, int length, int promptTableRows, int vocab, int seed, out int[][] tokens)
    {
        var random = new Random(seed);
        tokens = new int[rows][];
        var list = new List<IReadOnlyList<Slot>>();
        for (int b = 0; b < rows; b++)
        {
            tokens[b] = Enumerable.Range(0, length - promptTableRows).Select(_ => random.Next(3, vocab)).ToArray();
            var row = Enumerable.Range(0, promptTableRows).Select(Slot.Prompt).ToList();
            for (int i = 0; i < tokens[b].Length; i++)
                row.Add(Slot.Token(tokens[b][i], i + 1 < tokens[b].Length ? tokens[b][i + 1] : -1));
            list.Add(row);
        }
        return BatchBuilder.Build(list);
    }

    /// <summary>Writes config.json and seeded random float32 weights (matrices uniform in ±1/√fan-in, norm scales 1,
    /// small biases, embeddings in ±0.05) into <paramref name="folder"/>.</summary>
    static string WriteModel(string folder, string configJson, int seed)
    {
        Directory.CreateDirectory(folder);
        File.WriteAllText(Path.Combine(folder, "config.json"), configJson);
        var map = WeightMap.For(TransformerConfig.Parse(configJson, "config.json"));
        SafetensorsWriter.Write(Path.Combine(folder, "model.safetensors"), map.Weights.Select(w =>
        {
            var random = new Random(unchecked(seed * 7919 + StableHash(w.Name)));
            long count = w.Shape.Aggregate(1L, (a, d) => a * d);
            var (centre, radius) = w.Role switch
            {
                WeightRole.TokenEmbedding or WeightRole.LmHead or WeightRole.PositionEmbedding => (0.0, 0.05),
                WeightRole.AttentionNorm or WeightRole.MlpNorm or WeightRole.FinalNorm => (1.0, 0.0),
                _ when w.Shape.Length == 1 => (0.0, 0.02),
                _ => (0.0, 1 / Math.Sqrt(w.StoredTransposed ? w.Shape[0] : w.Shape[1])),
            };
            var values = new float[count];
            for (long i = 0; i < count; i++) values[i] = (float)(centre + radius * (2 * random.NextDouble() - 1));
            return TensorToWrite.F32(w.Name, w.Shape, values);
        }));
        return folder;
    }

    static int StableHash(string text)
    {
        int hash = 17;
        foreach (var ch in text) hash = unchecked(hash * 31 + ch);
        return hash;
    }
}
