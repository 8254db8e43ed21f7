using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Safetensors;
using PromptEngine.Tests.EndToEnd;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.Prompts;

/// <summary>The prompt-method abstraction on a tiny random Llama (GQA): for each method (plain prompt, deep prompt, deep
/// prompt through the MLP), with and without a linear head, a prompt trained a few steps and saved loads back as the same
/// values and gives an inference engine the training engine's predictions; a PEFT export imports back as the same prompt and
/// head; and a prompt or head of the wrong shape is refused in one line naming the file and the tensor.</summary>
[NonParallelizable]
public class TunedPromptTests
{
    const int Tokens = 2;
    static readonly string[] Labels = ["negative", "positive"];
    static readonly int[] LabelWords = [5, 9];
    string folder = "", output = "";

    [SetUp]
    public void Setup()
    {
        folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 31);
        output = Directory.CreateTempSubdirectory("pe-tuned-prompt-").FullName;
    }

    [TearDown]
    public void Cleanup()
    {
        Directory.Delete(folder, recursive: true);
        Directory.Delete(output, recursive: true);
    }

    public enum Method { Plain, Deep, DeepMlp }

    static PromptConfig ConfigOf(Method method, bool head)
    {
        var config = method switch
        {
            Method.Plain => PromptConfig.Plain(Tokens),
            Method.Deep => PromptConfig.Deep(Tokens),
            _ => PromptConfig.DeepMlp(Tokens, 8),
        };
        return head ? config.WithLinearHead() : config;
    }

    /// <summary>Trains <paramref name="config"/> for 3 steps from a seeded start and returns the prompt it made, with the
    /// training engine's logits on <paramref name="probe"/> (computed before the engine is disposed).</summary>
    (TunedPrompt Prompt, float[] Logits) Train(ModelFolder model, KernelContext kernels, PromptConfig config, Batch probe)
    {
        using var engine = new TransformerEngine(kernels, model, config.EngineOptions(4, 8));
        var initial = config.Initial(model, PromptInitMethod.Random, seed: 4);
        using var trainable = config.Create(engine, initial, seed: 4, Labels, LabelWords);
        var batches = new ClassifierHeadTests.LabelledBatches(model.Config.VocabSize, config.PromptTableRows, seed: 2);
        new Trainer(trainable, batches, null, new TrainerOptions
        {
            Steps = 3,
            LearningRate = _ => 0.05f,
            HeadLearningRate = _ => 0.05f,
            OutputDirectory = Path.Combine(output, "run"),
        }).Run();
        return (trainable.Snapshot(PromptMetadata.ForModel(model)), engine.Logits(probe));
    }

    /// <summary>The logits an inference engine gives <paramref name="probe"/> under <paramref name="prompt"/>.</summary>
    static float[] Infer(ModelFolder model, KernelContext kernels, TunedPrompt prompt, Batch probe)
    {
        using var engine = new TransformerEngine(kernels, model, prompt.EngineOptions(probe.Rows, probe.Length));
        using var head = prompt.ApplyTo(engine);
        return engine.Logits(probe);
    }

    static int[] Predictions(float[] logits) =>
        logits.Chunk(LabelWords.Length).Select(row => Array.IndexOf(row, row.Max())).ToArray();

    [Test]
    public void SavedAndLoadedEachMethodPredictsAsItDidInTraining([Values] Method method, [Values] bool head)
    {
        var config = ConfigOf(method, head);
        using var model = ModelFolder.Open(folder);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        var probe = new ClassifierHeadTests.LabelledBatches(model.Config.VocabSize, config.PromptTableRows, seed: 9).Next();
        var (trained, trainedLogits) = Train(model, kernels, config, probe);
        Assert.That(trained.Method, Is.EqualTo(config.Method));
        Assert.That(trained.Head is not null, Is.EqualTo(head));

        var path = Path.Combine(output, "prompt.safetensors");
        trained.Save(path, model);
        var loaded = TunedPrompt.Load(path, model.Config, labels: Labels);
        Assert.That(loaded.Method, Is.EqualTo(config.Method), "the file says its method");
        Assert.That(loaded.Values, Is.EqualTo(trained.Values), "values exact");
        Assert.That(loaded.Head?.Weight, Is.EqualTo(trained.Head?.Weight));
        Assert.That(loaded.Head?.Bias, Is.EqualTo(trained.Head?.Bias));
        Assert.That(loaded.Meta(PromptMetadata.Reparameterisation), Is.EqualTo(method == Method.DeepMlp ? "mlp 8" : null), "an MLP's output is saved folded and says so");

        // The same kernels on the same values: an inference engine reproduces the training engine's logits. The rows' layout
        // and the launches are the same, so only the engines' scratch sizes differ; 1e-5 + 1e-5·|x| allows a reordered sum.
        var inferred = Infer(model, kernels, loaded, probe);
        Assert.That(inferred, Has.Length.EqualTo(trainedLogits.Length));
        for (var i = 0; i < inferred.Length; i++)
            Assert.That(inferred[i], Is.EqualTo(trainedLogits[i]).Within(1e-5 + 1e-5 * Math.Abs(trainedLogits[i])), $"logit {i}");
        Assert.That(Predictions(inferred), Is.EqualTo(Predictions(trainedLogits)));
    }

    [Test]
    public void PeftExportImportsBackAsTheSamePromptAndHead([Values] Method method, [Values] bool head)
    {
        var config = ConfigOf(method, head);
        using var model = ModelFolder.Open(folder);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        var probe = new ClassifierHeadTests.LabelledBatches(model.Config.VocabSize, config.PromptTableRows, seed: 9).Next();
        var (trained, _) = Train(model, kernels, config, probe);
        var adapter = Path.Combine(output, "adapter");
        trained.ExportPeft(adapter, model);

        foreach (var back in new[] { TunedPrompt.ImportPeft(adapter, model.Config), TunedPrompt.Load(adapter, model.Config, config.Method, Labels) })
        {
            Assert.That(back.Method, Is.EqualTo(config.Method));
            Assert.That((back.VirtualTokens, back.Width), Is.EqualTo((trained.VirtualTokens, trained.Width)));
            Assert.That(back.Values, Is.EqualTo(trained.Values));
            Assert.That(back.Head?.Weight, Is.EqualTo(trained.Head?.Weight));
            Assert.That(back.Head?.Bias, Is.EqualTo(trained.Head?.Bias));
            Assert.That(back.Head?.Labels, Is.EqualTo(trained.Head?.Labels));
        }
        Assert.That(PeftAdapter.PeftType(adapter), Is.EqualTo(method == Method.Plain ? "PROMPT_TUNING" : "PREFIX_TUNING"));
    }

    [Test]
    public void APromptOfTheWrongWidthIsRefusedNamingFileAndTensor()
    {
        using var model = ModelFolder.Open(folder);
        var path = Path.Combine(output, "wide.safetensors");
        int wide = model.Config.HiddenSize + 4;
        PromptFile.Save(path, new float[Tokens * wide], Tokens, wide);
        var e = Assert.Throws<PromptCompatibilityException>(() => TunedPrompt.Load(path, model.Config))!;
        AssertNamesFileAndTensor(e, path, PromptFile.TensorName);
    }

    [Test]
    public void ADeepPromptOfAnotherModelShapeIsRefusedNamingFileAndTensor()
    {
        using var model = ModelFolder.Open(folder);
        var path = Path.Combine(output, "deep.safetensors");
        var other = new DeepPrompt(new float[Tokens * (model.Config.NumLayers + 1) * 2 * model.Config.NumKvHeads * model.Config.HeadDim], Tokens,
            model.Config.NumLayers + 1, model.Config.NumKvHeads, model.Config.HeadDim, new Dictionary<string, string>());
        DeepPromptFile.Save(path, other);
        var e = Assert.Throws<PromptCompatibilityException>(() => TunedPrompt.Load(path, model.Config))!;
        AssertNamesFileAndTensor(e, path, PromptFile.TensorName);
    }

    [Test]
    public void AHeadOfTheWrongWidthIsRefusedNamingFileAndTensor([Values] bool deep)
    {
        using var model = ModelFolder.Open(folder);
        var path = Path.Combine(output, "head.safetensors");
        int c = model.Config.HiddenSize, narrow = c - 3;
        var head = new ClassifierHeadWeights(new float[2 * narrow], new float[2], Labels);
        var metadata = new Dictionary<string, string>();
        head.AddMetadata(metadata);
        if (deep)
            DeepPromptFile.Save(path, DeepPrompt.Random(model.Config, Tokens, seed: 1), head: head);
        else // a prompt file's writer refuses such a head, so the file is written as another tool might
            SafetensorsWriter.Write(path, [TensorToWrite.F32(PromptFile.TensorName, [Tokens, c], new float[Tokens * c]), .. head.Tensors()], metadata);
        var e = Assert.Throws<PromptCompatibilityException>(() => TunedPrompt.Load(path, model.Config))!;
        AssertNamesFileAndTensor(e, path, ClassifierHeadWeights.WeightTensor);
    }

    [Test]
    public void AHeadOfOtherLabelsIsRefusedNamingFileAndTensor()
    {
        using var model = ModelFolder.Open(folder);
        var path = Path.Combine(output, "labels.safetensors");
        int c = model.Config.HiddenSize;
        TunedPrompt.Deep(DeepPrompt.Random(model.Config, Tokens, seed: 1), new ClassifierHeadWeights(new float[2 * c], new float[2], Labels)).Save(path, model);
        var loaded = TunedPrompt.Load(path, model.Config);
        Assert.DoesNotThrow(() => loaded.CheckHeadLabels(Labels));
        var e = Assert.Throws<PromptCompatibilityException>(() => loaded.CheckHeadLabels(["positive", "negative"]))!;
        AssertNamesFileAndTensor(e, path, ClassifierHeadWeights.WeightTensor);
    }

    [Test]
    public void AMethodAskedForIsTheOneLoadedOrTheFileIsRefused()
    {
        using var model = ModelFolder.Open(folder);
        var path = Path.Combine(output, "deep.safetensors");
        TunedPrompt.Deep(DeepPrompt.Random(model.Config, Tokens, seed: 1)).Save(path, model);
        Assert.That(TunedPrompt.Load(path, model.Config).Method, Is.EqualTo(PromptMethod.Prefix), "found from the file");
        var e = Assert.Throws<PromptKindException>(() => TunedPrompt.Load(path, model.Config, PromptMethod.Prompt))!;
        Assert.That(e.Found, Is.EqualTo(PromptMethod.Prefix));
        Assert.That(e.Message, Does.Contain(path));
    }

    [Test]
    public void AnEngineOfAnotherShapeIsRefusedBeforeAnythingIsSet()
    {
        using var model = ModelFolder.Open(folder);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, PromptConfig.Plain(Tokens).EngineOptions(2, 8));
        var deep = PromptConfig.Deep(Tokens);
        var e = Assert.Throws<ArgumentException>(() => deep.Create(engine, deep.Initial(model, PromptInitMethod.Random, 1), 1))!;
        Assert.That(e.Message, Does.Contain("prompt rows").And.Contain("deep-prompt tokens"));
        Assert.That(engine.Head, Is.Null);
    }

    static void AssertNamesFileAndTensor(Exception e, string path, string tensor)
    {
        Assert.That(e.Message, Does.Contain(path).And.Contain($"'{tensor}'"), e.Message);
        Assert.That(e.Message, Does.Not.Contain("\n"));
    }
}
