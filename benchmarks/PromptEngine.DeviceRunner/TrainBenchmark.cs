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
    /// <summary>A benchmark shape: the model, its batch and how many steps to time.</summary>
    sealed record Shape(string Name, string ConfigJson, int Batch, int Length, int PromptRows, int Repeats);

    static string Llama(int hidden, int layers, int heads, int kvHeads, int vocab, int intermediate, int positions) => $$"""
        { "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": {{hidden}}, "intermediate_size": {{intermediate}},
          "num_hidden_layers": {{layers}}, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kvHeads}},
          "vocab_size": {{vocab}}, "max_position_embeddings": {{positions}}, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "hidden_act": "silu", "attention_bias": false, "tie_word_embeddings": false, "torch_dtype": "float32" }
        """;

    static string Gpt2(int hidden, int layers, int heads, int vocab, int positions) => $$"""
        { "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": {{hidden}}, "n_head": {{heads}}, "n_layer": {{layers}},
          "vocab_size": {{vocab}}, "n_positions": {{positions}}, "n_ctx": {{positions}}, "layer_norm_epsilon": 1e-5,
          "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": "float32" }
        """;

    public static void Run(KernelContext device, KernelContext reference, Results results, RunOptions options)
    {
        // Tiny models: the device engine against the CPU engine, every kernel of a training step at once.
        foreach (var (name, config) in new[]
        {
            ("tiny Llama (GQA)", Llama(64, 2, 4, 2, 301, 96, 64)),
            ("tiny GPT-2", Gpt2(64, 2, 4, 307, 64)),
        })
        {
            var folder = WriteModel(Path.Combine(options.Work, "check-" + (name.Contains("GPT") ? "gpt2" : "llama")), config, seed: 5);
            using var model = ModelFolder.Open(folder);
            // GPU-shaped kernels on the CPU device run every group's threads as OS threads: keep --cpu mode small.
            var (rows, length, promptRows) = options.Cpu ? (2, 12, 3) : (3, 40, 6);
            var batch = LanguageModelBatch(rows, length, promptRows, model.Config.VocabSize, seed: 6, out _);
            var prompt = RandomPrompt(promptRows * model.Config.HiddenSize, seed: 7);
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

        var shapes = options.Cpu
            ? new[] { new Shape("tiny-llama", Llama(64, 2, 4, 4, 512, 172, 64), 1, 16, 4, 1) }
            : new[]
            {
                new Shape("stories15M", Llama(288, 6, 6, 6, 32000, 768, 256), 32, 256, 20, 5),
                new Shape("gpt2-124M", Gpt2(768, 12, 12, 50257, 1024), 8, 512, 20, 3),
            };
        foreach (var shape in shapes)
        {
            var watch = Stopwatch.StartNew();
            var folder = WriteModel(Path.Combine(options.Work, shape.Name), shape.ConfigJson, seed: 11);
            using var model = ModelFolder.Open(folder);
            int c = model.Config.HiddenSize;
            var batch = LanguageModelBatch(shape.Batch, shape.Length, shape.PromptRows, model.Config.VocabSize, seed: 12, out var tokens);
            var prompt = RandomPrompt(shape.PromptRows * c, seed: 13);
            File.WriteAllText(Path.Combine(folder, "batch.json"), JsonSerializer.Serialize(new { rows = shape.Batch, prompt_rows = shape.PromptRows, input_ids = tokens }));
            File.WriteAllBytes(Path.Combine(folder, "prompt.f32"), prompt.SelectMany(BitConverter.GetBytes).ToArray());
            Program.Log($"{shape.Name}: wrote {folder} ({model.ParameterCount / 1e6:F1} M parameters) in {watch.Elapsed.TotalSeconds:F1} s");

            using var engine = new TransformerEngine(device, model, new EngineOptions(batch.Rows, batch.Length, shape.PromptRows,
                MaxLossPositions: batch.LossPositions.Length));
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
            for (int i = 0; i < shape.Repeats; i++)
                engine.Loss(batch);
            device.Synchronize();
            double forwardMs = forward.Elapsed.TotalMilliseconds / shape.Repeats;
            var result = new TrainResult(shape.Name, shape.Batch, shape.Length, shape.PromptRows, stepMs, batch.Positions / (stepMs / 1000),
                forwardMs, firstLoss, engine.Memory.Total);
            results.Train.Add(result);
            Program.Log($"{shape.Name}: B{shape.Batch} T{shape.Length} (prompt {shape.PromptRows}): first loss {firstLoss:F5}, train step {stepMs:F1} ms " +
                $"= {result.TokensPerSecond:F0} tokens/s, forward {forwardMs:F1} ms, device memory {engine.Memory.Total / 1e9:F2} GB");
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

    static float[] RandomPrompt(int length, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, length).Select(_ => (float)(0.1 * (2 * random.NextDouble() - 1))).ToArray();
    }

    /// <summary>B rows of P prompt rows then T − P random tokens, each token (but the last) predicting the next: the
    /// loss PEFT's prompt tuning computes with labels = input_ids.</summary>
    static Batch LanguageModelBatch(int rows, int length, int promptRows, int vocab, int seed, out int[][] tokens)
    {
        var random = new Random(seed);
        tokens = new int[rows][];
        var list = new List<IReadOnlyList<Slot>>();
        for (int b = 0; b < rows; b++)
        {
            tokens[b] = Enumerable.Range(0, length - promptRows).Select(_ => random.Next(3, vocab)).ToArray();
            var row = Enumerable.Range(0, promptRows).Select(Slot.Prompt).ToList();
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
