using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Tests.EndToEnd;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.Training;

/// <summary>The trainer with a linear classifier head attached to the engine, on a tiny random Llama (GQA): the loss falls
/// while head and prompt train jointly (plain prompt, deep prompt, deep prompt through the MLP), an interrupted and
/// resumed run is bit-identical to an uninterrupted one (head and its AdamW moments included), the best prompt carries
/// the head, and a checkpoint without a head is refused by a run with one.</summary>
[NonParallelizable]
public class ClassifierHeadTrainerTests
{
    const int P = 2;
    static readonly string[] Labels = ["negative", "positive"];
    static readonly int[] LabelWords = [5, 9];
    string folder = "", output = "";

    [SetUp]
    public void Setup()
    {
        folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 29);
        output = Directory.CreateTempSubdirectory("pe-head-trainer-").FullName;
    }

    [TearDown]
    public void Cleanup()
    {
        Directory.Delete(folder, recursive: true);
        Directory.Delete(output, recursive: true);
    }

    public enum Method { Prompt, Prefix, PrefixMlp }

    sealed class Run : IDisposable
    {
        public required KernelContext Kernels { get; init; }
        public required ModelFolder Model { get; init; }
        public required TransformerEngine Engine { get; init; }
        public required ClassifierHead Head { get; init; }
        public PrefixProjection? Projection { get; init; }
        public required int PromptTableRows { get; init; }
        public void Dispose()
        {
            Projection?.Dispose();
            Head.Dispose();
            Engine.Dispose();
            Model.Dispose();
            Kernels.Dispose();
        }
    }

    Run NewRun(Method method, int seed)
    {
        var kernels = KernelContext.Create(KernelBackend.Cpu);
        var model = ModelFolder.Open(folder);
        int promptTableRows = method == Method.Prompt ? P : 0, deepVirtualTokens = method == Method.Prompt ? 0 : P;
        var engine = new TransformerEngine(kernels, model, new EngineOptions(4, 8, promptTableRows, DeepVirtualTokens: deepVirtualTokens));
        var rng = new Random(seed);
        if (method == Method.Prompt) engine.SetPrompt(Enumerable.Range(0, P * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
        if (method == Method.Prefix) engine.SetPrefix(DeepPrompt.Random(model.Config, P, seed).ToEngineLayout());
        var projection = method == Method.PrefixMlp ? new PrefixProjection(kernels, model.Config, P, 8, seed) : null;
        var head = ClassifierHead.FromLabelWords(engine, Labels, LabelWords);
        engine.AttachHead(head);
        return new Run { Kernels = kernels, Model = model, Engine = engine, Head = head, Projection = projection, PromptTableRows = promptTableRows };
    }

    static TrainerOptions Options(int steps, string directory) => new()
    {
        Steps = steps,
        LearningRate = _ => 0.01f,
        HeadLearningRate = _ => 0.02f,
        GradientAccumulation = 2,
        MaxGradNorm = 1f,
        CheckpointEvery = 2,
        OutputDirectory = directory,
        RunFingerprint = "tiny-head",
    };

    [TestCase(Method.Prompt)]
    [TestCase(Method.Prefix)]
    [TestCase(Method.PrefixMlp)]
    public void LossFallsWhileHeadAndPromptTrainJointly(Method method)
    {
        using var run = NewRun(method, seed: 1);
        var initialHead = run.Head.GetParameters();
        var initialPrompt = run.Engine.GetPrompt().Concat(run.Engine.GetPrefix()).ToArray();
        var losses = new List<float>();
        var batches = new ClassifierHeadTests.LabelledBatches(run.Model.Config.VocabSize, run.PromptTableRows, seed: 1);
        var trainer = new Trainer(run.Engine, batches, null, Options(40, output), run.Projection);
        trainer.StepCompleted += r => losses.Add(r.Loss);
        var summary = trainer.Run();
        TestContext.Out.WriteLine($"{method}: loss {losses.Take(5).Average():F3} → {losses.TakeLast(5).Average():F3} (first/last five steps)");
        Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Completed));
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses.Take(5).Average() * 0.7));
        Assert.That(run.Head.GetParameters(), Is.Not.EqualTo(initialHead), "the head moved");
        Assert.That(run.Head.GetOptimizerState().Step, Is.EqualTo(40));
        Assert.That(run.Engine.GetPrompt().Concat(run.Engine.GetPrefix()).ToArray(), Is.Not.EqualTo(initialPrompt), "the prompt moved too");
        var checkpoint = Checkpoint.Load(summary.CheckpointPath);
        Assert.That(checkpoint.Head, Is.EqualTo(run.Head.GetParameters()), "the checkpoint holds the head");
        Assert.That(checkpoint.HeadOptimizerStep, Is.EqualTo(40));
    }

    sealed class FixedBatchEvaluator(Batch batch) : IEvaluator
    {
        public EvalReport Evaluate(TransformerEngine engine)
        {
            var loss = engine.Loss(batch);
            return new EvalReport(-loss, "neg_loss", loss);
        }
    }

    [TestCase(Method.Prompt)]
    [TestCase(Method.Prefix)]
    public void InterruptedAndResumedRunIsBitIdenticalToAnUninterruptedOne(Method method)
    {
        float[] head, prompt, m, v;
        int vocab;
        Batch probe;
        using (var run = NewRun(method, seed: 5))
        {
            vocab = run.Model.Config.VocabSize;
            probe = new ClassifierHeadTests.LabelledBatches(vocab, run.PromptTableRows, seed: 77).Next();
            var summary = new Trainer(run.Engine, new ClassifierHeadTests.LabelledBatches(vocab, run.PromptTableRows, seed: 3), new FixedBatchEvaluator(probe),
                Options(7, Path.Combine(output, "a")) with { EvalEvery = 7 }).Run();
            (head, prompt) = (run.Head.GetParameters(), run.Engine.GetPrompt().Concat(run.Engine.GetPrefix()).ToArray());
            (m, v, _) = run.Head.GetOptimizerState();
            // The best prompt file carries the head it was evaluated with.
            var saved = ClassifierHeadWeights.Read(summary.BestPromptPath!, run.Model.Config.HiddenSize, Labels)!;
            Assert.That(saved.Weight.Concat(saved.Bias), Is.EqualTo(head));
        }

        var b = Path.Combine(output, "b");
        using (var run = NewRun(method, seed: 5))
        {
            using var cancel = new CancellationTokenSource();
            var trainer = new Trainer(run.Engine, new ClassifierHeadTests.LabelledBatches(vocab, run.PromptTableRows, seed: 3), new FixedBatchEvaluator(probe),
                Options(7, b) with { EvalEvery = 7 });
            trainer.StepCompleted += r => { if (r.Step == 3) cancel.Cancel(); }; // Ctrl-C after step 3
            var summary = trainer.Run(cancel: cancel.Token);
            Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Interrupted));
            Assert.That(Checkpoint.Load(summary.CheckpointPath).HeadOptimizerStep, Is.EqualTo(3));
        }
        // A fresh process with another seed: the prompt, the head and both optimizers must come from the checkpoint.
        using (var run = NewRun(method, seed: 99))
        {
            run.Head.SetParameters(new float[run.Head.Parameters]);
            var summary = new Trainer(run.Engine, new ClassifierHeadTests.LabelledBatches(vocab, run.PromptTableRows, seed: 3), new FixedBatchEvaluator(probe),
                Options(7, b) with { EvalEvery = 7 }).Run(resume: true);
            Assert.That(summary.Step, Is.EqualTo(7));
            Assert.That(run.Head.GetParameters(), Is.EqualTo(head), "bit-identical head after resuming");
            Assert.That(run.Engine.GetPrompt().Concat(run.Engine.GetPrefix()).ToArray(), Is.EqualTo(prompt), "bit-identical prompt");
            var (m3, v3, step) = run.Head.GetOptimizerState();
            Assert.That((m3, v3, step), Is.EqualTo((m, v, 7)), "bit-identical head moments");
        }
    }

    [Test]
    public void ACheckpointWithoutAHeadIsRefusedByARunWithOne()
    {
        var vocab = 0;
        using (var run = NewRun(Method.Prompt, seed: 2))
        {
            vocab = run.Model.Config.VocabSize;
            run.Engine.AttachHead(null);
            new Trainer(run.Engine, new ClassifierHeadTests.LabelledBatches(vocab, P, seed: 1), null, Options(2, output)).Run();
            Assert.That(Checkpoint.Load(Path.Combine(output, Trainer.CheckpointFile)).Head, Is.Null);
        }
        using (var run = NewRun(Method.Prompt, seed: 2))
        {
            var e = Assert.Throws<PromptEngineException>(() =>
                new Trainer(run.Engine, new ClassifierHeadTests.LabelledBatches(vocab, P, seed: 1), null, Options(4, output)).Run(resume: true))!;
            Assert.That(e.Message, Does.Contain("no classifier head").And.Contain("this run trains one of 34"));
        }
    }
}
