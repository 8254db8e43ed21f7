using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Tests;
using PromptEngine.TorchReference;

namespace PromptEngine.Oracle.Tests;

/// <summary>
/// The engine against TorchSharp autograd (float32, as the benchmarks run it) on the real stories15M (6 blocks,
/// C = 288, 6 heads, V = 32000): logits at the scored positions, the loss and dLoss/dPrompt for an 8-row prompt at
/// prefix and suffix placement in a batch of three texts of different lengths, and a two-word verbalizer
/// classification batch like the benchmark's. dLoss/dPrompt is also compared with TorchSharp in float64, which
/// separates the engine's rounding from TorchSharp's.
/// </summary>
[Category("Oracle")]
[NonParallelizable]
public class Stories15MOracleTests
{
    const int PromptTableRows = 8;

    static readonly string[] Texts =
    [
        "Lily went to the park with her mom.",
        "Tom had a red ball. He liked to throw it high in the sky.",
        "The cat sat.",
    ];
    static readonly string[] Targets = [" She saw a big dog.", " One day, it fell in a tree.", " It was happy."];

    ModelFolder model = null!;
    TorchCausalLm torchModel = null!;
    TorchCausalLm torchModel64 = null!;
    float[] prompt = [];

    [OneTimeSetUp]
    public void Load()
    {
        model = ModelFolder.Open(TestAssets.Stories15MFolder);
        torchModel = TorchCausalLm.Load(model);
        torchModel64 = TorchCausalLm.Load(model, TorchSharp.torch.ScalarType.Float64);
        // Rows of real token embeddings plus noise, as a tuned prompt starts out.
        int C = model.Config.HiddenSize;
        var table = model.Tensors.ReadF32("model.embed_tokens.weight");
        var rng = new Random(21);
        prompt = new float[PromptTableRows * C];
        for (var r = 0; r < PromptTableRows; r++)
        {
            var token = rng.Next(1000, 5000);
            for (var c = 0; c < C; c++) prompt[r * C + c] = table[token * C + c] + (float)(0.05 * (rng.NextDouble() * 2 - 1));
        }
    }

    [OneTimeTearDown]
    public void Dispose()
    {
        torchModel?.Dispose();
        torchModel64?.Dispose();
        model?.Dispose();
    }

    Batch LanguageModelBatch(PromptPlacement placement)
    {
        var tokenizer = model.Tokenizer;
        var promptTableRows = Enumerable.Range(0, PromptTableRows).ToArray();
        // The second row scores its whole input; the others score the target only.
        return BatchBuilder.Build(Texts.Select((text, i) => (IReadOnlyList<Slot>)BatchBuilder.LanguageModelRow(
            tokenizer.Encode(text, true), i == 1 ? [] : tokenizer.Encode(Targets[i], false), promptTableRows, placement)).ToList());
    }

    Batch VerbalizerBatch()
    {
        var tokenizer = model.Tokenizer;
        // Without a leading space SentencePiece still adds its word-start marker: "▁happy", "▁sad", one token each.
        int[] words = [tokenizer.Encode("happy", false).Single(), tokenizer.Encode("sad", false).Single()];
        var rows = Texts.Select((text, i) =>
        {
            var row = Enumerable.Range(0, PromptTableRows).Select(Slot.Prompt).Concat(tokenizer.Encode(text + " The story is", true).Select(t => Slot.Token(t))).ToList();
            row[^1] = row[^1] with { Target = words[i % 2] };
            return (IReadOnlyList<Slot>)row;
        }).ToList();
        return BatchBuilder.Build(rows, verbalizer: words);
    }

    [TestCase(PromptPlacement.Prefix)]
    [TestCase(PromptPlacement.Suffix)]
    [TestCase(null)]
    public void EngineMatchesTorchSharp(PromptPlacement? placement)
    {
        var batch = placement is { } p ? LanguageModelBatch(p) : VerbalizerBatch();
        var what = $"stories15M {placement?.ToString() ?? "verbalizer"}";
        var engine = TinyModelOracleTests.RunEngine(model, batch, prompt, PromptTableRows);
        var (torchLoss, torchGradient) = torchModel.LossAndPromptGradient(batch, prompt);
        var torchLogits = torchModel.Logits(batch, prompt);
        TestContext.Out.WriteLine($"{what}: {batch.Rows}×{batch.Length}, {batch.LossPositions.Length} scored; loss engine {engine.Loss:R} torch {torchLoss:R}");

        // Both sides are float32 through 6 blocks; logits reach ~20 and come out of 288-long dot products whose
        // summation orders differ (ILGPU scalar loops vs MKL/oneDNN blocks). Measured ≤ 2e-5 absolute; 2e-4 + 1e-4·|ref|
        // keeps a 10× margin and stays far below the ~1e-1 that a wrong position, mask or RoPE angle produces.
        OracleCompare.Elementwise($"{what} logits", engine.Logits, torchLogits, atol: 2e-4, rtol: 1e-4);
        // The loss is logsumexp minus the target logit, averaged: it inherits the logits' absolute error. With the
        // cross-entropy's compensated vocabulary sum, measured ≤ 5e-6 on a loss of 2.5 (5e-5 before it); 5e-5 keeps a 10× margin.
        OracleCompare.Elementwise($"{what} loss", [engine.Loss], [torchLoss], atol: 5e-5, rtol: 1e-5);
        // dPrompt carries float32 rounding back through 6 blocks and a 32000-way softmax. Against TorchSharp in float64
        // (whose own rounding is negligible) the error is the engine's: 3e-6 norm-wise since the cross-entropy backward
        // sums the vocabulary in blocks (it was 3e-4 with one running sum over 32,000 columns, which this bound would now
        // catch); 5e-5 keeps a 10× margin, and a wrong index, sign or path gives errors of order 1. Against float32
        // TorchSharp both sides' rounding adds up: measured 7.5e-6, bound 1e-4.
        var (torchLoss64, torchGradient64) = torchModel64.LossAndPromptGradient(batch, prompt);
        TestContext.Out.WriteLine($"{what}: loss float64 torch {torchLoss64:R}");
        OracleCompare.NormWise($"{what} dLoss/dPrompt vs float64 torch", engine.Gradient, torchGradient64, tolerance: 5e-5);
        OracleCompare.NormWise($"{what} dLoss/dPrompt vs float32 torch", engine.Gradient, torchGradient, tolerance: 1e-4);
    }
}
