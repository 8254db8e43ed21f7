using PromptEngine.DeviceRunner;
using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;
using PromptEngine.TorchReference;
using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace PromptEngine.Oracle.Tests;

/// <summary>The device kit compares the engine's first loss with PyTorch + PEFT prompt tuning (torch_baseline.py) on
/// the same weights, tokens and prompt. PEFT prepends P labels of −100 to <c>labels</c> and Hugging Face's causal-LM
/// loss shifts labels by one (position p is scored on labels[p + 1]), so with <c>labels = input_ids</c> the last
/// virtual token is scored on input_ids[0], which the kit's batch (<see cref="TrainBenchmark.LanguageModelBatch"/>)
/// does not score. This builds PEFT's labels and Hugging Face's shift in TorchSharp over the oracle's logits at every
/// position, and checks that with labels[:, 0] = −100 (what torch_baseline.py sets) the loss is the engine's, and that
/// without it the loss is not.</summary>
[Category("Oracle")]
public class PeftLabellingTests
{
    [Test]
    public void EngineFirstLossIsPeftLossWithTheFirstLabelMasked([Values] TinyModelOracleTests.Family family)
    {
        var config = family == TinyModelOracleTests.Family.LlamaGqa
            ? ModelReferenceTinyModels.LlamaConfig(hidden: 32, heads: 4, kvHeads: 2, layers: 2, vocab: 53, intermediate: 48)
            : ModelReferenceTinyModels.Gpt2Config(hidden: 32, heads: 4, layers: 2, vocab: 57, positions: 32);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 23);
        try
        {
            using var model = ModelFolder.Open(folder);
            const int rows = 3, length = 14, promptTableRows = 4;
            var batch = TrainBenchmark.LanguageModelBatch(rows, length, promptTableRows, model.Config.VocabSize, seed: 6, out var inputIds);
            var prompt = TrainBenchmark.RandomPrompt(promptTableRows * model.Config.HiddenSize, seed: 7);

            using var engine = new TransformerEngine(OracleKernels.Context, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows));
            engine.SetPrompt(prompt);
            float engineLoss = engine.LossAndPromptGradient(batch);

            using var torchModel = TorchCausalLm.Load(model);
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            using var prepared = torchModel.Prepare(batch);
            var logits = torchModel.AllLogits(prepared, torchModel.PromptLeaf(prompt)).reshape(rows, length, -1); // (B, P + T', V)
            float masked = PeftLoss(logits, inputIds, promptTableRows, maskFirstLabel: true);
            float unmasked = PeftLoss(logits, inputIds, promptTableRows, maskFirstLabel: false);
            TestContext.Out.WriteLine($"{family}: engine {engineLoss:R}, PEFT labels[:, 0] = -100 {masked:R}, PEFT labels = input_ids {unmasked:R}");
            // The oracle's forward tolerance (TrainStepOracleTests): float32 through two blocks, two implementations.
            OracleCompare.Elementwise($"{family} first loss vs PEFT with the first label masked", [engineLoss], [masked], atol: 2e-5, rtol: 2e-5);
            Assert.That(Math.Abs(unmasked - engineLoss), Is.GreaterThan(1e-3),
                "labels = input_ids scores one more position per row; it must not agree, or this test shows nothing");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>PEFT's labels (P × −100, then input_ids, optionally with column 0 masked) and Hugging Face's shifted
    /// mean cross-entropy over the labels that are not −100, as torch_baseline.py's model computes it.</summary>
    static float PeftLoss(Tensor logits, int[][] inputIds, int promptTableRows, bool maskFirstLabel)
    {
        int rows = inputIds.Length, tokens = inputIds[0].Length;
        var labels = new long[rows * (promptTableRows + tokens)];
        for (int b = 0; b < rows; b++)
            for (int p = 0; p < promptTableRows + tokens; p++)
            {
                int t = p - promptTableRows;
                labels[b * (promptTableRows + tokens) + p] = t < 0 || (t == 0 && maskFirstLabel) ? -100 : inputIds[b][t];
            }
        var labelTensor = tensor(labels, int64).reshape(rows, promptTableRows + tokens);
        long vocab = logits.shape[2];
        var shiftedLogits = logits.narrow(1, 0, promptTableRows + tokens - 1).reshape(-1, vocab);
        var shiftedLabels = labelTensor.narrow(1, 1, promptTableRows + tokens - 1).reshape(-1);
        return F.cross_entropy(shiftedLogits.to_type(float64), shiftedLabels, ignore_index: -100).to_type(float32).item<float>();
    }
}
