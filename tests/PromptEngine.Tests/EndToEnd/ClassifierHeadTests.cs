using System.Text.Json;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Safetensors;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The linear classifier head (<see cref="ClassifierHead"/>) in the engine, on a tiny random Llama with GQA: at its
/// start it is the zero-shot verbalizer (same logits, loss and dPrompt), its gradient matches central finite differences of
/// the engine's loss, it travels in prompt files and PEFT SEQ_CLS adapters, and a head that does not fit is refused.</summary>
public class ClassifierHeadTests
{
    const int P = 2;
    static readonly int[] LabelWords = [5, 9];
    static readonly string[] Labels = ["negative", "positive"];
    string folder = "";

    [SetUp]
    public void WriteModel() => folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 71); // C 16, V 37

    [TearDown]
    public void DeleteModel() => Directory.Delete(folder, recursive: true);

    /// <summary>Rows of random tokens after a P-row prompt (or none), the last token predicting label word 5 when the first
    /// token is below half the vocabulary and 9 otherwise: a rule a head on the last hidden state can learn.</summary>
    internal sealed class LabelledBatches(int vocab, int promptTableRows, int seed, int rows = 4) : ITrainingBatches
    {
        int index;
        public Batch Next() => Make(seed * 1000 + index++);
        public Batch Make(int batchSeed)
        {
            var rng = new Random(batchSeed);
            return BatchBuilder.Build(Enumerable.Range(0, rows).Select(b =>
            {
                var tokens = Enumerable.Range(0, 4 + b % 2).Select(_ => 1 + rng.Next(vocab - 1)).ToList();
                int label = tokens[0] < vocab / 2 ? LabelWords[0] : LabelWords[1];
                return (IReadOnlyList<Slot>)BatchBuilder.LanguageModelRow(tokens, [label], Enumerable.Range(0, promptTableRows).ToList(), PromptPlacement.Prefix)
                    .Where((_, i) => i < promptTableRows + tokens.Count).ToList(); // the label token itself is not an input
            }).ToList(), LabelWords);
        }
        public string SaveState() => index.ToString(System.Globalization.CultureInfo.InvariantCulture);
        public void RestoreState(string state) => index = int.Parse(state, System.Globalization.CultureInfo.InvariantCulture);
    }

    static float[] Prompt(int width, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, P * width).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
    }

    [Test]
    public void AtItsStartTheHeadIsTheZeroShotVerbalizer()
    {
        using var model = ModelFolder.Open(folder);
        var batch = new LabelledBatches(model.Config.VocabSize, P, seed: 1).Next();
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, P));
        engine.SetPrompt(Prompt(model.Config.HiddenSize, 3));
        var logits = engine.Logits(batch);
        engine.ZeroPromptGradient();
        var loss = engine.LossAndPromptGradient(batch);
        var dPrompt = engine.GetPromptGradient();

        using var head = ClassifierHead.FromLabelWords(engine, Labels, LabelWords);
        Assert.That(head.GetParameters()[^2..], Is.EqualTo(new float[2]), "bias 0");
        engine.AttachHead(head);
        engine.ZeroPromptGradient();
        var headLoss = engine.LossAndPromptGradient(batch);
        // The same kernels over the same rows in the same order, plus a zero bias: bit-identical.
        Assert.That(engine.Logits(batch), Is.EqualTo(logits), "logits");
        Assert.That(headLoss, Is.EqualTo(loss), "loss");
        Assert.That(engine.GetPromptGradient(), Is.EqualTo(dPrompt), "dPrompt");
        Assert.That(head.GetGradient().Max(Math.Abs), Is.GreaterThan(1e-4f), "the head received a gradient");
    }

    [Test]
    public void HeadGradientMatchesFiniteDifferencesOfTheEnginesLoss([Values(0, 3)] int deepVirtualTokens)
    {
        using var model = ModelFolder.Open(folder);
        int C = model.Config.HiddenSize, promptTableRows = deepVirtualTokens > 0 ? 0 : P;
        var batch = new LabelledBatches(model.Config.VocabSize, promptTableRows, seed: 2).Next();
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows, DeepVirtualTokens: deepVirtualTokens));
        if (deepVirtualTokens > 0) engine.SetPrefix(DeepPrompt.Random(model.Config, deepVirtualTokens, seed: 4).ToEngineLayout());
        else engine.SetPrompt(Prompt(C, 4));
        using var head = new ClassifierHead(kernels, C, Labels);
        var rng = new Random(5);
        var parameters = Enumerable.Range(0, (int)head.Parameters).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
        head.SetParameters(parameters);
        engine.AttachHead(head);
        // Two batches accumulate, as a step's micro-batches do.
        var second = new LabelledBatches(model.Config.VocabSize, promptTableRows, seed: 3).Next();
        engine.LossAndPromptGradient(batch);
        engine.LossAndPromptGradient(second);
        var gradient = head.GetGradient();

        // h = 1e-2 in float: the loss (~0.7) rounds to ~6e-8, ~3e-6 in the quotient; the loss is smooth in W and b (a
        // log-sum-exp of linear logits), so the truncation error is of the same order. 1e-4 + 1e-2·|g| is a wide margin
        // that a missing row, a wrong sign or an unaccumulated batch exceeds many times.
        const float h = 1e-2f;
        var checkedCount = 0;
        foreach (var index in new[] { 0, 7, C - 1, C, C + 9, 2 * C - 1, 2 * C, 2 * C + 1 })
        {
            float LossAt(float delta)
            {
                var shifted = (float[])parameters.Clone();
                shifted[index] += delta;
                head.SetParameters(shifted);
                return engine.Loss(batch) + engine.Loss(second);
            }
            var numeric = (LossAt(h) - LossAt(-h)) / (2 * h);
            var part = index < 2 * C ? $"W[{index / C}, {index % C}]" : $"b[{index - 2 * C}]";
            TestContext.Out.WriteLine($"{part}: analytic {gradient[index]:E4}, finite difference {numeric:E4}");
            Assert.That(numeric, Is.EqualTo(gradient[index]).Within(1e-4 + 1e-2 * Math.Abs(gradient[index])), part);
            if (Math.Abs(gradient[index]) > 1e-2) checkedCount++;
        }
        Assert.That(checkedCount, Is.GreaterThanOrEqualTo(4), "enough sampled entries with a clearly non-zero gradient");
    }

    static ClassifierHeadWeights SomeHead(int width, int classes = 2, int seed = 6)
    {
        var rng = new Random(seed);
        return new ClassifierHeadWeights(Enumerable.Range(0, classes * width).Select(_ => (float)rng.NextDouble()).ToArray(),
            Enumerable.Range(0, classes).Select(_ => (float)rng.NextDouble()).ToArray(), Labels.Concat(["neutral"]).Take(classes).ToArray());
    }

    [Test]
    public void AHeadTravelsInPromptFilesAndPeftSequenceClassificationAdapters()
    {
        var output = Directory.CreateTempSubdirectory("pe-head-files-").FullName;
        try
        {
            using var model = ModelFolder.Open(folder);
            int C = model.Config.HiddenSize;
            var head = SomeHead(C);
            var plainPath = Path.Combine(output, "plain.safetensors");
            PromptFile.Save(plainPath, Prompt(C, 1), P, C, PromptMetadata.ForModel(model), head: head);
            var deep = DeepPrompt.Random(model.Config, 3, seed: 2);
            var deepPath = Path.Combine(output, "deep.safetensors");
            DeepPromptFile.Save(deepPath, deep, model, head);
            foreach (var path in new[] { plainPath, deepPath })
            {
                var read = ClassifierHeadWeights.Read(path, C, Labels)!;
                Assert.That((read.Weight, read.Bias, read.Labels), Is.EqualTo((head.Weight, head.Bias, head.Labels)), path);
            }
            Assert.That(PromptFile.Load(plainPath, C).Values, Is.EqualTo(Prompt(C, 1)), "the prompt still loads as before");
            Assert.That(DeepPromptFile.Load(deepPath, model.Config).Values, Is.EqualTo(deep.Values));
            Assert.That(ClassifierHeadWeights.Read(deepPath, C, null)!.Labels, Is.EqualTo(Labels), "labels come from the file");

            var plainAdapter = Path.Combine(output, "plain-adapter");
            PeftAdapter.Save(plainAdapter, PromptFile.Load(plainPath, C), model, head: head);
            var deepAdapter = Path.Combine(output, "deep-adapter");
            PeftAdapter.SavePrefix(deepAdapter, deep, model, head);
            foreach (var adapter in new[] { plainAdapter, deepAdapter })
            {
                using (var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(adapter, PeftAdapter.ConfigFileName))))
                {
                    Assert.That(json.RootElement.GetProperty("task_type").GetString(), Is.EqualTo("SEQ_CLS"), adapter);
                    Assert.That(json.RootElement.TryGetProperty("modules_to_save", out _), Is.False, "PEFT before 0.17 refuses modules_to_save in a prompt-learning config; SEQ_CLS adds it by itself");
                }
                using (var weights = SafetensorsFile.Open(Path.Combine(adapter, PeftAdapter.WeightsFileName)))
                    Assert.That(weights.Tensors.Select(t => t.Name).Order(), Is.EqualTo(new[] { "base_model.score.bias", "base_model.score.weight", "prompt_embeddings" }));
                var read = PeftAdapter.LoadHead(adapter, C, Labels)!;
                Assert.That((read.Weight, read.Bias), Is.EqualTo((head.Weight, head.Bias)), adapter);
            }
            Assert.That(PeftAdapter.Load(plainAdapter, C).Values, Is.EqualTo(Prompt(C, 1)), "a SEQ_CLS adapter's prompt loads as a PROMPT_TUNING one's");
            Assert.That(PeftAdapter.LoadPrefix(deepAdapter, model.Config).Values, Is.EqualTo(deep.Values));

            // Without a head nothing changes: no head tensors, CAUSAL_LM, and Read says there is none.
            var bare = Path.Combine(output, "bare.safetensors");
            PromptFile.Save(bare, Prompt(C, 1), P, C);
            Assert.That(ClassifierHeadWeights.Read(bare, C, Labels), Is.Null);
        }
        finally { Directory.Delete(output, recursive: true); }
    }

    [Test]
    public void AHeadThatDoesNotFitIsRefusedNamingTheFileAndTensor()
    {
        var output = Directory.CreateTempSubdirectory("pe-head-refusal-").FullName;
        try
        {
            using var model = ModelFolder.Open(folder);
            int C = model.Config.HiddenSize;
            var wide = Path.Combine(output, "wide.safetensors");
            PromptFile.Save(wide, Prompt(C + 1, 1), P, C + 1, head: SomeHead(C + 1));
            var e = Assert.Throws<PromptCompatibilityException>(() => ClassifierHeadWeights.Read(wide, C, Labels))!;
            Assert.That(e.Message, Does.StartWith(wide).And.Contain("'head.weight'").And.Contain("hidden size is 16").And.Not.Contain("\n"));

            var three = Path.Combine(output, "three.safetensors");
            PromptFile.Save(three, Prompt(C, 1), P, C, head: SomeHead(C, classes: 3));
            e = Assert.Throws<PromptCompatibilityException>(() => ClassifierHeadWeights.Read(three, C, Labels))!;
            Assert.That(e.Message, Does.StartWith(three).And.Contain("'head.weight'").And.Contain("[negative, positive, neutral]").And.Contain("[negative, positive]"));

            // A hand-made file: W without its bias, and W with labels of another count.
            var noBias = Path.Combine(output, "no-bias.safetensors");
            SafetensorsWriter.Write(noBias, [TensorToWrite.F32(PromptFile.TensorName, [P, C], Prompt(C, 1)), TensorToWrite.F32("head.weight", [2, C], new float[2 * C])],
                new Dictionary<string, string> { ["head_labels"] = "[\"negative\",\"positive\"]" });
            var f = Assert.Throws<PromptFormatException>(() => ClassifierHeadWeights.Read(noBias, C, Labels))!;
            Assert.That(f.Message, Does.StartWith(noBias).And.Contain("'head.bias'").And.Contain("missing"));
            var badLabels = Path.Combine(output, "bad-labels.safetensors");
            SafetensorsWriter.Write(badLabels, [TensorToWrite.F32("head.weight", [2, C], new float[2 * C]), TensorToWrite.F32("head.bias", [2], new float[2])],
                new Dictionary<string, string> { ["head_labels"] = "[\"negative\"]" });
            f = Assert.Throws<PromptFormatException>(() => ClassifierHeadWeights.Read(badLabels, C, null))!;
            Assert.That(f.Message, Does.Contain("'head_labels'").And.Contain("1 labels for the 2 rows"));

            // A head whose width is not the model's is refused on saving an adapter, and by the engine.
            var adapter = Path.Combine(output, "adapter");
            Assert.Throws<PromptCompatibilityException>(() => PeftAdapter.Save(adapter, PromptFile.Load(three, C), model, head: SomeHead(C + 1)));
            Assert.That(Directory.Exists(adapter) && Directory.EnumerateFiles(adapter).Any(), Is.False, "nothing written");
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 8, P));
            using var wideHead = new ClassifierHead(kernels, C + 1, Labels);
            Assert.That(Assert.Throws<ArgumentException>(() => engine.AttachHead(wideHead))!.Message, Does.Contain("width 17"));
        }
        finally { Directory.Delete(output, recursive: true); }
    }
}
