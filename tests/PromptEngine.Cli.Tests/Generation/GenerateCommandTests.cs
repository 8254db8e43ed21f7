namespace PromptEngine.Tests.Generation;

/// <summary><c>promptengine generate</c> on the cached path: --top-k and --top-p, validated with one-line errors.</summary>
[NonParallelizable]
public class GenerateCommandTests
{
    static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (output, error) = (new StringWriter(), new StringWriter());
        var code = PromptEngine.Cli.Program.Run(args, output, error);
        return (code, output.ToString(), error.ToString());
    }

    [Test]
    public void TopKAndTopPSampleReproduciblyAndTopKOneIsGreedy()
    {
        var greedy = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "10");
        Assert.That(greedy.Code, Is.EqualTo(0), greedy.Err);
        Assert.That(greedy.Out.Trim(), Is.EqualTo("Once upon a time, there was a little girl"));
        var topOne = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "10", "--temperature", "1.5", "--seed", "3", "--top-k", "1");
        Assert.That(topOne.Code, Is.EqualTo(0), topOne.Err);
        Assert.That(topOne.Out, Is.EqualTo(greedy.Out), "top-k 1 is greedy at any temperature");
        string[] nucleus = ["generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "10", "--temperature", "1", "--seed", "5", "--top-k", "40", "--top-p", "0.9"];
        var sampled = Run(nucleus);
        Assert.That(sampled.Code, Is.EqualTo(0), sampled.Err);
        Assert.That(Run(nucleus).Out, Is.EqualTo(sampled.Out), "same seed, same text");
    }

    [TestCase("--top-k", "0", "--top-k must be ≥ 1")]
    [TestCase("--top-k", "-3", "--top-k must be ≥ 1")]
    [TestCase("--top-p", "0", "--top-p must be in (0, 1]")]
    [TestCase("--top-p", "1.5", "--top-p must be in (0, 1]")]
    [TestCase("--top-p", "NaN", "--top-p must be in (0, 1]")]
    public void BadFlagsAreOneLineErrors(string flag, string value, string message)
    {
        var (code, _, err) = Run("generate", "--model", TestAssets.Stories15MFolder, "--max-new-tokens", "4", flag, value);
        Assert.That(code, Is.EqualTo(1));
        Assert.That(err.Trim(), Does.Contain(message));
        Assert.That(err.Trim().Split('\n'), Has.Length.EqualTo(1), err);
    }
}
