using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.DeviceRunner;

/// <summary>A benchmark shape: a model configuration, its batch, how many steps to time, and where its weights come
/// from: a Hugging Face folder written by the runner (float32, the same weights PyTorch then loads) or generated on
/// the device in <see cref="Weights"/> (shapes too large to write; PyTorch then initialises its own random weights, so
/// only speed and memory compare, not the first loss).</summary>
/// <param name="Name">Folder and report name.</param>
/// <param name="ConfigJson">config.json.</param>
/// <param name="Batch">Rows B.</param>
/// <param name="Length">Row length T, prompt rows included.</param>
/// <param name="PromptTableRows">Prompt rows P at the start of each row.</param>
/// <param name="Repeats">Timed train steps after the warm-up.</param>
/// <param name="Generated">Weights generated on the device rather than written to and read from a folder.</param>
/// <param name="Weights">Storage of the block projections.</param>
public sealed record BenchmarkShape(string Name, string ConfigJson, int Batch, int Length, int PromptTableRows, int Repeats,
    bool Generated = false, WeightFormat Weights = WeightFormat.F32)
{
    /// <summary>The parsed configuration.</summary>
    public TransformerConfig Config => TransformerConfig.Parse(ConfigJson, Name + "/config.json");

    /// <summary>Scored positions of the batch: every token but the last of each row (the prompt rows score nothing).</summary>
    public int LossPositions => Batch * (Length - PromptTableRows - 1);

    /// <summary>The engine options the benchmark builds the engine with.</summary>
    public EngineOptions Options => new(Batch, Length, PromptTableRows, MaxLossPositions: LossPositions, WeightFormat: Weights);

    /// <summary>The engine's device memory for this shape, by arena, computed without a device.</summary>
    public MemoryReport MemoryPlan() => TransformerEngine.PlanMemory(Config, Options);

    /// <summary>One line: parameters, then the plan by arena in GB (10⁹ bytes).</summary>
    public string DescribePlan()
    {
        var plan = MemoryPlan();
        long parameters = WeightMap.For(Config).Weights.Sum(w => w.Shape.Aggregate(1L, (a, d) => a * d));
        static string Gb(long bytes) => $"{bytes / 1e9:F2}";
        return $"{Name} ({parameters / 1e9:F2} B parameters, {Weights} projections) at B{Batch} T{Length} (prompt {PromptTableRows}): " +
            $"weights {Gb(plan.FrozenWeights)} GB, activations {Gb(plan.Activations)} GB, gradients and scratch {Gb(plan.GradientsAndScratch)} GB, " +
            $"indices {Gb(plan.Indices)} GB, prompt and optimizer {Gb(plan.PromptAndOptimizer)} GB: total {Gb(plan.Total)} GB";
    }
}

/// <summary>The kit's model shapes. Configurations follow the published config.json of each model (Llama-2-7B:
/// meta-llama/Llama-2-7b-hf; Qwen2-0.5B: Qwen/Qwen2-0.5B), with max positions cut to what the batch needs.</summary>
public static class BenchmarkShapes
{
    /// <summary>A Llama-family config.json.</summary>
    public static string Llama(int hidden, int layers, int heads, int kvHeads, int vocab, int intermediate, int positions,
        string architecture = "LlamaForCausalLM", double ropeTheta = 10000.0, double eps = 1e-5, bool tied = false) => $$"""
        { "architectures": ["{{architecture}}"], "model_type": "{{(architecture == "Qwen2ForCausalLM" ? "qwen2" : "llama")}}", "hidden_size": {{hidden}}, "intermediate_size": {{intermediate}},
          "num_hidden_layers": {{layers}}, "num_attention_heads": {{heads}}, "num_key_value_heads": {{kvHeads}},
          "vocab_size": {{vocab}}, "max_position_embeddings": {{positions}}, "rms_norm_eps": {{eps}}, "rope_theta": {{ropeTheta}},
          "hidden_act": "silu", "attention_bias": false, "tie_word_embeddings": {{(tied ? "true" : "false")}}, "torch_dtype": "float32" }
        """;

    /// <summary>A GPT-2 config.json.</summary>
    public static string Gpt2(int hidden, int layers, int heads, int vocab, int positions) => $$"""
        { "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "n_embd": {{hidden}}, "n_head": {{heads}}, "n_layer": {{layers}},
          "vocab_size": {{vocab}}, "n_positions": {{positions}}, "n_ctx": {{positions}}, "layer_norm_epsilon": 1e-5,
          "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0, "torch_dtype": "float32" }
        """;

    /// <summary>Llama-2-7B: 32 layers, d 4096, 32 heads (no GQA), FFN 11008, vocab 32000, untied head.</summary>
    public static string Llama2_7B => Llama(4096, 32, 32, 32, 32000, 11008, 4096);

    /// <summary>Qwen2-0.5B: 24 layers, d 896, 14 query heads over 2 kv heads (GQA 7:1), FFN 4864, vocab 151936, tied
    /// embeddings, q/k/v biases (implied by the architecture), RoPE θ 10⁶.</summary>
    public static string Qwen2_05B => Llama(896, 24, 14, 2, 151936, 4864, 4096, "Qwen2ForCausalLM", ropeTheta: 1000000.0, eps: 1e-6, tied: true);

    /// <summary>The 7B memory plan the issue asks for: Llama-2-7B, bfloat16 projections, B8 × T512 with a 20-row prompt.</summary>
    public static BenchmarkShape Llama2_7BPlanShape => new("llama2-7b", Llama2_7B, 8, 512, 20, 1, Generated: true, Weights: WeightFormat.Bf16);

    /// <summary>The CUDA run's train-step shapes, cheapest first (a run cut short keeps the small ones).</summary>
    public static BenchmarkShape[] Device =>
    [
        new("stories15M", Llama(288, 6, 6, 6, 32000, 768, 256), 32, 256, 20, 5),
        new("gpt2-124M", Gpt2(768, 12, 12, 50257, 1024), 8, 512, 20, 3),
        new("qwen2-0.5b", Qwen2_05B, 8, 512, 20, 2, Generated: true, Weights: WeightFormat.Bf16),
        Llama2_7BPlanShape,
    ];

    /// <summary>The <c>--cpu</c> dry run's shapes: the same kinds (folder float32, generated bfloat16 with GQA) at toy sizes.</summary>
    public static BenchmarkShape[] Cpu =>
    [
        new("tiny-llama", Llama(64, 2, 4, 4, 512, 172, 64), 1, 16, 4, 1),
        new("tiny-qwen2-gqa", Llama(64, 2, 4, 2, 300, 96, 64, "Qwen2ForCausalLM", tied: true), 1, 16, 4, 1, Generated: true, Weights: WeightFormat.Bf16),
    ];
}
