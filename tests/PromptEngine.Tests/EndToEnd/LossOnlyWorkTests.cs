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
        int promptRows = trained == Trained.Deep ? 0 : 3, prefixTokens = trained == Trained.Plain ? 0 : 2;
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
                var sources = Enumerable.Range(0, promptRows).Select(p => -1 - p).ToList();
                for (var i = 0; i < tokens; i++) sources.Add(rng.Next(V));
                if (task == Task.Classification) // the last real position predicts a label word
                    return sources.Select((s, i) => new Slot(s, i == sources.Count - 1 ? verbalizer[rng.Next(3)] : -1)).ToList();
                return sources.Select((s, i) => new Slot(s, i + 1 < sources.Count && sources[i + 1] >= 0 ? sources[i + 1] : -1)).ToList();
            }
            var batch = BatchBuilder.Build([Row(9), Row(5), Row(7), Row(2)], task == Task.Classification ? verbalizer : null);
            var prompt = Enumerable.Range(0, promptRows * C).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            var prefix = Enumerable.Range(0, (int)TransformerEngine.PrefixLengthOf(model.Config, prefixTokens)).Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray();
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            (float Loss, float[] DPrompt, float[] DPrefix, float InferenceLoss, float[] Logits) Run(bool everything)
            {
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(batch.Rows, batch.Length, promptRows, PrefixTokens: prefixTokens,
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
            if (promptRows > 0) Assert.That(full.DPrompt.Max(Math.Abs), Is.GreaterThan(1e-5f));
            if (prefixTokens > 0) Assert.That(full.DPrefix.Max(Math.Abs), Is.GreaterThan(1e-5f));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
