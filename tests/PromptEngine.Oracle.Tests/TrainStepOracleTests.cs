using PromptEngine.Engine;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;
using PromptEngine.TorchReference;

namespace PromptEngine.Oracle.Tests;

/// <summary>A few training steps of the engine (LossAndPromptGradient + OptimizerStep) against the TorchSharp step the
/// benchmarks time (<see cref="TorchPromptTrainer"/>: autograd + torch.optim.AdamW on the prompt alone): the losses
/// along the way and the prompt at the end.</summary>
[Category("Oracle")]
public class TrainStepOracleTests
{
    [Test]
    public void AdamWStepsMatchTorchOptim([Values] TinyModelOracleTests.Family family)
    {
        var config = family == TinyModelOracleTests.Family.LlamaGqa
            ? ModelReferenceTinyModels.LlamaConfig(hidden: 32, heads: 4, kvHeads: 2, layers: 2, vocab: 53, intermediate: 48)
            : ModelReferenceTinyModels.Gpt2Config(hidden: 32, heads: 4, layers: 2, vocab: 57, positions: 32);
        var folder = ModelReferenceTinyModels.WriteRandom(config, seed: 61);
        try
        {
            using var model = ModelFolder.Open(folder);
            const int promptTableRows = 3, steps = 4;
            const float learningRate = 0.05f, weightDecay = 0.01f;
            var batch = TinyModelOracleTests.LanguageModelBatch(model.Config.VocabSize, PromptPlacement.Prefix, seed: 17);
            var rng = new Random(4);
            var initial = Enumerable.Range(0, promptTableRows * model.Config.HiddenSize).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();

            using var engine = new TransformerEngine(OracleKernels.Context, model, new EngineOptions(batch.Rows, batch.Length, promptTableRows));
            engine.SetPrompt(initial);
            using var torchModel = TorchCausalLm.Load(model);
            using var trainer = new TorchPromptTrainer(torchModel, initial, learningRate, weightDecay: weightDecay);
            using var torchBatch = torchModel.Prepare(batch);
            for (var step = 0; step < steps; step++)
            {
                engine.ZeroPromptGradient();
                var engineLoss = engine.LossAndPromptGradient(batch);
                engine.OptimizerStep(learningRate, weightDecay: weightDecay);
                var torchLoss = trainer.Step(torchBatch);
                TestContext.Out.WriteLine($"{family} step {step}: loss engine {engineLoss:R} torch {torchLoss:R}");
                // The loss before each step: the forward tolerance, carried over steps whose prompts differ by ≤ 1e-6.
                OracleCompare.Elementwise($"{family} loss at step {step}", [engineLoss], [torchLoss], atol: 2e-5, rtol: 2e-5);
            }
            // Adam divides m by √v, so a relative gradient error δ moves each update by about lr·δ (≤ 1e-7 here); the
            // prompt moved by ~lr·steps = 0.2 per element, so 1e-5 absolute detects a wrong bias correction, decay or
            // sign (each ≥ 1e-3) with 10× margin over float32 rounding of O(1) values.
            OracleCompare.Elementwise($"{family} prompt after {steps} AdamW steps", engine.GetPrompt(), trainer.GetPrompt(), atol: 1e-5, rtol: 1e-5);
            var moved = engine.GetPrompt().Zip(initial, (a, b) => Math.Abs(a - b)).Max();
            Assert.That(moved, Is.GreaterThan(0.1), "the steps must move the prompt, or the comparison proves nothing");
        }
        finally
        {
            Directory.Delete(folder, recursive: true);
        }
    }
}
