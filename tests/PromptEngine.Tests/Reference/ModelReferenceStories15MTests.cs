using System.Diagnostics;
using PromptEngine.Models;

namespace PromptEngine.Tests.Reference;

/// <summary>The whole-model reference on the real stories15M (imported from llama2.c): fluent greedy text
/// and a low loss are only possible if the reference's Llama forward and the import (q/k row permutation
/// to HF's rotate_half RoPE) are both right.</summary>
[NonParallelizable]
public class ModelReferenceStories15MTests
{
    static readonly Lazy<(ModelReference Model, PromptEngine.Tokenization.ITextTokenizer Tokenizer)> Stories = new(() =>
    {
        using var folder = ModelFolder.Open(TestAssets.Stories15MFolder);
        return (ModelReference.Load(folder), folder.Tokenizer);
    });

    // What the reference produces (double precision, greedy, 40 tokens) from BOS alone; it is the
    // well-known greedy opening of llama2.c's stories15M ("... a big, red ball in the sky. It was the sun!").
    const string ExpectedGreedyText = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the sky. It";
    static readonly int[] ExpectedGreedyTokens =
    [
        9038, 2501, 263, 931, 29892, 727, 471, 263, 2217, 7826, 4257, 365, 2354, 29889, 2296, 18012, 304, 1708, 5377, 297,
        278, 6575, 845, 457, 29889, 3118, 2462, 29892, 1183, 4446, 263, 4802, 29892, 2654, 8287, 297, 278, 14744, 29889, 739,
    ];

    [Test]
    public void GreedyTextFromBosIsTheKnownStory()
    {
        var (model, tokenizer) = Stories.Value;
        var watch = Stopwatch.StartNew();
        var tokens = model.GreedyGenerate([1], maxNewTokens: 40, eosId: 2);
        var text = tokenizer.Decode(tokens);
        TestContext.Out.WriteLine($"{tokens.Length} tokens in {watch.Elapsed.TotalSeconds:F1} s: [{string.Join(", ", tokens)}]");
        TestContext.Out.WriteLine(text);
        Assert.That(text, Does.StartWith("Once upon a time, there was a little girl named Lily."));
        Assert.That(text, Is.EqualTo(ExpectedGreedyText));
        Assert.That(tokens, Is.EqualTo(ExpectedGreedyTokens));

        // One causal pass over the finished sequence must pick every generated token again (the
        // recompute-everything loop and the batched forward agree). The smallest top-1/top-2 gap says
        // how much float32 noise the engine's greedy decoding can tolerate before it may diverge.
        int[] sequence = [1, .. tokens];
        int V = model.Config.VocabSize;
        var logits = model.Logits(sequence, [], 1, sequence.Length);
        double smallestGap = double.PositiveInfinity;
        for (int t = 0; t < tokens.Length; t++)
        {
            var row = logits.AsSpan(t * V, V);
            int best = 0;
            for (int v = 1; v < V; v++) if (row[v] > row[best]) best = v;
            double second = double.NegativeInfinity;
            for (int v = 0; v < V; v++) if (v != best) second = Math.Max(second, row[v]);
            smallestGap = Math.Min(smallestGap, row[best] - second);
            Assert.That(best, Is.EqualTo(tokens[t]), $"step {t}");
        }
        TestContext.Out.WriteLine($"smallest top-1 − top-2 logit gap over the {tokens.Length} steps: {smallestGap:F4}");
    }

    [Test]
    public void StorySentenceHasLowLoss()
    {
        var (model, tokenizer) = Stories.Value;
        var ids = tokenizer.Encode("Once upon a time, there was a little girl named Lily. She loved to play outside.", addBos: true).ToArray();
        Assert.That(ids[0], Is.EqualTo(1));
        var targets = ids.Skip(1).Append(-1).ToArray();
        var watch = Stopwatch.StartNew();
        var logits = model.Logits(ids, [], 1, ids.Length);
        int V = model.Config.VocabSize;
        double total = 0;
        for (int t = 0; t + 1 < ids.Length; t++)
        {
            var row = logits.AsSpan(t * V, V);
            double max = double.NegativeInfinity;
            foreach (var x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (var x in row) sum += Math.Exp(x - max);
            total += max + Math.Log(sum) - row[targets[t]];
        }
        double loss = total / (ids.Length - 1);
        TestContext.Out.WriteLine($"{ids.Length} tokens, mean loss {loss:F4} nats/token ({watch.Elapsed.TotalSeconds:F1} s)");
        // Well below the brief's 2.0: the reference gives 0.496; pairing RoPE dimensions as (2i, 2i+1)
        // instead of HF's (i, i + hs/2) (an import without the q/k permutation) gives 0.688 and still
        // starts with "Once upon a time", so the bound is tight enough to tell the two apart.
        Assert.That(loss, Is.LessThan(0.6));
        // A shuffled version of the same tokens must be far less likely: the low loss is the model's doing.
        var shuffled = ids.Take(1).Concat(ids.Skip(1).OrderBy(id => (id * 7919) % 101)).ToArray();
        var shuffledLogits = model.Logits(shuffled, [], 1, shuffled.Length);
        double shuffledTotal = 0;
        for (int t = 0; t + 1 < shuffled.Length; t++)
        {
            var row = shuffledLogits.AsSpan(t * V, V);
            double max = double.NegativeInfinity;
            foreach (var x in row) max = Math.Max(max, x);
            double sum = 0;
            foreach (var x in row) sum += Math.Exp(x - max);
            shuffledTotal += max + Math.Log(sum) - row[shuffled[t + 1]];
        }
        double shuffledLoss = shuffledTotal / (shuffled.Length - 1);
        TestContext.Out.WriteLine($"shuffled: {shuffledLoss:F4} nats/token");
        Assert.That(shuffledLoss, Is.GreaterThan(loss + 2));
        // The reference's own loss agrees with the one computed here from its logits.
        Assert.That(model.LossAndPromptGradient(ids, [], targets, 1, ids.Length).Loss, Is.EqualTo(loss).Within(1e-9));
    }
}
