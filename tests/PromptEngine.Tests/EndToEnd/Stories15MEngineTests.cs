using System.Diagnostics;
using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The engine on the real stories15M against the whole-model reference (double precision):
/// the same greedy story, the same loss, the same dLoss/dPrompt.</summary>
[NonParallelizable]
public class Stories15MEngineTests
{
    static readonly Lazy<ModelReference> Reference = new(() =>
    {
        using var folder = ModelFolder.Open(TestAssets.Stories15MFolder);
        return ModelReference.Load(folder);
    });

    const string Story = "Once upon a time, there was a little girl named Lily. She loved to play outside.";

    [Test]
    public void GreedyDecodingFromBosIsTheReferenceStory()
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(1, 41, 0, Training: false));
        var clock = Stopwatch.StartNew();
        var tokens = Generator.Generate(engine, [1], [], new SamplingOptions(40, StopAtEos: 2));
        var text = model.Tokenizer.Decode(tokens);
        TestContext.Out.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {text}");
        // The reference's greedy text (ModelReferenceStories15MTests); its smallest top-2 gap is 0.146,
        // far above float32 noise, so the engine must reproduce it token for token.
        Assert.That(text, Is.EqualTo("Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the sky. It"));
    }

    [Test]
    public void LossOfAFixedTextMatchesTheReference()
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var result = TextScoring.Score(kernels, model, null, Story, null, PromptPlacement.Prefix, withGradient: false);

        var ids = model.Tokenizer.Encode(Story, addBos: true).ToArray();
        var targets = ids.Skip(1).Append(-1).ToArray();
        var (referenceLoss, _) = Reference.Value.LossAndPromptGradient(ids, [], targets, 1, ids.Length);
        TestContext.Out.WriteLine($"engine {result.Loss:R} vs reference {referenceLoss:R} nats/token over {result.ScoredTokens} tokens");
        Assert.That(result.ScoredTokens, Is.EqualTo(ids.Length - 1));
        Assert.That(Math.Abs(result.Loss - referenceLoss) / referenceLoss, Is.LessThan(1e-4));
    }

    [TestCase(PromptPlacement.Prefix)]
    [TestCase(PromptPlacement.Suffix)]
    public void PromptGradientMatchesTheReference(PromptPlacement placement)
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        const int n = 4;
        int C = model.Config.HiddenSize;
        // A prompt made of real token rows plus noise, as a tuned prompt starts out.
        var table = model.Tensors.ReadF32("model.embed_tokens.weight");
        var rng = new Random(15);
        var prompt = new float[n * C];
        for (var r = 0; r < n; r++)
        {
            var token = rng.Next(1000, 5000);
            for (var c = 0; c < C; c++) prompt[r * C + c] = table[token * C + c] + (float)(0.05 * (rng.NextDouble() * 2 - 1));
        }
        var soft = new PromptEngine.Prompts.SoftPrompt(prompt, n, C, new Dictionary<string, string>());
        var result = TextScoring.Score(kernels, model, soft, "Lily went to the park.", " She saw a big dog.", placement, withGradient: true);

        var tokenizer = model.Tokenizer;
        var row = BatchBuilder.LanguageModelRow(tokenizer.Encode("Lily went to the park.", true), tokenizer.Encode(" She saw a big dog.", false), [0, 1, 2, 3], placement);
        var batch = BatchBuilder.Build([row]);
        var dense = Enumerable.Repeat(-1, batch.Positions).ToArray();
        for (var i = 0; i < batch.LossPositions.Length; i++) dense[batch.LossPositions[i]] = batch.Targets[i];
        var (referenceLoss, referenceGradient) = Reference.Value.LossAndPromptGradient(batch.SourceMap, prompt.Select(x => (double)x).ToArray(), dense, 1, batch.Length);

        var scale = referenceGradient.Max(Math.Abs);
        var error = result.PromptGradient!.Select((g, i) => Math.Abs(g - referenceGradient[i])).Max();
        // Relative error as ‖engine − reference‖ / ‖reference‖ over the whole gradient. Measured on 2026-11-28:
        // 1.8e-4 (prefix) while the cross-entropy summed the 32000-word vocabulary in one float running sum; 2.6e-6
        // since it sums in blocks (and the loss's sum is compensated). The bound is the 1e-4 the engine-core issue
        // asked for: it now holds with a 40× margin, and it would catch the old single-sum rounding again.
        var normError = Math.Sqrt(result.PromptGradient!.Select((g, i) => (g - referenceGradient[i]) * (g - referenceGradient[i])).Sum());
        var normReference = Math.Sqrt(referenceGradient.Sum(g => g * g));
        TestContext.Out.WriteLine($"{placement}: loss {result.Loss:R} vs {referenceLoss:R}; ‖dPrompt error‖/‖dPrompt‖ = {normError / normReference:E2}; max |error| {error:E2} of max |dPrompt| {scale:E2}");
        for (var r = 0; r < n; r++)
        {
            double e = 0, g = 0;
            for (var c = 0; c < C; c++) { e += Math.Pow(result.PromptGradient![r * C + c] - referenceGradient[r * C + c], 2); g += Math.Pow(referenceGradient[r * C + c], 2); }
            TestContext.Out.WriteLine($"  row {r}: ‖error‖ {Math.Sqrt(e):E2}, ‖dPrompt‖ {Math.Sqrt(g):E2}");
        }
        Assert.That(Math.Abs(result.Loss - referenceLoss) / referenceLoss, Is.LessThan(1e-4), "loss");
        Assert.That(scale, Is.GreaterThan(1e-4), "gradient must be non-trivial");
        Assert.That(normError / normReference, Is.LessThan(1e-4), "dLoss/dPrompt, relative (norm-wise)");
        Assert.That(error / scale, Is.LessThan(1e-3), "dLoss/dPrompt, worst element relative to the largest");
    }
}
