using System.Diagnostics;
using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>The engine on the real stories15M: it must read as the model it is.</summary>
public class Stories15MEngineTests
{
    [Test]
    public void GreedyDecodingFromBosIsFluentEnglish()
    {
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var model = ModelFolder.Open(TestAssets.Stories15MFolder);
        using var engine = new TransformerEngine(kernels, model, new EngineOptions(1, 48, 0, Training: false));
        var clock = Stopwatch.StartNew();
        var tokens = Generator.Generate(engine, [1], [], new SamplingOptions(30));
        var text = model.Tokenizer.Decode(tokens);
        TestContext.Out.WriteLine($"{clock.Elapsed.TotalSeconds:F1} s: {text}");
        Assert.That(text, Does.StartWith("Once upon a time"));
    }
}
