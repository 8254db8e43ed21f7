using System.Diagnostics;
using PromptEngine.DeviceRunner;
using PromptEngine.Engine;
using PromptEngine.Kernels;

namespace PromptEngine.Tests.DeviceKit;

/// <summary>The prompt-tuning step at scaled-down versions of the kit's real-model shapes, on the CPU: Llama-2-7B's
/// layout (MHA, untied head, vocabulary 32000) and Qwen2-0.5B's (GQA 7:1, q/k/v biases, tied head, vocabulary
/// 151936), with bfloat16 projections generated on the device as the kit does at full size. Prints the memory plan and
/// tokens/s; checks the step is sane (loss near ln V, a nonzero finite gradient, the plan equal to what was allocated,
/// and an optimizer step that lowers the loss on the same batch).</summary>
[Category("Slow"), NonParallelizable]
public class RealModelShapeTests
{
    static IEnumerable<TestCaseData> Shapes()
    {
        // Llama-2-7B's widths divided by 16 (d 256, FFN 688; 16 heads of 16, no GQA), 4 of its 32 layers, its
        // vocabulary of 32000 and untied head as they are; B2 × T64 with 8 prompt rows.
        yield return new TestCaseData(new BenchmarkShape("llama2-7b/16", BenchmarkShapes.Llama(256, 4, 16, 16, 32000, 688, 128), 2, 64, 8, 2,
            Generated: true, Weights: WeightFormat.Bf16)).SetName("Llama2_7BLayoutScaledDown");
        // Qwen2-0.5B's widths divided by 8 (d 112, FFN 608; 14 query heads of 8 over 2 kv heads, GQA 7:1 as in the
        // model), 4 of its 24 layers, its vocabulary of 151936, tied head and q/k/v biases as they are.
        yield return new TestCaseData(new BenchmarkShape("qwen2-0.5b/8", BenchmarkShapes.Llama(112, 4, 14, 2, 151936, 608, 128, "Qwen2ForCausalLM",
            ropeTheta: 1000000.0, eps: 1e-6, tied: true), 2, 64, 8, 2, Generated: true, Weights: WeightFormat.Bf16)).SetName("Qwen2GqaLayoutScaledDown");
    }

    [TestCaseSource(nameof(Shapes))]
    public void PromptTuningStepRuns(BenchmarkShape shape)
    {
        TestContext.Out.WriteLine($"plan: {shape.DescribePlan()}");
        var config = shape.Config;
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, DeviceWeights.Generate(kernels, config, shape.Weights, seed: 11), shape.Options);
        Assert.That(engine.Memory, Is.EqualTo(shape.MemoryPlan()));
        var batch = TrainBenchmark.LanguageModelBatch(shape.Batch, shape.Length, shape.PromptTableRows, config.VocabSize, seed: 12, out _);
        engine.SetPrompt(TrainBenchmark.RandomPrompt(shape.PromptTableRows * config.HiddenSize, seed: 13));

        float first = engine.LossAndPromptGradient(batch);
        var gradient = engine.GetPromptGradient();
        engine.OptimizerStep(1e-2f);
        var watch = Stopwatch.StartNew();
        for (int i = 0; i < shape.Repeats; i++)
        {
            engine.ZeroPromptGradient();
            engine.LossAndPromptGradient(batch);
            engine.OptimizerStep(1e-2f);
        }
        kernels.Synchronize();
        double stepMs = watch.Elapsed.TotalMilliseconds / shape.Repeats;
        float after = engine.Loss(batch);
        TestContext.Out.WriteLine($"{shape.Name}: first loss {first:F4} (ln V = {Math.Log(config.VocabSize):F4}), after {shape.Repeats + 1} steps {after:F4}; " +
            $"step {stepMs:F0} ms = {batch.Positions / (stepMs / 1000):F0} tokens/s on {Environment.ProcessorCount} cores");

        // Generated weights are small (±1/√fan-in), so the logits are near zero and the loss near ln V.
        Assert.That(first, Is.EqualTo(Math.Log(config.VocabSize)).Within(0.5));
        Assert.That(gradient.All(float.IsFinite) && gradient.Any(g => g != 0), "a finite, nonzero prompt gradient");
        Assert.That(after, Is.LessThan(first), "AdamW on the prompt lowers the loss of the batch it trains on");
    }
}
