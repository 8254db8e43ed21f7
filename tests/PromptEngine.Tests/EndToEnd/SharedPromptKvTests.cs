using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Exact prompt-KV reuse against the naive path (the prompt in front of every row): logits at inference,
/// cached generation, and loss and dPrompt in training, on tiny GQA Llama and GPT-2 models; plus a timing of both.</summary>
public class SharedPromptKvTests
{
    public enum Family { LlamaGqa, Gpt2 }

    const int P = 4;

    static string Config(Family family) => family == Family.LlamaGqa
        ? ModelReferenceTinyModels.LlamaConfig()
        : ModelReferenceTinyModels.Gpt2Config(positions: 64);

    /// <summary>The same rows with the prompt in front (naive) and without (shared): every token after the first predicts the
    /// next; prompt positions are never scored.</summary>
    static (Batch Naive, Batch Rows) Rows(int vocab, int seed, int[] lengths)
    {
        var rng = new Random(seed);
        var tokens = lengths.Select(n => Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray()).ToArray();
        List<Slot> Row(int[] t, bool withPrompt)
        {
            var row = withPrompt ? Enumerable.Range(0, P).Select(Slot.Prompt).ToList() : [];
            row.AddRange(t.Select((token, i) => Slot.Token(token, i + 1 < t.Length ? t[i + 1] : -1)));
            return row;
        }
        return (BatchBuilder.Build(tokens.Select(t => (IReadOnlyList<Slot>)Row(t, true)).ToArray()),
            BatchBuilder.Build(tokens.Select(t => (IReadOnlyList<Slot>)Row(t, false)).ToArray()));
    }

    static float[] RandomPrompt(int hidden, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, P * hidden).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    [Test]
    public void ReusedPromptKvGivesTheNaiveLogits([Values] Family family, [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 71);
        try
        {
            using var model = ModelFolder.Open(folder);
            var (naive, rows) = Rows(model.Config.VocabSize, 3, [6, 3, 8]);
            var prompt = RandomPrompt(model.Config.HiddenSize, 4);
            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var naiveEngine = new TransformerEngine(kernels, model, new EngineOptions(3, naive.Length, P, Training: false));
            naiveEngine.SetPrompt(prompt);
            var expected = naiveEngine.Logits(naive);
            var keysAndValues = naiveEngine.PromptKeysAndValues(Enumerable.Range(0, P).ToArray());
            using var reuse = new TransformerEngine(kernels, model, new EngineOptions(3, rows.Length, 0, Training: false, DeepVirtualTokens: P));
            reuse.SetPrefix(keysAndValues);
            var actual = reuse.Logits(rows);
            // The same sums in another order (the prompt keys merged after the token keys): float rounding only.
            TensorAssert.Close($"{family} {shape} reused-KV logits vs naive", actual, expected.Select(x => (double)x).ToArray(), 1e-4, 1e-4);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void ReusedPromptKvGeneratesTheNaiveLogitsAtEveryStep([Values] Family family)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 72);
        try
        {
            using var model = ModelFolder.Open(folder);
            var prompt = RandomPrompt(model.Config.HiddenSize, 5);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var naiveEngine = new TransformerEngine(kernels, model, new EngineOptions(2, 16, P, Training: false));
            naiveEngine.SetPrompt(prompt);
            var keysAndValues = naiveEngine.PromptKeysAndValues(Enumerable.Range(0, P).ToArray());
            using var reuse = new TransformerEngine(kernels, model, new EngineOptions(2, 16, 0, Training: false, DeepVirtualTokens: P));
            reuse.SetPrefix(keysAndValues);
            int[][] starts = [[1, 2, 3], [4]];
            var naiveLogits = naiveEngine.Prefill(Generator.PrefillBatch(naiveEngine, starts.Select(s => new GenerationRequest(s, Enumerable.Range(0, P).ToArray())).ToArray()));
            var reuseLogits = reuse.Prefill(Generator.PrefillBatch(reuse, starts.Select(s => new GenerationRequest(s, [])).ToArray()));
            var rng = new Random(6);
            for (var step = 0; step < 5; step++)
            {
                TensorAssert.Close($"{family} step {step}", reuseLogits, naiveLogits.Select(x => (double)x).ToArray(), 1e-4, 1e-4);
                int[] next = [rng.Next(model.Config.VocabSize), rng.Next(model.Config.VocabSize)];
                naiveLogits = naiveEngine.DecodeStep(next);
                reuseLogits = reuse.DecodeStep(next);
            }
            Assert.That(reuse.CacheLengths, Is.EqualTo(naiveEngine.CacheLengths));
        }
        finally { Directory.Delete(folder, recursive: true); }
    }

    [Test]
    public void SharedPromptTrainingGivesTheNaiveLossAndGradient([Values] Family family, [Values(KernelShape.Cpu, KernelShape.Gpu)] KernelShape shape)
    {
        var folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 73);
        try
        {
            using var model = ModelFolder.Open(folder);
            var (naive, rows) = Rows(model.Config.VocabSize, 7, [7, 4, 6, 5]);
            var prompt = RandomPrompt(model.Config.HiddenSize, 8);
            using var kernels = KernelContext.Create(KernelBackend.Cpu, shape);
            using var naiveEngine = new TransformerEngine(kernels, model, new EngineOptions(4, naive.Length, P));
            naiveEngine.SetPrompt(prompt);
            var naiveLoss = naiveEngine.LossAndPromptGradient(naive);
            var naiveGradient = naiveEngine.GetPromptGradient();

            using var promptEngine = new TransformerEngine(kernels, model, new EngineOptions(1, P, P));
            using var rowsEngine = new TransformerEngine(kernels, model, new EngineOptions(4, rows.Length, 0, DeepVirtualTokens: P));
            promptEngine.SetPrompt(prompt);
            var loss = SharedPromptKv.LossAndPromptGradient(promptEngine, rowsEngine, Enumerable.Range(0, P).ToArray(), rows);
            var gradient = promptEngine.GetPromptGradient();
            TestContext.Out.WriteLine($"{family} {shape}: loss {loss} vs naive {naiveLoss}");
            Assert.That(loss, Is.EqualTo(naiveLoss).Within(1e-5 + 1e-5 * Math.Abs(naiveLoss)));
            Assert.That(naiveGradient.Max(Math.Abs), Is.GreaterThan(1e-4f));
            TensorAssert.Close($"{family} {shape} shared-KV dPrompt vs naive", gradient, naiveGradient.Select(g => (double)g).ToArray(), 1e-4 * naiveGradient.Max(Math.Abs), 0);

            // A second batch accumulates like the naive path does.
            SharedPromptKv.LossAndPromptGradient(promptEngine, rowsEngine, Enumerable.Range(0, P).ToArray(), rows);
            TensorAssert.Close("accumulated", promptEngine.GetPromptGradient(), naiveGradient.Select(g => 2.0 * g).ToArray(), 2e-4 * naiveGradient.Max(Math.Abs), 0);
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
