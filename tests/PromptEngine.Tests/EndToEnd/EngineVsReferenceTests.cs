using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The whole engine (float32 kernels) against the whole-model reference (double, naive loops,
/// its gradient checked by finite differences in ModelReferenceTests): logits, loss and dLoss/dPrompt
/// on tiny random Llama (GQA, with and without q/k/v bias) and GPT-2 models, for every placement.</summary>
public class EngineVsReferenceTests
{
    public enum Family { LlamaGqa, LlamaTiedBias, Gpt2 }
    public enum Layout { Prefix, Suffix, Interleaved, MixedTaskBatch, Verbalizer }

    const int PromptLength = 3;

    static string Config(Family family) => family switch
    {
        Family.LlamaGqa => ModelReferenceTinyModels.LlamaConfig(),
        Family.LlamaTiedBias => ModelReferenceTinyModels.LlamaConfig(qkvBias: true, tied: true),
        _ => ModelReferenceTinyModels.Gpt2Config(),
    };

    /// <summary>A batch of the layout with the bank's rows, built from seeded random tokens.</summary>
    static (Batch Batch, int BankRows) Build(Layout layout, int vocab, int seed)
    {
        var rng = new Random(seed);
        int Token() => rng.Next(vocab);
        List<Slot> Row(IEnumerable<object> parts)
        {
            // Each part is a token (int) or a prompt row (string "p<k>"); every position predicts the next token.
            var sources = parts.Select(p => p is string s ? -1 - int.Parse(s[1..]) : (int)p).ToList();
            var row = new List<Slot>();
            for (var i = 0; i < sources.Count; i++)
                row.Add(new Slot(sources[i], i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1));
            return row;
        }
        IEnumerable<object> Tokens(int n) => Enumerable.Range(0, n).Select(_ => (object)Token());
        IEnumerable<object> Prompt(int first) => Enumerable.Range(first, PromptLength).Select(p => (object)$"p{p}");
        switch (layout)
        {
            case Layout.Prefix:
                return (BatchBuilder.Build([Row(Prompt(0).Concat(Tokens(8)))]), PromptLength);
            case Layout.Suffix:
                return (BatchBuilder.Build([Row(Tokens(6).Concat(Prompt(0)).Concat(Tokens(4)))]), PromptLength);
            case Layout.Interleaved:
                return (BatchBuilder.Build([Row(new object[] { Token(), "p0", Token(), Token(), "p1", Token(), "p2" }.Concat(Tokens(3)))]), PromptLength);
            case Layout.MixedTaskBatch:
                // Two tasks in one batch from a bank of two prompts; the second row is shorter (right padding).
                return (BatchBuilder.Build([Row(Prompt(0).Concat(Tokens(8))), Row(Prompt(PromptLength).Concat(Tokens(5)))]), 2 * PromptLength);
            default:
                // Classification: one scored position per row, softmax over three label words only.
                int[] words = [3, 7, 11];
                var rows = new List<IReadOnlyList<Slot>>();
                for (var b = 0; b < 2; b++)
                {
                    var row = Prompt(0).Concat(Tokens(7 - b)).Select(p => new Slot(p is string s ? -1 - int.Parse(s[1..]) : (int)p)).ToList();
                    row[^1] = row[^1] with { Target = words[rng.Next(words.Length)] };
                    rows.Add(row);
                }
                return (BatchBuilder.Build(rows, verbalizer: words), PromptLength);
        }
    }

    static int[] DenseTargets(Batch batch)
    {
        var targets = Enumerable.Repeat(-1, batch.Positions).ToArray();
        for (var i = 0; i < batch.LossPositions.Length; i++) targets[batch.LossPositions[i]] = batch.Targets[i];
        return targets;
    }

    static double MaxAbs(IEnumerable<double> values) => values.Select(Math.Abs).DefaultIfEmpty(0).Max();

    [Test]
    public void MatchesTheReference(
        [Values] Family family,
        [Values] Layout layout,
        [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: (int)family + 11);
        try
        {
            using var model = ModelFolder.Open(folder);
            var reference = ModelReference.Load(model);
            var (batch, bankRows) = Build(layout, model.Config.VocabSize, seed: 100 * (int)layout + (int)family);
            var rng = new Random(7);
            var prompt = Enumerable.Range(0, bankRows * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, bankRows));
            engine.SetPrompt(prompt);
            var loss = engine.LossAndPromptGradient(batch);
            var gradient = engine.GetPromptGradient();
            var logits = engine.Logits(batch);

            var promptD = prompt.Select(x => (double)x).ToArray();
            var (refLoss, refGradient) = reference.LossAndPromptGradient(batch.SourceMap, promptD, DenseTargets(batch), batch.Rows, batch.Length,
                batch.KeyMask, batch.PositionIds, batch.Verbalizer);
            var refAll = reference.Logits(batch.SourceMap, promptD, batch.Rows, batch.Length, batch.KeyMask, batch.PositionIds);
            var V = model.Config.VocabSize;
            var width = batch.Verbalizer?.Length ?? V;
            var refLogits = batch.LossPositions.SelectMany(p => batch.Verbalizer is { } words
                ? words.Select(w => refAll[(long)p * V + w]) : Enumerable.Range(0, V).Select(v => refAll[(long)p * V + v])).ToArray();

            // float32 through 2 blocks of O(1) activations: errors are ~1e-6 relative; 1e-4 of the
            // largest magnitude is far below what a wrong index or a missing term produces (≥ 1e-2).
            var logitError = MaxAbs(logits.Select((x, i) => x - refLogits[i]));
            var gradientError = MaxAbs(gradient.Select((g, i) => g - refGradient[i]));
            var gradientScale = MaxAbs(refGradient);
            TestContext.Out.WriteLine($"{family} {layout} {shape}: loss {loss} vs {refLoss:R}; max logit error {logitError:E2}; max dPrompt error {gradientError:E2} (max |dPrompt| {gradientScale:E2})");
            Assert.That(logits, Has.Length.EqualTo(batch.LossPositions.Length * width));
            Assert.That(Math.Abs(loss - refLoss), Is.LessThanOrEqualTo(1e-5 + 1e-5 * Math.Abs(refLoss)), "loss");
            Assert.That(logitError, Is.LessThanOrEqualTo(1e-4 * Math.Max(1, MaxAbs(refLogits))), "logits");
            Assert.That(gradientScale, Is.GreaterThan(1e-3), "the gradient must not be trivially zero");
            Assert.That(gradientError, Is.LessThanOrEqualTo(1e-4 * gradientScale), "dLoss/dPrompt");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    [Test]
    public void FloatFiniteDifferencesAgreeWithTheEngineGradient([Values] Family family)
    {
        // A direct check of the engine alone: central differences of its own float32 loss on a few
        // prompt coordinates (h = 1e-2 keeps rounding noise ~1e-5 below the O(1e-2) differences).
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 5);
        try
        {
            using var model = ModelFolder.Open(folder);
            var (batch, bankRows) = Build(Layout.MixedTaskBatch, model.Config.VocabSize, seed: 3);
            var rng = new Random(9);
            var prompt = Enumerable.Range(0, bankRows * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, bankRows));
            engine.SetPrompt(prompt);
            engine.LossAndPromptGradient(batch);
            var gradient = engine.GetPromptGradient();
            const float h = 1e-2f;
            foreach (var index in new[] { 0, 17, 40, 63, 95 })
            {
                var plus = (float[])prompt.Clone();
                plus[index] += h;
                engine.SetPrompt(plus);
                var lossPlus = engine.Loss(batch);
                var minus = (float[])prompt.Clone();
                minus[index] -= h;
                engine.SetPrompt(minus);
                var lossMinus = engine.Loss(batch);
                var numeric = (lossPlus - lossMinus) / (2 * h);
                TestContext.Out.WriteLine($"{family} prompt[{index}]: analytic {gradient[index]:E4}, finite difference {numeric:E4}");
                Assert.That(numeric, Is.EqualTo(gradient[index]).Within(2e-3 + 2e-2 * Math.Abs(gradient[index])), $"prompt[{index}]");
            }
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
