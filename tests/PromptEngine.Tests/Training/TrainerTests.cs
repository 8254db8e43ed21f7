using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;
using PromptEngine.Training.Schedules;

namespace PromptEngine.Tests.Training;

/// <summary>The loop on a tiny random Llama: it learns, it resumes bit-identically, it stops on NaN
/// with the last checkpoint intact, it stops early, and it saves on interruption.</summary>
[NonParallelizable]
public class TrainerTests
{
    const int PromptTableRows = 4;
    string folder = "", output = "";

    [SetUp]
    public void Setup()
    {
        folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(), seed: 21);
        output = Directory.CreateTempSubdirectory("pe-trainer-").FullName;
    }

    [TearDown]
    public void Cleanup()
    {
        Directory.Delete(folder, recursive: true);
        Directory.Delete(output, recursive: true);
    }

    /// <summary>Seeded batches drawn by index: the state is the index (and the seed), so it resumes exactly.</summary>
    sealed class IndexedBatches(int vocab, int seed) : ITrainingBatches
    {
        public int Index;
        public Action<int>? BeforeBatch;

        public Batch Next()
        {
            BeforeBatch?.Invoke(Index);
            var rng = new Random(seed * 1000 + Index++);
            var rows = new List<IReadOnlyList<Slot>>();
            for (var b = 0; b < 2; b++)
            {
                var tokens = Enumerable.Range(0, 5 + b).Select(_ => rng.Next(vocab)).ToList();
                // The task: after the prompt and some tokens, predict token 5.
                rows.Add(BatchBuilder.LanguageModelRow(tokens, [5], Enumerable.Range(0, PromptTableRows).ToArray(), PromptPlacement.Prefix));
            }
            return BatchBuilder.Build(rows);
        }

        public string SaveState() => Index.ToString(System.Globalization.CultureInfo.InvariantCulture);
        public void RestoreState(string state) => Index = int.Parse(state, System.Globalization.CultureInfo.InvariantCulture);
    }

    sealed class ScriptedEvaluator(params double[] metrics) : IEvaluator
    {
        int calls;
        public EvalReport Evaluate(TransformerEngine engine) => new(metrics[Math.Min(calls++, metrics.Length - 1)], "accuracy", 1.0);
    }

    (KernelContext Kernels, ModelFolder Model, TransformerEngine Engine) NewEngine()
    {
        var kernels = KernelContext.Create(KernelBackend.Cpu);
        var model = ModelFolder.Open(folder);
        var engine = new TransformerEngine(kernels, model, new EngineOptions(2, PromptTableRows + 7, PromptTableRows));
        var rng = new Random(2);
        engine.SetPrompt(Enumerable.Range(0, PromptTableRows * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray());
        return (kernels, model, engine);
    }

    TrainerOptions Options(int steps, string? outputDirectory = null) => new()
    {
        Steps = steps,
        LearningRate = step => 0.05f,
        GradientAccumulation = 2,
        MaxGradNorm = 1f,
        CheckpointEvery = 2,
        OutputDirectory = outputDirectory ?? output,
        RunFingerprint = "tiny-test",
    };

    /// <summary>Warm-up over one step, then cosine decay: the schedule a resumed run must reproduce step by step.</summary>
    static Func<int, float> Cosine(int steps) => new CosineDecaySchedule(0.05, WarmupSteps: 1).PerTrainerStep(steps);

    [Test]
    public void LossFallsWhileOnlyThePromptMoves()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            var batches = new IndexedBatches(model.Config.VocabSize, 1);
            var losses = new List<float>();
            var trainer = new Trainer(engine, batches, null, Options(30));
            trainer.StepCompleted += r => losses.Add(r.Loss);
            var summary = trainer.Run();
            TestContext.Out.WriteLine($"loss {losses[0]:F3} → {losses[^1]:F3}");
            Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Completed));
            Assert.That(losses.TakeLast(5).Average(), Is.LessThan(losses.Take(5).Average() * 0.5));
        }
    }

    [Test]
    public void InterruptedAndResumedRunIsBitIdenticalToAnUninterruptedOne()
    {
        float[] uninterrupted;
        var (k1, m1, e1) = NewEngine();
        using (k1) using (m1) using (e1)
        {
            new Trainer(e1, new IndexedBatches(m1.Config.VocabSize, 3), null, Options(7, Path.Combine(output, "a")) with { LearningRate = Cosine(7) }).Run();
            uninterrupted = e1.GetPrompt();
        }

        var b = Path.Combine(output, "b");
        var (k2, m2, e2) = NewEngine();
        using (k2) using (m2) using (e2)
        {
            using var cancel = new CancellationTokenSource();
            var trainer = new Trainer(e2, new IndexedBatches(m2.Config.VocabSize, 3), null, Options(7, b) with { LearningRate = Cosine(7) });
            trainer.StepCompleted += r => { if (r.Step == 3) cancel.Cancel(); }; // Ctrl-C after step 3
            var summary = trainer.Run(cancel: cancel.Token);
            Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.Interrupted));
            Assert.That(Checkpoint.Load(summary.CheckpointPath).Step, Is.EqualTo(3));
        }
        var (k3, m3, e3) = NewEngine(); // a fresh process: new engine, new prompt, new sampler
        using (k3) using (m3) using (e3)
        {
            var summary = new Trainer(e3, new IndexedBatches(m3.Config.VocabSize, 3), null, Options(7, b) with { LearningRate = Cosine(7) }).Run(resume: true);
            Assert.That(summary.Step, Is.EqualTo(7));
            Assert.That(e3.GetPrompt(), Is.EqualTo(uninterrupted), "bit-identical prompt after resuming");
            var (m, v, step) = e3.GetOptimizerState();
            Assert.That(step, Is.EqualTo(7));
        }
    }

    [Test]
    public void ResumeRefusesAnotherRunsCheckpoint()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, Options(2)).Run();
            var other = Options(4) with { RunFingerprint = "other-settings" };
            var e = Assert.Throws<PromptEngineException>(() => new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, other).Run(resume: true))!;
            Assert.That(e.Message, Does.Contain("other settings").And.Contain(Trainer.CheckpointFile));
        }
    }

    [Test]
    public void NaNStopsTheRunWithTheLastGoodCheckpointIntact()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            var batches = new IndexedBatches(model.Config.VocabSize, 1);
            var width = model.Config.HiddenSize;
            // At the 11th batch (step 6 with accumulation 2) the prompt is poisoned, as a diverging run would be.
            batches.BeforeBatch = index => { if (index == 10) engine.SetPrompt(Enumerable.Repeat(float.NaN, PromptTableRows * width).ToArray()); };
            var trainer = new Trainer(engine, batches, null, Options(10));
            var e = Assert.Throws<NonFiniteLossException>(() => trainer.Run())!;
            Assert.That(e.Message, Does.Contain("step 6").And.Contain(Trainer.CheckpointFile));
            var saved = Checkpoint.Load(Path.Combine(output, Trainer.CheckpointFile));
            Assert.That(saved.Step, Is.EqualTo(4));
            Assert.That(saved.Prompt.All(float.IsFinite), Is.True);
        }
    }

    [Test]
    public void EarlyStoppingKeepsTheBestPrompt()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            var options = Options(20) with { EvalEvery = 1, EarlyStoppingPatience = 2 };
            var trainer = new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), new ScriptedEvaluator(0.5, 0.7, 0.6, 0.65, 0.9), options);
            var summary = trainer.Run();
            Assert.That(summary.Outcome, Is.EqualTo(RunOutcome.EarlyStopped));
            Assert.That((summary.Step, summary.BestStep, summary.BestMetric), Is.EqualTo((4, 2, (double?)0.7)));
            var best = PromptEngine.Prompts.PromptFile.Load(summary.BestPromptPath!);
            Assert.That(best.Metadata["step"], Is.EqualTo("2"));
            Assert.That(best.Metadata["accuracy"], Is.EqualTo("0.7"));
        }
    }

    [TestCase("cosine")]
    [TestCase("linear")]
    public void TheLastStepOfADecayingScheduleStillTrains(string schedule)
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            // A one-step run is all last step: it used to run at rate 0 and leave the prompt as it was.
            var before = engine.GetPrompt();
            var rates = new List<float>();
            var trainer = new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null,
                Options(1) with { LearningRate = LearningRateSchedule.Create(schedule, 0.05).PerTrainerStep(1) });
            trainer.StepCompleted += r => rates.Add(r.LearningRate);
            trainer.Run();
            Assert.That(rates, Is.EqualTo(new[] { 0.05f }), "the only step runs at the peak");
            Assert.That(engine.GetPrompt(), Is.Not.EqualTo(before));

            // Longer runs: step t (1-based) runs at update t − 1's rate, so the last is positive and the first is the peak.
            var four = LearningRateSchedule.Create(schedule, 0.05).PerTrainerStep(4);
            Assert.That(four(1), Is.EqualTo(0.05f));
            Assert.That(four(4), Is.GreaterThan(0f).And.LessThan(four(3)));
        }
    }

    [Test]
    public void AStepThatMakesThePromptNonFiniteIsNotCheckpointed()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, Options(2) with { CheckpointEvery = 1 }).Run();
            var checkpoint = Path.Combine(output, Trainer.CheckpointFile);
            var good = File.ReadAllBytes(checkpoint);

            // The repro: --lr 1e10 --weight-decay 1e30 --schedule constant --checkpoint-every 1; lr·wd overflows float.
            var diverging = Options(4) with { LearningRate = _ => 1e10f, WeightDecay = 1e30f, CheckpointEvery = 1 };
            var e = Assert.Throws<NonFinitePromptException>(() => new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, diverging).Run(resume: true))!;
            TestContext.Out.WriteLine(e.Message);
            Assert.That(e.Message, Does.Contain("step 3").And.Contain("non-finite").And.Contain(Trainer.CheckpointFile));
            Assert.That(File.ReadAllBytes(checkpoint), Is.EqualTo(good), "the last finite checkpoint survives");
            Assert.That(Checkpoint.Load(checkpoint).Step, Is.EqualTo(2));
        }
    }

    [Test]
    public void ResumeRefusesACheckpointPastTheRunsEnd()
    {
        var (kernels, model, engine) = NewEngine();
        using (kernels) using (model) using (engine)
        {
            new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, Options(4)).Run();
            var e = Assert.Throws<PromptEngineException>(() => new Trainer(engine, new IndexedBatches(model.Config.VocabSize, 1), null, Options(2)).Run(resume: true))!;
            Assert.That(e.Message, Does.Contain(Trainer.CheckpointFile).And.Contain("step 4").And.Contain("2 steps"));
        }
    }

    [Test]
    public void ACorruptedCheckpointResumesBitIdenticallyOrIsRefusedWithOneLine()
    {
        float[] uninterrupted;
        var (k1, m1, e1) = NewEngine();
        using (k1) using (m1) using (e1)
        {
            new Trainer(e1, new IndexedBatches(m1.Config.VocabSize, 3), null, Options(5, Path.Combine(output, "a"))).Run();
            uninterrupted = e1.GetPrompt();
        }
        var run = Path.Combine(output, "b");
        var (k2, m2, e2) = NewEngine();
        using (k2) using (m2) using (e2)
        {
            using var cancel = new CancellationTokenSource();
            var trainer = new Trainer(e2, new IndexedBatches(m2.Config.VocabSize, 3), null, Options(5, run));
            trainer.StepCompleted += r => { if (r.Step == 2) cancel.Cancel(); };
            trainer.Run(cancel: cancel.Token);
        }
        var checkpoint = Path.Combine(run, Trainer.CheckpointFile);
        var good = File.ReadAllBytes(checkpoint);

        // Seeded damage of every kind a disk, a copy or a hand can do: one flipped bit anywhere, a truncation, a
        // scribbled range. Each resume must either continue exactly or refuse in one line naming the checkpoint.
        var rng = new Random(16);
        int refused = 0, identical = 0;
        for (var trial = 0; trial < 30; trial++)
        {
            var bytes = (byte[])good.Clone();
            string damage;
            switch (trial % 3)
            {
                case 0:
                    var bit = rng.Next(bytes.Length * 8);
                    bytes[bit / 8] ^= (byte)(1 << (bit % 8));
                    damage = $"bit {bit} flipped";
                    break;
                case 1:
                    var length = rng.Next(bytes.Length);
                    Array.Resize(ref bytes, length);
                    damage = $"truncated to {length} bytes";
                    break;
                default:
                    var start = rng.Next(bytes.Length - 8);
                    rng.NextBytes(bytes.AsSpan(start, 8));
                    damage = $"bytes {start}..{start + 7} scribbled";
                    break;
            }
            File.WriteAllBytes(checkpoint, bytes);
            var (k, m, e) = NewEngine();
            using (k) using (m) using (e)
            {
                try
                {
                    new Trainer(e, new IndexedBatches(m.Config.VocabSize, 3), null, Options(5, run)).Run(resume: true);
                    Assert.That(e.GetPrompt(), Is.EqualTo(uninterrupted), $"{damage}: resumed, so it must be the same run");
                    identical++;
                }
                catch (PromptEngineException x)
                {
                    Assert.That(x.Message, Does.Contain(checkpoint).And.Not.Contain("\n"), $"{damage}: {x.Message}");
                    refused++;
                }
            }
        }
        TestContext.Out.WriteLine($"{refused} refused, {identical} resumed bit-identically");
        Assert.That(refused, Is.GreaterThan(20), "almost every damage is caught");
    }
}

