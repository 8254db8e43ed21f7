using System.Text.Json;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Tests.Kernels;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Prefix tuning's reparameterisation MLP (<see cref="PrefixProjection"/>) on a tiny random Llama with GQA: its
/// initialisation, its output in the engine's prefix against the double reference, dLoss/dParameters against the double
/// reference's backward and against central finite differences of the engine's loss, the refusal of a non-finite
/// gradient, and the folding: a saved prompt, loaded as a plain deep prompt, gives the loss the projection gave.</summary>
public class PrefixProjectionTests
{
    const int Pv = 3, Hidden = 6;
    string folder = "";

    [SetUp]
    public void WriteModel() => folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 61); // H 4, KV 2, hs 4, L 2

    [TearDown]
    public void DeleteModel() => Directory.Delete(folder, recursive: true);

    /// <summary>Two rows (one right-padded); every position after the first token predicts the next.</summary>
    static Batch TwoRows(int vocab, int seed)
    {
        var rng = new Random(seed);
        List<Slot> Row(int tokens) => BatchBuilder.LanguageModelRow(Enumerable.Range(0, tokens).Select(_ => rng.Next(vocab)).ToList(), [], [], PromptPlacement.Prefix);
        return BatchBuilder.Build([Row(7), Row(4)]);
    }

    static double[] ToDouble(float[] values) => Array.ConvertAll(values, v => (double)v);

    static (int D, int Width) Dims(TransformerConfig c) => (c.NumKvHeads * c.HeadDim, c.NumLayers * 2 * c.NumKvHeads * c.HeadDim);

    [Test]
    public void InitialisationIsSeededAndFollowsPyTorchsDefaults()
    {
        using var model = ModelFolder.Open(folder);
        var (d, width) = Dims(model.Config);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        const int tokens = 50; // enough embedding values (400) for its moments
        using var a = new PrefixProjection(kernels, model.Config, tokens, Hidden, seed: 7);
        using var b = new PrefixProjection(kernels, model.Config, tokens, Hidden, seed: 7);
        using var c = new PrefixProjection(kernels, model.Config, tokens, Hidden, seed: 8);
        Assert.That(a.Parameters, Is.EqualTo(tokens * d + Hidden * d + Hidden + width * Hidden + width));
        Assert.That(a.Reparameterisation, Is.EqualTo("mlp 6"));
        var values = a.GetParameters();
        Assert.That(values, Is.EqualTo(b.GetParameters()), "same seed, same parameters");
        Assert.That(values, Is.Not.EqualTo(c.GetParameters()), "another seed, other parameters");
        var (e, w1, b1, w2, b2) = PrefixProjectionReference.Split(ToDouble(values), tokens, d, Hidden, width);
        // E ~ N(0, 1): 400 draws put the mean within ±0.15 and the deviation within 0.85..1.15 (>3σ of the estimators).
        double mean = e.Average(), deviation = Math.Sqrt(e.Sum(v => (v - mean) * (v - mean)) / e.Length);
        TestContext.Out.WriteLine($"E: mean {mean:F3}, deviation {deviation:F3}, max |E| {e.Max(Math.Abs):F2}");
        Assert.That(mean, Is.InRange(-0.15, 0.15));
        Assert.That(deviation, Is.InRange(0.85, 1.15));
        // Linear weights and biases ~ U(±1/√fan_in): inside the bound, and spread over it.
        foreach (var (name, part, fanIn) in new[] { ("W1", w1, d), ("b1", b1, d), ("W2", w2, Hidden), ("b2", b2, Hidden) })
        {
            double bound = 1 / Math.Sqrt(fanIn);
            Assert.That(part.Max(Math.Abs), Is.LessThanOrEqualTo(bound).And.GreaterThan(0.6 * bound), name);
        }
    }

    [Test]
    public void ForwardWritesTheReferenceMlpOutputIntoTheEnginesPrefix([Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        using var model = ModelFolder.Open(folder);
        var config = model.Config;
        var (d, width) = Dims(config);
        using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 7, 0, DeepVirtualTokens: Pv));
        using var projection = new PrefixProjection(kernels, config, Pv, Hidden, seed: 3);
        projection.Forward(engine);
        var expected = PrefixProjectionReference.ToEngineLayout(
            PrefixProjectionReference.Forward(ToDouble(projection.GetParameters()), Pv, d, Hidden, width), Pv, 2 * config.NumLayers, d);
        // Two float Linears with reductions of ≤ 8 terms of O(1) and a tanh: ~1e-6; 1e-5 + 1e-5·|ref|.
        TensorAssert.Close($"projected prefix {shape}", engine.GetPrefix(), expected, 1e-5, 1e-5);
    }

    [Test]
    public void GradientMatchesTheReferenceAndFiniteDifferencesOfTheEnginesLoss()
    {
        using var model = ModelFolder.Open(folder);
        var config = model.Config;
        var (d, width) = Dims(config);
        var batch = TwoRows(config.VocabSize, seed: 5);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 0, DeepVirtualTokens: Pv));
        using var projection = new PrefixProjection(kernels, config, Pv, Hidden, seed: 9);
        var parameters = projection.GetParameters();
        projection.Forward(engine);
        engine.ZeroPromptGradient();
        engine.LossAndPromptGradient(batch);
        projection.Backward(engine);
        var gradient = projection.GetGradient();

        // The kernels' chain against the double reference's, from the same dPrefix.
        var dOutput = PrefixProjectionReference.ToPeftLayout(ToDouble(engine.GetPrefixGradient()), Pv, 2 * config.NumLayers, d);
        var expected = PrefixProjectionReference.Backward(ToDouble(parameters), dOutput, Pv, d, Hidden, width);
        Assert.That(expected.Max(Math.Abs), Is.GreaterThan(1e-3), "the gradient must not be trivially zero");
        // float reductions of ≤ 32 terms: 1e-5 of the largest magnitude is far below a wrong index or a missing term.
        TensorAssert.Close("dParameters vs reference", gradient, expected, 1e-5 * expected.Max(Math.Abs), 1e-5);

        // End to end: central differences of the engine's float loss through the MLP, a few entries of each tensor.
        // h = 1e-2 in float: the loss (~4) rounds to ~4e-7, ~2e-5 of noise in the quotient, and the truncation error
        // h²·f'''/6 is of the same order here (seen: ≤ 4e-5 over these entries); 2e-4 + 1e-2·|g| keeps a 5× margin,
        // while a wrong or missing term moves a gradient of 1e-2..1e-1 by far more.
        int[] offsets = [0, Pv * d, Pv * d + Hidden * d, Pv * d + Hidden * d + Hidden, Pv * d + Hidden * d + Hidden + width * Hidden];
        string[] names = ["E", "W1", "b1", "W2", "b2"];
        int[] lengths = [Pv * d, Hidden * d, Hidden, width * Hidden, width];
        const float h = 1e-2f;
        var checkedCount = 0;
        for (var part = 0; part < names.Length; part++)
            foreach (var within in new[] { 0, lengths[part] / 2 + 1, lengths[part] - 1 })
            {
                int index = offsets[part] + within;
                float LossAt(float delta)
                {
                    var shifted = (float[])parameters.Clone();
                    shifted[index] += delta;
                    projection.SetParameters(shifted);
                    projection.Forward(engine);
                    return engine.Loss(batch);
                }
                var numeric = (LossAt(h) - LossAt(-h)) / (2 * h);
                TestContext.Out.WriteLine($"{names[part]}[{within}]: analytic {gradient[index]:E4}, finite difference {numeric:E4}");
                Assert.That(numeric, Is.EqualTo(gradient[index]).Within(2e-4 + 1e-2 * Math.Abs(gradient[index])), $"{names[part]}[{within}]");
                if (Math.Abs(gradient[index]) > 1e-2) checkedCount++;
            }
        Assert.That(checkedCount, Is.GreaterThanOrEqualTo(5), "enough sampled entries with a clearly non-zero gradient");
    }

    [Test]
    public void NonFiniteGradientIsRefusedWithoutTouchingTheParameters()
    {
        using var model = ModelFolder.Open(folder);
        var batch = TwoRows(model.Config.VocabSize, seed: 6);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, 0, DeepVirtualTokens: Pv));
        using var projection = new PrefixProjection(kernels, model.Config, Pv, Hidden, seed: 2);
        var poisoned = projection.GetParameters();
        poisoned[^1] = float.NaN; // a b2 entry: one prefix value NaN, the loss and every gradient follow
        projection.SetParameters(poisoned);
        projection.Forward(engine);
        engine.ZeroPromptGradient();
        Assert.That(float.IsNaN(engine.LossAndPromptGradient(batch)));
        projection.Backward(engine);
        using var optimizer = new AdamWOptimizer(kernels);
        var e = Assert.Throws<NonFiniteGradientException>(() => optimizer.Step(projection.Trainables, new AdamWSettings(0.01f, MaxGradNorm: 1f)))!;
        Assert.That(e.Message, Does.Contain("not finite").And.Contain("step 1"));
        var after = projection.GetParameters();
        Assert.That(after.Select(BitConverter.SingleToInt32Bits), Is.EqualTo(poisoned.Select(BitConverter.SingleToInt32Bits)), "parameters untouched");
        var (m, v, step) = projection.GetOptimizerState();
        Assert.That((m.All(x => x == 0), v.All(x => x == 0), step), Is.EqualTo((true, true, 0)), "optimizer state untouched");
    }

    [Test]
    public void MisuseIsRefusedClearly()
    {
        using var model = ModelFolder.Open(folder);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var other = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 7, 0, DeepVirtualTokens: Pv));
        using var inference = new TransformerEngine(kernels, model, new EngineOptions(2, 7, 0, Training: false, DeepVirtualTokens: Pv));
        using var projection = new PrefixProjection(kernels, model.Config, Pv, Hidden, seed: 1);
        using var fourTokens = new PrefixProjection(kernels, model.Config, Pv + 1, Hidden, seed: 1);
        using var elsewhere = new PrefixProjection(other, model.Config, Pv, Hidden, seed: 1);
        Assert.That(Assert.Throws<ArgumentException>(() => fourTokens.Forward(engine))!.Message, Does.Contain("4 virtual tokens").And.Contain("has 3"));
        Assert.That(Assert.Throws<ArgumentException>(() => elsewhere.Forward(engine))!.Message, Does.Contain("another kernel context"));
        projection.Forward(inference);
        Assert.That(Assert.Throws<ArgumentException>(() => projection.Backward(inference))!.Message, Does.Contain("training engine"));
        projection.SetParameters(projection.GetParameters());
        Assert.That(Assert.Throws<InvalidOperationException>(() => projection.Backward(engine))!.Message, Does.Contain("Forward"));
        Assert.That(Assert.Throws<ArgumentException>(() => projection.SetParameters(new float[3]))!.Message, Does.Contain($"hold {projection.Parameters}"));
        Assert.Throws<ArgumentOutOfRangeException>(() => new PrefixProjection(kernels, model.Config, Pv, 0, seed: 1));
    }

    /// <summary>Batches drawn by index from a seed, without prompt rows: predict token 5 after a few tokens.</summary>
    internal sealed class IndexedBatches(int vocab, int seed) : ITrainingBatches
    {
        int index;
        public Batch Next()
        {
            var rng = new Random(seed * 1000 + index++);
            return BatchBuilder.Build(Enumerable.Range(0, 2).Select(b =>
                (IReadOnlyList<Slot>)BatchBuilder.LanguageModelRow(Enumerable.Range(0, 4 + b).Select(_ => rng.Next(vocab)).ToList(), [5], [], PromptPlacement.Prefix)).ToList());
        }
        public string SaveState() => index.ToString(System.Globalization.CultureInfo.InvariantCulture);
        public void RestoreState(string state) => index = int.Parse(state, System.Globalization.CultureInfo.InvariantCulture);
    }

    /// <summary>Scores the engine by minus its loss on one fixed batch and remembers each loss, so the best prompt's
    /// loss under the projection is known exactly.</summary>
    sealed class FixedBatchEvaluator(Batch batch) : IEvaluator
    {
        public readonly List<float> Losses = [];
        public EvalReport Evaluate(TransformerEngine engine)
        {
            var loss = engine.Loss(batch);
            Losses.Add(loss);
            return new EvalReport(-loss, "neg_loss", loss);
        }
    }

    [Test]
    public void TheSavedPromptIsTheFoldedPrefixAndGivesTheSameLossAsAPlainDeepPrompt()
    {
        var output = Directory.CreateTempSubdirectory("pe-projection-").FullName;
        try
        {
            using var model = ModelFolder.Open(folder);
            var config = model.Config;
            var probe = TwoRows(config.VocabSize, seed: 8);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 7, 0, DeepVirtualTokens: Pv));
            using var projection = new PrefixProjection(kernels, config, Pv, Hidden, seed: 4);
            var evaluator = new FixedBatchEvaluator(probe);
            var options = new TrainerOptions { Steps = 4, LearningRate = _ => 0.05f, EvalEvery = 1, OutputDirectory = output, RunFingerprint = "fold" };
            var summary = new Trainer(engine, new IndexedBatches(config.VocabSize, 1), evaluator, options, projection).Run();
            var lossUnderProjection = evaluator.Losses[summary.BestStep - 1];
            var best = DeepPromptFile.Load(summary.BestPromptPath!, config);
            Assert.That(best.Meta(PromptMetadata.Reparameterisation), Is.EqualTo("mlp 6"));
            Assert.That(best.VirtualTokens, Is.EqualTo(Pv));

            // A plain deep-prompt engine (no projection anywhere) reading the file, and the PEFT adapter written from it.
            var adapter = Path.Combine(output, "adapter");
            PeftAdapter.SavePrefix(adapter, best, model);
            using var plain = new TransformerEngine(kernels, model, new EngineOptions(2, 7, 0, Training: false, DeepVirtualTokens: Pv));
            plain.SetPrefix(best.ToEngineLayout());
            var fromFile = plain.Loss(probe);
            plain.SetPrefix(PeftAdapter.LoadPrefix(adapter, config).ToEngineLayout());
            var fromAdapter = plain.Loss(probe);
            TestContext.Out.WriteLine($"best step {summary.BestStep}: loss {lossUnderProjection:R} under the projection, {fromFile:R} from the file, {fromAdapter:R} from the adapter");
            Assert.That(fromFile, Is.EqualTo(lossUnderProjection), "bit-identical: the file holds the projection's output");
            Assert.That(fromAdapter, Is.EqualTo(lossUnderProjection));
            using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName)));
            Assert.That(json.RootElement.GetProperty("peft_type").GetString(), Is.EqualTo("PREFIX_TUNING"));
            Assert.That(json.RootElement.GetProperty("prefix_projection").GetBoolean(), Is.False, "the adapter holds the folded prefix");
        }
        finally { Directory.Delete(output, recursive: true); }
    }
}
