using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Generation;

/// <summary>The KV-cache path (Prefill, then DecodeStep) against the uncached path (engine.Logits over each row's
/// whole sequence, read at its last position) at every step, on tiny random models of each family, with rows
/// that use different prompts of a bank (or none) and have different lengths.</summary>
public class CachedLogitsTests
{
    public enum Family { LlamaGqa, LlamaQkvBias, Gpt2 }

    internal static string Config(Family family) => family switch
    {
        Family.LlamaGqa => ModelReferenceTinyModels.LlamaConfig(),
        Family.LlamaQkvBias => ModelReferenceTinyModels.LlamaConfig(qkvBias: true, tied: true),
        _ => ModelReferenceTinyModels.Gpt2Config(positions: 64),
    };

    /// <summary>Rows 0 and 2 use bank rows 0..19, row 1 rows 20..29, row 3 no prompt; 3, 6, 1 and 4 tokens.
    /// <paramref name="scale"/> divides the prompt lengths (a smaller batch for the slow GPU-shaped kernels on the CPU).</summary>
    internal static GenerationRequest[] MixedRequests(int vocab, int seed, int scale = 1)
    {
        var rng = new Random(seed);
        int[] Tokens(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        var first = Enumerable.Range(0, 20 / scale).ToArray();
        var second = Enumerable.Range(20 / scale, 10 / scale).ToArray();
        return [new(Tokens(3), first), new(Tokens(6), second), new(Tokens(1), first), new(Tokens(4), [])];
    }

    internal static float[] RandomBank(int rows, int hidden, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows * hidden).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    /// <summary>Logits (B, V) of each sequence's last position, recomputed from scratch over the whole sequences.</summary>
    static float[] Uncached(TransformerEngine engine, IReadOnlyList<GenerationRequest> sequences)
    {
        var rows = sequences.Select(s =>
        {
            var row = s.PromptTableRows.Select(Slot.Prompt).Concat(s.Tokens.Select(t => Slot.Token(t))).ToList();
            row[^1] = row[^1] with { Target = 0 };
            return (IReadOnlyList<Slot>)row;
        }).ToArray();
        return engine.Logits(BatchBuilder.Build(rows));
    }

    [Test]
    public void CachedLogitsEqualUncachedAtEveryStep([Values] Family family, [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        // The GPU-shaped kernels synchronise 16 OS threads at every barrier on the CPU: a shorter run keeps them fast.
        bool cpu = shape == KernelShape.Cpu;
        int steps = cpu ? 12 : 4, scale = cpu ? 1 : 5, bankRows = 30 / scale, capacity = cpu ? 40 : 16;
        var idle = cpu ? new[] { 4, 5 } : [1, 2];
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 31 + (int)family);
        try
        {
            using var model = ModelFolder.Open(folder);
            int vocab = model.Config.VocabSize, hidden = model.Config.HiddenSize;
            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(4, capacity, bankRows, Training: false));
            engine.SetPrompt(RandomBank(bankRows, hidden, seed: 5));
            var requests = MixedRequests(vocab, seed: 17 + (int)family, scale);
            var sequences = requests.Select(r => new GenerationRequest(r.Tokens.ToList(), r.PromptTableRows)).ToArray();
            Assert.That(engine.Memory.KvCache, Is.Zero, "the cache is allocated by the first prefill");

            var cached = engine.Prefill(Generator.PrefillBatch(engine, requests));
            var lengths = requests.Select(r => r.PromptTableRows.Count + r.Tokens.Count).ToArray();
            Assert.That(engine.CacheLengths, Is.EqualTo(lengths));
            var c = model.Config;
            long expectedCache = 4L * (2L * c.NumLayers * 4 * capacity * c.NumKvHeads * c.HeadDim + 4 * vocab + 5 * 4);
            Assert.That(engine.Memory.KvCache, Is.EqualTo(expectedCache), "K and V per layer (B, Tmax, KV·hs), logits (B, V), step indices (5, B)");

            double maxError = 0, maxLogit = 0;
            var next = new int[4];
            for (var step = 0; step <= steps; step++)
            {
                // Row 1 idles for two decode steps (nothing written, length unchanged), then continues.
                bool rowOneIdle = idle.Contains(step - 1);
                var uncached = Uncached(engine, sequences);
                for (var r = 0; r < 4; r++)
                {
                    if (r == 1 && rowOneIdle) continue; // an idle row's logits are meaningless by contract
                    for (var v = 0; v < vocab; v++)
                    {
                        double expected = uncached[r * vocab + v], actual = cached[r * vocab + v];
                        maxLogit = Math.Max(maxLogit, Math.Abs(expected));
                        var error = Math.Abs(actual - expected);
                        maxError = Math.Max(maxError, double.IsNaN(error) ? double.PositiveInfinity : error);
                    }
                }
                if (step == steps) break;
                for (var r = 0; r < 4; r++)
                {
                    next[r] = TokenSampler.ArgMax(cached.AsSpan(r * vocab, vocab));
                    if (r == 1 && idle.Contains(step)) next[r] = -1;
                    else ((List<int>)sequences[r].Tokens).Add(next[r]);
                }
                cached = engine.DecodeStep(next);
            }
            Assert.That(engine.CacheLengths, Is.EqualTo(lengths.Select((l, r) => l + steps - (r == 1 ? 2 : 0))));
            // Both paths are float32 through 2 blocks; they differ only in summation order (online vs two-pass
            // softmax, one-row vs many-row matrix products): ~1e-6 relative. 1e-5 of the largest logit is far below what
            // a wrong position, a stale or misplaced cache slot, or an attended padding slot produces (≥ 1e-2).
            TestContext.Out.WriteLine($"{family} {shape}: max |cached − uncached| = {maxError:E2} over {steps + 1} steps, max |logit| {maxLogit:F2}");
            Assert.That(maxError, Is.LessThanOrEqualTo(1e-5 * Math.Max(1, maxLogit)));
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
