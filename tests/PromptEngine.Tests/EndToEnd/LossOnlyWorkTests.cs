using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The engine skips work the loss does not need — the last block after its attention, the final norm and the
/// loss run at the scored rows only, and nothing below layer 0's attention is differentiated when no plain prompt is
/// trained. These tests run the same batches with the shortcuts off (<see cref="TransformerEngine.EveryRowEverywhere"/>)
/// and require the same loss, logits and gradients, bit for bit on the CPU-shaped kernels: every kept row goes through
/// the same kernels in the same order, and the dropped rows contributed exact zeros.</summary>
public class LossOnlyWorkTests
{
    public enum Family { LlamaGqa, Gpt2 }
    public enum Task { Classification, LanguageModel }
    /// <summary>What is trained: a plain prompt (3 rows), a deep prompt (2 virtual tokens), or both at once.</summary>
    public enum Trained { Plain, Deep, Both }

    [Test]
    public void ShortcutsChangeNothing([Values] Family family, [Values] Task task, [Values] Trained trained, [Values] bool recompute)
    {
        int promptTableRows = trained == Trained.Deep ? 0 : 3, deepVirtualTokens = trained == Trained.Plain ? 0 : 2;
        var config = family == Family.LlamaGqa ? ModelReferenceTinyModels.LlamaConfig(layers: 3) : ModelReferenceTinyModels.Gpt2Config(layers: 3, positions: 64);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 71);
        try
        {
            using var model = ModelFolder.Open(folder);
            var rng = new Random(5);
            int V = model.Config.VocabSize, C = model.Config.HiddenSize;
            int[] verbalizer = [3, 7, 11];
            List<Slot> Row(int tokens)
            {
                var sources = Enumerable.Range(0, promptTableRows).Select(p => -1 - p).ToList();
                for (var i = 0; i < tokens; i++) sources.Add(rng.Next(V));
                if (task == Task.Classification) // the last real position predicts a label word
                    return sources.Select((s, i) => new Slot(s, i == sources.Count - 1 ? verbalizer[rng.Next(3)] : -1)).ToList();
                return sources.Select((s, i) => new Slot(s, i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1)).ToList();
            }
            var batch = BatchBuilder.Build([Row(9), Row(5), Row(7), Row(2)], task == Task.Classification ? verbalizer : null);
            var prompt = Enumerable.Range(0, promptTableRows * C).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var prefix = Enumerable.Range(0, (int)TransformerEngine.PrefixLengthOf(model.Config, deepVirtualTokens)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            (float Loss, float[] DPrompt, float[] DPrefix, float InferenceLoss, float[] Logits) Run(bool everything)
            {
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows, DeepVirtualTokens: deepVirtualTokens,
                    Recompute: recompute, MaxVerbalizer: 3)) { EveryRowEverywhere = everything };
                engine.SetPrompt(prompt);
                engine.SetPrefix(prefix);
                var loss = engine.LossAndPromptGradient(batch);
                return (loss, engine.GetPromptGradient(), engine.GetPrefixGradient(), engine.Loss(batch), engine.Logits(batch));
            }
            var full = Run(everything: true);
            var shortcut = Run(everything: false);
            Assert.That(shortcut.Loss, Is.EqualTo(full.Loss), "training loss");
            Assert.That(shortcut.InferenceLoss, Is.EqualTo(full.InferenceLoss), "inference loss");
            Assert.That(shortcut.Logits, Is.EqualTo(full.Logits), "logits at the scored positions");
            Assert.That(shortcut.DPrompt, Is.EqualTo(full.DPrompt), "dPrompt");
            Assert.That(shortcut.DPrefix, Is.EqualTo(full.DPrefix), "dPrefix");
            // Not vacuous: the gradients are there and the loss is a real number.
            Assert.That(float.IsFinite(full.Loss) && full.Loss > 0);
            if (promptTableRows > 0) Assert.That(full.DPrompt.Max(Math.Abs), Is.GreaterThan(1e-5f));
            if (deepVirtualTokens > 0) Assert.That(full.DPrefix.Max(Math.Abs), Is.GreaterThan(1e-5f));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    /// <summary>What the shortcuts save on stories15M at the benchmarks' classification shape (B8, 20 prompt rows + 96
    /// tokens, one scored row each, a two-word verbalizer): training steps and scoring batches with and without them,
    /// interleaved in one process so that load hits both alike; medians printed. Asserts only that both give the same loss.</summary>
    [Test, Category("Slow"), NonParallelizable]
    public void Stories15MStepTimeWithAndWithoutTheShortcuts()
    {
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        var rng = new Random(3);
        int[] words = [model.Tokenizer.Encode("positive", false)[0], model.Tokenizer.Encode("negative", false)[0]];
        var rows = Enumerable.Range(0, 8).Select(b => (IReadOnlyList<Slot>)Enumerable.Range(0, 20).Select(Slot.Prompt)
            .Concat(Enumerable.Range(0, 96).Select(i => Slot.Token(rng.Next(3, model.Config.VocabSize), i == 95 ? words[b % 2] : -1))).ToList()).ToList();
        var batch = BatchBuilder.Build(rows, words);
        var prompt = Enumerable.Range(0, 20 * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray();
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(8, batch.Length, 20));
        engine.SetPrompt(prompt);
        var times = new Dictionary<(bool, bool), List<double>>();
        var losses = new Dictionary<bool, float>();
        for (var round = 0; round < 6; round++)
            foreach (var everything in new[] { true, false })
            {
                engine.EveryRowEverywhere = everything;
                var clock = System.Diagnostics.Stopwatch.StartNew();
                losses[everything] = engine.LossAndPromptGradient(batch);
                var train = clock.Elapsed.TotalMilliseconds;
                clock.Restart();
                engine.Logits(batch);
                var score = clock.Elapsed.TotalMilliseconds;
                if (round == 0) continue; // compilation
                (times.TryGetValue((everything, true), out var t) ? t : times[(everything, true)] = []).Add(train);
                (times.TryGetValue((everything, false), out var f) ? f : times[(everything, false)] = []).Add(score);
            }
        static double Median(List<double> v) { var s = v.Order().ToList(); return (s[(s.Count - 1) / 2] + s[s.Count / 2]) / 2; }
        foreach (var training in new[] { true, false })
        {
            double full = Median(times[(true, training)]), shortcut = Median(times[(false, training)]);
            TestContext.Out.WriteLine($"stories15M B8 T116 {(training ? "train step" : "scoring")}: every row {full:F0} ms, scored rows only {shortcut:F0} ms ({full / shortcut:F2}x); medians of 5");
        }
        Assert.That(losses[false], Is.EqualTo(losses[true]));
    }
}
