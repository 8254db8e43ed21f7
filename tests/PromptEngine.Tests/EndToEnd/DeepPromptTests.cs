using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Deep prompts (prefix tuning / P-tuning v2): the reference's dPrefix against finite differences, the engine's
/// loss, logits, dPrefix and dPrompt against the reference on tiny GQA Llama and GPT-2 models, the engine's float
/// gradient against its own finite differences, cached generation with a prefix against the uncached path, and the
/// optimizer moving prompt and prefix as one vector.</summary>
public class DeepPromptTests
{
    public enum Family { LlamaGqa, Gpt2 }

    const int DeepVirtualTokens = 2;

    static string Config(Family family) => family == Family.LlamaGqa
        ? ModelReferenceTinyModels.LlamaConfig()          // H 4, KV 2, hs 4: two query heads per kv head
        : ModelReferenceTinyModels.Gpt2Config(positions: 64);

    static float[] RandomValues(int count, int seed, double scale = 1)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (float)(scale * (rng.NextDouble() * 2 - 1))).ToArray();
    }

    /// <summary>Two rows (one right-padded), the first with a 2-row plain prompt in front too; every position after the
    /// first token predicts the next.</summary>
    static Batch TwoRows(int vocab, int seed, bool withPrompt)
    {
        var rng = new Random(seed);
        List<Slot> Row(int tokens, bool prompt)
        {
            var sources = new List<int>();
            if (prompt) sources.AddRange([-1, -2]);
            for (var i = 0; i < tokens; i++) sources.Add(rng.Next(vocab));
            return sources.Select((s, i) => new Slot(s, i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1)).ToList();
        }
        return BatchBuilder.Build([Row(7, withPrompt), Row(4, false)]);
    }

    static int[] DenseTargets(Batch batch)
    {
        var targets = Enumerable.Repeat(-1, batch.Positions).ToArray();
        for (var i = 0; i < batch.LossPositions.Length; i++) targets[batch.LossPositions[i]] = batch.Targets[i];
        return targets;
    }

    static double[] ToDouble(float[] values) => Array.ConvertAll(values, v => (double)v);

    [Test]
    public void ReferencePrefixGradientMatchesFiniteDifferences([Values] Family family)
    {
        // Central differences of the double reference's loss in every prefix coordinate (and the prompt's): h = 1e-6 gives
        // ~1e-10 truncation and rounding error, far below the 1e-6 + 1e-5·|g| tolerance (float-rounded comparison).
        var reference = ModelReferenceTinyModels.LoadAndDelete(ModelReferenceTinyModels.WriteRandom(Config(family), seed: 41));
        var config = reference.Config;
        var batch = TwoRows(config.VocabSize, seed: 5, withPrompt: true);
        var prefixLength = (int)TransformerEngine.PrefixLengthOf(config, DeepVirtualTokens);
        var prefix = ToDouble(RandomValues(prefixLength, 6));
        var prompt = ToDouble(RandomValues(2 * config.HiddenSize, 7));
        var targets = DenseTargets(batch);
        var (_, dPrompt, dPrefix) = reference.LossAndGradients(batch.SourceMap, prompt, prefix, DeepVirtualTokens, targets, batch.Rows, batch.Length, batch.KeyMask);
        double Loss(double[] p, double[] x) => reference.LossAndGradients(batch.SourceMap, p, x, DeepVirtualTokens, targets, batch.Rows, batch.Length, batch.KeyMask).Loss;
        var numericPrefix = FiniteDifference.Gradient(x => [Loss(prompt, x)], prefix, [1.0]);
        var numericPrompt = FiniteDifference.Gradient(p => [Loss(p, prefix)], prompt, [1.0]);
        Assert.That(dPrefix.Max(Math.Abs), Is.GreaterThan(1e-3), "dPrefix must not be trivially zero");
        TensorAssert.Close($"{family} reference dPrefix vs finite differences", dPrefix, numericPrefix, 1e-6, 1e-5);
        TensorAssert.Close($"{family} reference dPrompt (with a prefix) vs finite differences", dPrompt, numericPrompt, 1e-6, 1e-5);
    }

    [Test]
    public void ReferenceWithAnEmptyPrefixEqualsThePlainReference()
    {
        // Pv = 0 must be exactly the plain path, so the prefix code cannot hide a change to it.
        var reference = ModelReferenceTinyModels.LoadAndDelete(ModelReferenceTinyModels.WriteRandom(Config(Family.LlamaGqa), seed: 42));
        var batch = TwoRows(reference.Config.VocabSize, seed: 8, withPrompt: true);
        var prompt = ToDouble(RandomValues(2 * reference.Config.HiddenSize, 9));
        var targets = DenseTargets(batch);
        var plain = reference.LossAndPromptGradient(batch.SourceMap, prompt, targets, batch.Rows, batch.Length, batch.KeyMask);
        var deep = reference.LossAndGradients(batch.SourceMap, prompt, [], 0, targets, batch.Rows, batch.Length, batch.KeyMask);
        Assert.That(deep.Loss, Is.EqualTo(plain.Loss));
        Assert.That(deep.DPrompt, Is.EqualTo(plain.DPrompt));
    }

    [Test]
    public void EngineMatchesTheReference([Values] Family family, [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 43 + (int)family);
        try
        {
            using var model = ModelFolder.Open(folder);
            var reference = ModelReference.Load(model);
            var config = model.Config;
            var batch = TwoRows(config.VocabSize, seed: 10, withPrompt: true);
            var prefix = RandomValues((int)TransformerEngine.PrefixLengthOf(config, DeepVirtualTokens), 11);
            var prompt = RandomValues(2 * config.HiddenSize, 12);

            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 2, DeepVirtualTokens: DeepVirtualTokens));
            engine.SetPrompt(prompt);
            engine.SetPrefix(prefix);
            var loss = engine.LossAndPromptGradient(batch);
            var dPrefix = engine.GetPrefixGradient();
            var dPrompt = engine.GetPromptGradient();
            var logits = engine.Logits(batch);

            // The reference gets the positions explicitly (HF: the input follows the Pv prefix positions); the engine shifts them itself.
            var positions = batch.PositionIds.Select(p => p + DeepVirtualTokens).ToArray();
            var (refLoss, refPrompt, refPrefix) = reference.LossAndGradients(batch.SourceMap, ToDouble(prompt), ToDouble(prefix), DeepVirtualTokens,
                DenseTargets(batch), batch.Rows, batch.Length, batch.KeyMask, positions);
            var refAll = reference.LogitsWithPrefix(batch.SourceMap, ToDouble(prompt), ToDouble(prefix), DeepVirtualTokens, batch.Rows, batch.Length, batch.KeyMask, positions);
            int V = config.VocabSize;
            var refLogits = batch.LossPositions.SelectMany(p => Enumerable.Range(0, V).Select(v => refAll[(long)p * V + v])).ToArray();

            // float32 through 2 blocks of O(1) activations: ~1e-6 relative; 1e-4 of the largest magnitude is far below what a
            // wrong index or a missing term gives (≥ 1e-2).
            TestContext.Out.WriteLine($"{family} {shape}: loss {loss} vs {refLoss:R}");
            Assert.That(Math.Abs(loss - refLoss), Is.LessThanOrEqualTo(1e-5 + 1e-5 * Math.Abs(refLoss)), "loss");
            TensorAssert.Close("logits", logits, refLogits, 1e-4 * refLogits.Max(Math.Abs), 0);
            Assert.That(refPrefix.Max(Math.Abs), Is.GreaterThan(1e-3));
            TensorAssert.Close("dPrefix", dPrefix, refPrefix, 1e-4 * refPrefix.Max(Math.Abs), 0);
            TensorAssert.Close("dPrompt", dPrompt, refPrompt, 1e-4 * refPrompt.Max(Math.Abs), 0);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void EngineFloatFiniteDifferencesAgreeWithDPrefix([Values] Family family)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 45);
        try
        {
            using var model = ModelFolder.Open(folder);
            var batch = TwoRows(model.Config.VocabSize, seed: 13, withPrompt: false);
            var prefix = RandomValues((int)TransformerEngine.PrefixLengthOf(model.Config, DeepVirtualTokens), 14);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 0, DeepVirtualTokens: DeepVirtualTokens));
            engine.SetPrefix(prefix);
            engine.LossAndPromptGradient(batch);
            var gradient = engine.GetPrefixGradient();
            const float h = 1e-2f;
            // Keys and values of both layers.
            foreach (var index in new[] { 0, 9, prefix.Length / 4 + 3, prefix.Length / 2 + 5, prefix.Length - 1 })
            {
                float LossAt(float delta)
                {
                    var shifted = (float[])prefix.Clone();
                    shifted[index] += delta;
                    engine.SetPrefix(shifted);
                    return engine.Loss(batch);
                }
                var numeric = (LossAt(h) - LossAt(-h)) / (2 * h);
                TestContext.Out.WriteLine($"{family} prefix[{index}]: analytic {gradient[index]:E4}, finite difference {numeric:E4}");
                Assert.That(numeric, Is.EqualTo(gradient[index]).Within(2e-3 + 2e-2 * Math.Abs(gradient[index])), $"prefix[{index}]");
            }
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void CachedGenerationWithAPrefixEqualsUncached([Values] Family family, [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 47);
        try
        {
            using var model = ModelFolder.Open(folder);
            int V = model.Config.VocabSize;
            var rng = new Random(15);
            var sequences = new[] { new List<int> { 3, 5, 7 }, new List<int> { 1 } };
            var prefix = RandomValues((int)TransformerEngine.PrefixLengthOf(model.Config, DeepVirtualTokens), 16);
            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 12, 0, Training: false, DeepVirtualTokens: DeepVirtualTokens));
            engine.SetPrefix(prefix);
            var cached = engine.Prefill(Generator.PrefillBatch(engine, sequences.Select(s => new GenerationRequest(s.ToArray(), [])).ToArray()));
            for (var step = 0; step < 4; step++)
            {
                var uncached = engine.Logits(BatchBuilder.Build(sequences.Select(s =>
                {
                    var row = s.Select(t => Slot.Token(t)).ToList();
                    row[^1] = row[^1] with { Target = 0 };
                    return (IReadOnlyList<Slot>)row;
                }).ToArray()));
                TensorAssert.Close($"{family} {shape} step {step} cached vs uncached logits", cached, ToDouble(uncached), 1e-4, 1e-4);
                var next = sequences.Select(_ => rng.Next(V)).ToArray();
                for (var b = 0; b < sequences.Length; b++) sequences[b].Add(next[b]);
                cached = engine.DecodeStep(next);
            }
            Assert.That(engine.CacheLengths, Is.EqualTo(new[] { DeepVirtualTokens + 7, DeepVirtualTokens + 5 }), "cache lengths count the prefix slots");
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void OptimizerMovesOnlyThePrefixWhenThereIsNoPrompt()
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(Family.LlamaGqa), seed: 49);
        try
        {
            using var model = ModelFolder.Open(folder);
            var batch = TwoRows(model.Config.VocabSize, seed: 17, withPrompt: false);
            var prefix = RandomValues((int)TransformerEngine.PrefixLengthOf(model.Config, DeepVirtualTokens), 18);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 0, DeepVirtualTokens: DeepVirtualTokens));
            engine.SetPrefix(prefix);
            var before = engine.LossAndPromptGradient(batch);
            // Two identical batches accumulate twice the gradient.
            var once = engine.GetPrefixGradient();
            engine.LossAndPromptGradient(batch);
            var twice = engine.GetPrefixGradient();
            TensorAssert.Close("accumulated dPrefix", twice, once.Select(g => 2.0 * g).ToArray(), 1e-6, 1e-5);
            var norm = engine.OptimizerStep(0.05f, accumulatedBatches: 2);
            Assert.That(norm, Is.EqualTo(Math.Sqrt(once.Sum(g => (double)g * g))).Within(1e-3 * norm));
            var after = engine.GetPrefix();
            Assert.That(after, Is.Not.EqualTo(prefix));
            // AdamW's first step moves each coordinate by about lr against its gradient's sign.
            for (var i = 0; i < after.Length; i++)
                if (Math.Abs(once[i]) > 1e-4) Assert.That(Math.Sign(after[i] - prefix[i]), Is.EqualTo(-Math.Sign(once[i])), $"prefix[{i}]");
            engine.ZeroPromptGradient();
            Assert.That(engine.Loss(batch), Is.LessThan(before), "a step against the gradient lowers the loss");
            var (m, v, step) = engine.GetOptimizerState();
            Assert.That((m.Length, v.Length, step), Is.EqualTo((after.Length, after.Length, 1)));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
