using TorchSharp;

namespace PromptEngine.Oracle.Tests;

/// <summary>TorchSharp's native library loads on this machine (see build/TorchSharpNativePatch.targets) and computes.</summary>
[Category("Oracle")]
public class TorchLoadsTests
{
    [Test]
    public void OnesSumToTwo()
    {
        using var sum = torch.ones(2).sum();
        Assert.That(sum.item<float>(), Is.EqualTo(2f));
    }
}
