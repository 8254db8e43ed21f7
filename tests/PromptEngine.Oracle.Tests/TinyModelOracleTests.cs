using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;
using PromptEngine.TorchReference;
using TorchSharp;

namespace PromptEngine.Oracle.Tests;

/// <summary>
/// The engine (ILGPU CPU accelerator, float32) against TorchSharp autograd on tiny seeded random models: a Llama with
/// grouped-query attention (4 query heads on 2 key/value heads) and a GPT-2 — logits at the scored positions, the
/// loss and dLoss/dPrompt, for prefix and suffix prompts in batches whose rows have different lengths (padding), and
/// a classification batch whose softmax is restricted to a verbalizer. TorchSharp runs in float32 (what the
/// benchmarks time) and in float64 (then the measured error is the engine's own rounding).
/// </summary>
[Category("Oracle")]
public class TinyModelOracleTests
{
    public enum Family { LlamaGqa, Gpt2 }

    const int PromptTableRows = 3;

    // Widths large enough for real reductions (C = 32, 4 heads, GQA 2:1), small enough to run in milliseconds.
    static string Config(Family family) => family == Family.LlamaGqa
        ? ModelReferenceTinyModels.LlamaConfig(hidden: 32, heads: 4, kvHeads: 2, layers: 2, vocab: 53, intermediate: 48)
        : ModelReferenceTinyModels.Gpt2Config(hidden: 32, heads: 4, layers: 2, vocab: 57, positions: 32);

    string folder = "";

    [TearDown]
    public void DeleteModel()
    {
        if (folder.Length > 0 && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
    }

    /// <summary>Three rows of different lengths: input + target (scored), input only (every next token scored), and a
    /// short input + target, each with the prompt at <paramref name="placement"/>.</summary>
    internal static Batch LanguageModelBatch(int vocab, PromptPlacement placement, int seed)
    {
        var rng = new Random(seed);
        int[] Tokens(int n) => Enumerable.Range(0, n).Select(_ => rng.Next(vocab)).ToArray();
        int[] prompt = Enumerable.Range(0, PromptTableRows).ToArray();
        var rows = new List<IReadOnlyList<Slot>>
        {
            BatchBuilder.LanguageModelRow(Tokens(7), Tokens(3), prompt, placement),
            BatchBuilder.LanguageModelRow(Tokens(5), [], prompt, placement),
            BatchBuilder.LanguageModelRow(Tokens(3), Tokens(2), prompt, placement),
        };
        return BatchBuilder.Build(rows);
    }

    /// <summary>Two classification rows of different lengths, prompt first, one scored position (the last real one)
    /// whose softmax spans three label words.</summary>
    static Batch VerbalizerBatch(int vocab, int seed)
    {
        var rng = new Random(seed);
        int[] words = [3, 7, 11];
        var rows = new List<IReadOnlyList<Slot>>();
        foreach (var length in new[] { 9, 6 })
        {
            var row = Enumerable.Range(0, PromptTableRows).Select(Slot.Prompt).Concat(Enumerable.Range(0, length).Select(_ => Slot.Token(rng.Next(vocab)))).ToList();
            row[^1] = row[^1] with { Target = words[rng.Next(words.Length)] };
            rows.Add(row);
        }
        return BatchBuilder.Build(rows, verbalizer: words);
    }

    static float[] RandomPrompt(int rows, int width, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows * width).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
    }

    internal record EngineResult(float Loss, float[] Gradient, float[] Logits);

