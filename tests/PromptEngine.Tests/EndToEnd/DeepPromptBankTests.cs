using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Several deep prompts in one inference engine (<see cref="EngineOptions.DeepPrompts"/>), each batch row under its
/// own (<see cref="Batch.DeepPromptOfRow"/>): every row computes exactly what an engine holding only that row's prompt
/// computes for it, in scoring and in cached generation.</summary>
public class DeepPromptBankTests
{
    [Test]
    public void MixedRowsEqualEachPromptAlone([Values(false, true)] bool gpt2)
    {
        var config = gpt2 ? ModelReferenceTinyModels.Gpt2Config(layers: 2, positions: 64) : ModelReferenceTinyModels.LlamaConfig(layers: 2);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 83);
        try
        {
            using var model = ModelFolder.Open(folder);
            var rng = new Random(9);
            int V = model.Config.VocabSize;
            const int Pv = 2;
            int[] verbalizer = [4, 9];
            var rows = new[] { 6, 3, 8, 5 }.Select(n => Enumerable.Range(0, n).Select(i => Slot.Token(rng.Next(V), i == n - 1 ? verbalizer[rng.Next(2)] : -1)).ToList()).ToList();
            var batch = BatchBuilder.Build(rows.Cast<IReadOnlyList<Slot>>().ToList(), verbalizer);
            var prompts = Enumerable.Range(0, 2).Select(_ => Enumerable.Range(0, (int)TransformerEngine.PrefixLengthOf(model.Config, Pv))
                .Select(_ => (float)(rng.NextDouble() - 0.5)).ToArray()).ToArray();
            int[] chosen = [1, 0, 0, 1];
            using var kernels = KernelContext.Create(KernelBackend.Cpu);

            float[] Logits(int deepPrompts, Action<TransformerEngine> set, Batch b)
            {
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(b.Rows, b.Length + Pv, 0, Training: false, DeepVirtualTokens: Pv, DeepPrompts: deepPrompts));
                set(engine);
                return engine.Logits(b);
            }
            var mixed = Logits(2, e => e.SetDeepPrompts(prompts), batch with { DeepPromptOfRow = chosen });
            var alone = prompts.Select(p => Logits(1, e => e.SetPrefix(p), batch)).ToArray();
            for (var b = 0; b < batch.Rows; b++)
                Assert.That(mixed.AsSpan(b * 2, 2).ToArray(), Is.EqualTo(alone[chosen[b]].AsSpan(b * 2, 2).ToArray()), $"row {b} under prompt {chosen[b]}");
            Assert.That(alone[0], Is.Not.EqualTo(alone[1]), "the two prompts must make a difference for the test to mean anything");

            // Cached generation: the prefill's next-token logits per row.
            float[] Prefill(int deepPrompts, Action<TransformerEngine> set, Batch b)
            {
                using var engine = new TransformerEngine(kernels, model, new EngineOptions(b.Rows, b.Length + Pv + 2, 0, Training: false, DeepVirtualTokens: Pv, DeepPrompts: deepPrompts));
                set(engine);
                return engine.Prefill(b);
            }
            var plain = BatchBuilder.Build(rows.Select(r => (IReadOnlyList<Slot>)r.Select(s => Slot.Token(s.Source)).ToList()).ToList());
            var mixedNext = Prefill(2, e => e.SetDeepPrompts(prompts), plain with { DeepPromptOfRow = chosen });
            var aloneNext = prompts.Select(p => Prefill(1, e => e.SetPrefix(p), plain)).ToArray();
            for (var b = 0; b < plain.Rows; b++)
                Assert.That(mixedNext.AsSpan(b * V, V).ToArray(), Is.EqualTo(aloneNext[chosen[b]].AsSpan(b * V, V).ToArray()), $"prefill row {b}");
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void ABankIsRefusedForTrainingAndAnOutOfRangeChoiceIsNamed()
    {
        var folder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(layers: 1), seed: 84);
        try
        {
            using var model = ModelFolder.Open(folder);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            var training = Assert.Throws<ArgumentException>(() => new TransformerEngine(kernels, model, new EngineOptions(2, 8, 0, DeepVirtualTokens: 2, DeepPrompts: 2)));
            Assert.That(training!.Message, Does.Contain("training holds one deep prompt"));
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(2, 8, 0, Training: false, DeepVirtualTokens: 2, DeepPrompts: 2));
            var batch = BatchBuilder.Build([[Slot.Token(1), Slot.Token(2, 3)], [Slot.Token(4, 5)]]) with { DeepPromptOfRow = [0, 2] };
            var error = Assert.Throws<ArgumentException>(() => engine.Logits(batch));
            Assert.That(error!.Message, Does.Contain("deep prompt 2"));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
