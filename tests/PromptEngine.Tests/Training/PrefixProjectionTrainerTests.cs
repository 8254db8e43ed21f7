using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Tests.EndToEnd;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.Training;

/// <summary>The trainer with a <see cref="PrefixProjection"/> on a tiny random Llama (GQA): the loss falls while the MLP
/// trains, an interrupted and resumed run is bit-identical to an uninterrupted one, and checkpoints of another kind of
/// run or engines it cannot drive are refused.</summary>
[NonParallelizable]
public class PrefixProjectionTrainerTests
{
    const int Pv = 3, Hidden = 8;
    string folder = "", output = "";

    [SetUp]
    public void Setup()
    {
        folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 23);
        output = Directory.CreateTempSubdirectory("pe-projection-trainer-").FullName;
    }

    [TearDown]
    public void Cleanup()
    {
        Directory.Delete(folder, recursive: true);
        Directory.Delete(output, recursive: true);
    }

    sealed class Run : IDisposable
    {
        public required KernelContext Kernels { get; init; }
        public required ModelFolder Model { get; init; }
        public required TransformerEngine Engine { get; init; }
        public required PrefixProjection Projection { get; init; }
        public void Dispose()
        {
            Projection.Dispose();
            Engine.Dispose();
            Model.Dispose();
            Kernels.Dispose();
        }
    }

    Run NewRun(int seed)
    {
        var kernels = KernelContext.Create(KernelBackend.Cpu);
        var model = ModelFolder.Open(folder);
        var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 6, 0, DeepVirtualTokens: Pv));
        return new Run { Kernels = kernels, Model = model, Engine = engine, Projection = new PrefixProjection(kernels, model.Config, Pv, Hidden, seed) };
    }

    TrainerOptions Options(int steps, string directory) => new()
    {
        Steps = steps,
        LearningRate = _ => 0.01f,
        GradientAccumulation = 2,
        MaxGradNorm = 1f,
        CheckpointEvery = 2,
        OutputDirectory = directory,
        RunFingerprint = "tiny-projection",
    };

    [Test]
    public void LossFallsWhileTheMlpTrains()
    {
        using var run = NewRun(seed: 1);
        var initial = run.Projection.GetParameters();
        var losses = new List<float>();
        var trainer = new Trainer(run.Engine, new PrefixProjectionTests.IndexedBatches(run.Model.Config.VocabSize, 1), null, Options(30, output), run.Projection);
        trainer.StepCompleted += r => losses.Add(r.Loss);
        var summary = trainer.Run();
        TestContext.Out.WriteLine($"loss {losses.Take(5).Average():F3} → {losses.TakeLast(5).Average():F3} (first/last five steps)");
        Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Completed));
        Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses.Take(5).Average() * 0.5));
        Assert.That(run.Projection.GetParameters(), Is.Not.EqualTo(initial));
        Assert.That(run.Projection.GetOptimizerState().Step, Is.EqualTo(30));
        var (m, _, engineSteps) = run.Engine.GetOptimizerState();
        Assert.That((engineSteps, m.All(x => x == 0)), Is.EqualTo((0, true)), "the engine's own optimizer never moved the prefix");
        var checkpoint = Checkpoint.Load(summary.CheckpointPath);
        Assert.That(checkpoint.Prompt, Is.EqualTo(run.Projection.GetParameters()), "the checkpoint holds the MLP's parameters");
    }

    [Test]
    public void InterruptedAndResumedRunIsBitIdenticalToAnUninterruptedOne()
    {
        float[] parameters, prefix, m, v;
        using (var run = NewRun(seed: 5))
        {
            new Trainer(run.Engine, new PrefixProjectionTests.IndexedBatches(run.Model.Config.VocabSize, 3), null, Options(7, Path.Combine(output, "a")), run.Projection).Run();
            (parameters, prefix) = (run.Projection.GetParameters(), run.Engine.GetPrefix());
            (m, v, _) = run.Projection.GetOptimizerState();
        }

        var b = Path.Combine(output, "b");
        using (var run = NewRun(seed: 5))
        {
            using var cancel = new CancellationTokenSource();
            var trainer = new Trainer(run.Engine, new PrefixProjectionTests.IndexedBatches(run.Model.Config.VocabSize, 3), null, Options(7, b), run.Projection);
            trainer.StepCompleted += r => { if (r.Step == 3) cancel.Cancel(); }; // Ctrl-C after step 3
            var summary = trainer.Run(cancel: cancel.Token);
            Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Interrupted));
            Assert.That(Checkpoint.Load(summary.CheckpointPath).Step, Is.EqualTo(3));
        }
        // A fresh process: new engine, new sampler, and a projection initialised from another seed, so everything it
        // continues from must come from the checkpoint.
        using (var run = NewRun(seed: 99))
        {
            var summary = new Trainer(run.Engine, new PrefixProjectionTests.IndexedBatches(run.Model.Config.VocabSize, 3), null, Options(7, b), run.Projection).Run(resume: true);
            Assert.That(summary.Step, Is.EqualTo(7));
            Assert.That(run.Projection.GetParameters(), Is.EqualTo(parameters), "bit-identical MLP parameters after resuming");
            Assert.That(run.Engine.GetPrefix(), Is.EqualTo(prefix), "bit-identical folded prefix");
            var (m3, v3, step) = run.Projection.GetOptimizerState();
            Assert.That((m3, v3, step), Is.EqualTo((m, v, 7)));
        }
    }

    [Test]
    public void RefusesACheckpointOfAPlainPrefixAndAnEngineWithAPlainPrompt()
    {
        using var run = NewRun(seed: 2);
        var batches = new PrefixProjectionTests.IndexedBatches(run.Model.Config.VocabSize, 1);
        run.Engine.SetPrefix(DeepPrompt.Random(run.Model.Config, Pv, seed: 2).ToEngineLayout());
        new Trainer(run.Engine, batches, null, Options(2, output)).Run(); // a plain deep prefix, same fingerprint
        var e = Assert.Throws<PromptEngineException>(() => new Trainer(run.Engine, batches, null, Options(4, output), run.Projection).Run(resume: true))!;
        Assert.That(e.Message, Does.Contain(Trainer.CheckpointFile).And.Contain("prefix projection (mlp 8)"));

        using var withPrompt = new TransformerEngine(run.Kernels, run.Model, new EngineOptions(2, 6, 2, DeepVirtualTokens: Pv));
        var refused = Assert.Throws<ArgumentException>(() => new Trainer(withPrompt, batches, null, Options(2, output), run.Projection))!;
        Assert.That(refused.Message, Does.Contain("plain prompt of 2 rows"));
    }
}