    internal static EngineResult RunEngine(ModelFolder model, Batch batch, float[] prompt, int promptTableRows)
    {
        using var engine = new TransformerEngine(OracleKernels.Context, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows));
        engine.SetPrompt(prompt);
        var loss = engine.LossAndPromptGradient(batch);
        return new EngineResult(loss, engine.GetPromptGradient(), engine.Logits(batch));
    }

    [Test]
    public void EngineMatchesTorchSharp(
        [Values] Family family,
        [Values(PromptPlacement.Prefix, PromptPlacement.Suffix, null)] PromptPlacement? placement,
        [Values(torch.ScalarType.Float32, torch.ScalarType.Float64)] torch.ScalarType dtype)
    {
        folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 31 + (int)family);
        using var model = ModelFolder.Open(folder);
        using var torchModel = TorchCausalLm.Load(model, dtype);
        var batch = placement is { } p
            ? LanguageModelBatch(model.Config.VocabSize, p, seed: 10 * (int)p + (int)family)
            : VerbalizerBatch(model.Config.VocabSize, seed: 5 + (int)family);
        var prompt = RandomPrompt(PromptTableRows, model.Config.HiddenSize, seed: 7);

        var engine = RunEngine(model, batch, prompt, PromptTableRows);
        var (torchLoss, torchGradient) = torchModel.LossAndPromptGradient(batch, prompt);
        var torchLogits = torchModel.Logits(batch, prompt);
        var what = $"{family} {placement?.ToString() ?? "verbalizer"} torch {dtype}";
        TestContext.Out.WriteLine($"{what}: {batch.Rows}×{batch.Length}, {batch.LossPositions.Length} scored; loss engine {engine.Loss:R} torch {torchLoss:R}");

        // Two float32 blocks with O(1) activations: rounding is ~1e-6 relative per op, a few ulps after the
        // O(C) and O(T) reductions. 1e-4 absolute + 1e-4 relative leaves a 10-100× margin over that, and is
        // still far below what a wrong mask, position or head mapping produces (errors ≥ 1e-2).
        OracleCompare.Elementwise($"{what} logits", engine.Logits, torchLogits, atol: 1e-4, rtol: 1e-4);
        // The loss is a mean of O(1) terms: the same argument, one number.
        OracleCompare.Elementwise($"{what} loss", [engine.Loss], [torchLoss], atol: 1e-5, rtol: 1e-5);
        // dPrompt sums over every position that attends to the prompt, so individual components can be small
        // differences of larger terms; judge the whole vector: 1e-4 of its norm.
        OracleCompare.NormWise($"{what} dLoss/dPrompt", engine.Gradient, torchGradient, tolerance: 1e-4);
    }

    [Test]
    public void IdiomaticLossEqualsSameMathLossWhenTheLabelsCoincide([Values] Family family)
    {
        // Without a verbalizer the idiomatic form (full logits at every position, cross-entropy with −100 labels)
        // takes the same softmax at the same positions: the same number, and the same gradient, from a different graph.
        folder = ModelReferenceTinyModels.WriteRandom(Config(family), seed: 41 + (int)family);
        using var torchModel = TorchCausalLm.Load(folder, torch.ScalarType.Float64);
        var batch = LanguageModelBatch(torchModel.Config.VocabSize, PromptPlacement.Prefix, seed: 3);
        var prompt = RandomPrompt(PromptTableRows, torchModel.Config.HiddenSize, seed: 8);
        var (sameLoss, sameGradient) = torchModel.LossAndPromptGradient(batch, prompt, TorchLossForm.SameMath);
        var (idiomaticLoss, idiomaticGradient) = torchModel.LossAndPromptGradient(batch, prompt, TorchLossForm.Idiomatic);
        TestContext.Out.WriteLine($"{family}: same-math {sameLoss:R}, idiomatic {idiomaticLoss:R}");
        // float64 throughout; only the summation order differs (rounded to float32 at the end).
        OracleCompare.Elementwise($"{family} idiomatic loss", [idiomaticLoss], [sameLoss], atol: 1e-6, rtol: 1e-6);
        OracleCompare.NormWise($"{family} idiomatic dLoss/dPrompt", idiomaticGradient, sameGradient, tolerance: 1e-6);

        // With a verbalizer the forms differ: the idiomatic softmax spans the whole vocabulary, a superset of the label
        // words, so its cross-entropy is strictly larger. (This keeps the equality above from passing by accident.)
        var classification = VerbalizerBatch(torchModel.Config.VocabSize, seed: 2);
        var (restricted, _) = torchModel.LossAndPromptGradient(classification, prompt, TorchLossForm.SameMath);
        var (unrestricted, _) = torchModel.LossAndPromptGradient(classification, prompt, TorchLossForm.Idiomatic);
        TestContext.Out.WriteLine($"{family} verbalizer batch: same-math {restricted:R}, idiomatic {unrestricted:R}");
        Assert.That(unrestricted, Is.GreaterThan(restricted + 1e-3), "idiomatic (whole vocabulary) vs verbalizer-restricted loss");

        // The same through the train step the benchmarks time: one AdamW step of each form from the same prompt.
        using var sameTrainer = new TorchPromptTrainer(torchModel, prompt, learningRate: 0.05);
        using var idiomaticTrainer = new TorchPromptTrainer(torchModel, prompt, learningRate: 0.05);
        using var prepared = torchModel.Prepare(batch);
        var sameStepLoss = sameTrainer.Step(prepared, TorchLossForm.SameMath);
        var idiomaticStepLoss = idiomaticTrainer.Step(prepared, TorchLossForm.Idiomatic);
        OracleCompare.Elementwise($"{family} idiomatic step loss", [idiomaticStepLoss], [sameStepLoss], atol: 1e-6, rtol: 1e-6);
        OracleCompare.Elementwise($"{family} prompt after one step of each form", idiomaticTrainer.GetPrompt(), sameTrainer.GetPrompt(), atol: 1e-6, rtol: 1e-6);
        Assert.That(sameTrainer.GetPrompt().Zip(prompt, (a, b) => Math.Abs(a - b)).Max(), Is.GreaterThan(0.01), "the step must move the prompt");
    }
}
