using PromptEngine.Generation;

namespace PromptEngine.Tests.Generation;

/// <summary>The sampler's distribution (temperature, top-k, then top-p, renormalised), its edge cases, and its
/// per-row deterministic streams.</summary>
public class TokenSamplerTests
{
    // Probabilities 0.5, 0.25, 0.125, 0.125 at temperature 1.
    static readonly float[] Halving = [MathF.Log(0.5f), MathF.Log(0.25f), MathF.Log(0.125f), MathF.Log(0.125f)];

    static void AssertDistribution(double[] actual, params double[] expected) =>
        Assert.That(actual, Is.EqualTo(expected).Within(1e-6), string.Join(", ", actual));

    [Test]
    public void TopPKeepsTheSmallestSetThatReachesP()
    {
        AssertDistribution(TokenSampler.Distribution(Halving, 1, null, 1f), 0.5, 0.25, 0.125, 0.125);
        AssertDistribution(TokenSampler.Distribution(Halving, 1, null, 0.4f), 1, 0, 0, 0);            // the top token alone reaches p
        AssertDistribution(TokenSampler.Distribution(Halving, 1, null, 0.6f), 2 / 3.0, 1 / 3.0, 0, 0); // 0.5 < p ≤ 0.75
        AssertDistribution(TokenSampler.Distribution(Halving, 1, null, 0.8f), 0.5 / 0.875, 0.25 / 0.875, 0.125 / 0.875, 0);
        AssertDistribution(TokenSampler.Distribution(Halving, 1, null, 1e-7f), 1, 0, 0, 0);           // never empty
    }

    [Test]
    public void TopPAtAnExactBoundaryKeepsTheTokenThatReachesIt()
    {
        // Four equal logits: exp(0) = 1 each, so the cumulative mass after two tokens is exactly p·total = 2.
        float[] equal = [3, 3, 3, 3];
        AssertDistribution(TokenSampler.Distribution(equal, 1, null, 0.5f), 0.5, 0.5, 0, 0);
        AssertDistribution(TokenSampler.Distribution(equal, 1, null, 0.50001f), 1 / 3.0, 1 / 3.0, 1 / 3.0, 0);
    }

    [Test]
    public void TopKRanksTiesByLowerIdAndTopPAppliesAfterItsRenormalisation()
    {
        float[] ties = [1, 2, 2, 0];
        AssertDistribution(TokenSampler.Distribution(ties, 1, 1, 1f), 0, 1, 0, 0);
        AssertDistribution(TokenSampler.Distribution(ties, 1, 2, 1f), 0, 0.5, 0.5, 0);
        AssertDistribution(TokenSampler.Distribution(Halving, 1, 10, 1f), 0.5, 0.25, 0.125, 0.125); // k > V keeps all
        // Top-2 renormalises to 2/3, 1/3; p = 0.6 is then reached by the first token alone (HF order: top-k, then top-p).
        AssertDistribution(TokenSampler.Distribution(Halving, 1, 2, 0.6f), 1, 0, 0, 0);
    }

    [Test]
    public void TemperatureDividesTheLogits()
    {
        float[] logits = [0.3f, -1.2f, 2.0f, 0.9f, -0.4f];
        foreach (var temperature in new[] { 0.25f, 1f, 3f })
        {
            var weights = logits.Select(l => Math.Exp(l / (double)temperature)).ToArray();
            AssertDistribution(TokenSampler.Distribution(logits, temperature, null, 1f), weights.Select(w => w / weights.Sum()).ToArray());
        }
    }

    [Test]
    public void DrawsFollowTheDistribution()
    {
        float[] logits = [0.3f, -1.2f, 2.0f, 0.9f, -0.4f, 1.5f];
        var options = new SamplingOptions(1, Temperature: 0.9f, Seed: 3, TopK: 4, TopP: 0.9f);
        var expected = TokenSampler.Distribution(logits, 0.9f, 4, 0.9f);
        var sampler = new TokenSampler(options, row: 0);
        const int draws = 40000;
        var counts = new int[logits.Length];
        for (var i = 0; i < draws; i++) counts[sampler.Sample(logits)]++;
        TestContext.Out.WriteLine($"expected {string.Join(", ", expected.Select(p => p.ToString("F4")))}; drawn {string.Join(", ", counts.Select(c => (c / (double)draws).ToString("F4")))}");
        for (var v = 0; v < logits.Length; v++)
        {
            if (expected[v] == 0) Assert.That(counts[v], Is.Zero, $"token {v} was cut and must never be drawn");
            // Binomial standard deviation ≤ √(0.25/40000) = 0.0025: 5σ.
            else Assert.That(counts[v] / (double)draws, Is.EqualTo(expected[v]).Within(0.0125), $"token {v}");
        }
        // Top-4 cuts tokens 1 and 4; of the renormalised four, the three most likely hold 0.925 ≥ 0.9, so top-p cuts token 0.
        Assert.That(expected.Count(p => p > 0), Is.EqualTo(3), "the test must exercise both cuts");
    }

    [Test]
    public void StreamsAreDeterministicPerSeedAndRow()
    {
        float[] logits = Enumerable.Range(0, 50).Select(i => (float)Math.Sin(i)).ToArray();
        List<int> Draw(int seed, int row)
        {
            var sampler = new TokenSampler(new SamplingOptions(1, Temperature: 1f, Seed: seed), row);
            return Enumerable.Range(0, 40).Select(_ => sampler.Sample(logits)).ToList();
        }
        Assert.That(Draw(7, 0), Is.EqualTo(Draw(7, 0)));
        Assert.That(Draw(7, 0), Is.Not.EqualTo(Draw(8, 0)));
        Assert.That(Draw(7, 0), Is.Not.EqualTo(Draw(7, 1)));
    }

    [Test]
    public void GreedyIsTheArgMaxWithTheLowestIdAmongTies()
    {
        var sampler = new TokenSampler(new SamplingOptions(1), row: 0);
        Assert.That(sampler.Sample([0.5f, 2f, -1f, 2f]), Is.EqualTo(1));
        // Top-k = 1 at any temperature is greedy too.
        var topOne = new TokenSampler(new SamplingOptions(1, Temperature: 5f, TopK: 1), row: 0);
        Assert.That(Enumerable.Range(0, 20).Select(_ => topOne.Sample([0.5f, 2f, -1f, 2f])), Has.All.EqualTo(1));
    }

    [TestCase(0, 1f, 1f, "TopK")]
    [TestCase(null, 0f, 1f, "TopP")]
    [TestCase(null, 1.5f, 1f, "TopP")]
    [TestCase(null, float.NaN, 1f, "TopP")]
    [TestCase(null, 1f, -0.5f, "Temperature")]
    [TestCase(null, 1f, float.PositiveInfinity, "Temperature")]
    public void BadOptionsAreRejected(int? topK, float topP, float temperature, string field)
    {
        var error = Assert.Throws<ArgumentOutOfRangeException>(() => new SamplingOptions(1, temperature, TopK: topK, TopP: topP).Validate());
        Assert.That(error!.ParamName, Is.EqualTo(field));
    }
}
