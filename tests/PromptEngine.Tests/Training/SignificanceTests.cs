using System.Numerics;
using PromptEngine.Training.Metrics;

namespace PromptEngine.Tests.Training;

public class SignificanceTests
{
    // Newcombe (1998), "Two-sided confidence intervals for the single proportion: comparison of seven
    // methods", Statistics in Medicine 17:857-872, Table I, method 3 (Wilson score, no continuity
    // correction), printed to 4 decimals: hence the tolerance of half a unit in the 4th decimal.
    [TestCase(81, 263, 0.2553, 0.3662)]
    [TestCase(15, 148, 0.0624, 0.1605)]
    [TestCase(0, 20, 0.0000, 0.1611)]
    [TestCase(1, 29, 0.0061, 0.1718)]
    public void WilsonMatchesNewcombesPublishedIntervals(int successes, int trials, double lower, double upper)
    {
        var interval = Significance.Wilson(successes, trials);
        Assert.That(interval.Lower, Is.EqualTo(lower).Within(5e-5));
        Assert.That(interval.Upper, Is.EqualTo(upper).Within(5e-5));
        Assert.That(interval.Estimate, Is.EqualTo((double)successes / trials));
    }

    [TestCase(10)]
    [TestCase(200)]
    [TestCase(1000)]
    public void WilsonAtZeroAndAllSuccessesHasItsClosedForm(int n)
    {
        // At k = 0 the interval is [0, z²/(n + z²)]; at k = n it is [n/(n + z²), 1].
        var z2 = Significance.Z95 * Significance.Z95;
        var none = Significance.Wilson(0, n);
        Assert.That(none.Lower, Is.EqualTo(0));
        Assert.That(none.Upper, Is.EqualTo(z2 / (n + z2)).Within(1e-14));
        var all = Significance.Wilson(n, n);
        Assert.That(all.Lower, Is.EqualTo(n / (n + z2)).Within(1e-14));
        Assert.That(all.Upper, Is.EqualTo(1));
    }

    [Test]
    public void WilsonBoundsAreTheRootsOfTheScoreEquation()
    {
        // Independently of the closed form: the bounds are the p where |k/n − p| = z·√(p(1−p)/n).
        foreach (var (k, n) in new[] { (585, 1000), (520, 1000), (3, 7), (999, 1000) })
        {
            var interval = Significance.Wilson(k, n);
            foreach (var p in new[] { interval.Lower, interval.Upper })
            {
                var score = Math.Abs((double)k / n - p) / Math.Sqrt(p * (1 - p) / n);
                Assert.That(score, Is.EqualTo(Significance.Z95).Within(1e-9), $"{k}/{n} at {p}");
            }
            Assert.That(interval.Lower, Is.LessThan(interval.Estimate));
            Assert.That(interval.Upper, Is.GreaterThan(interval.Estimate));
        }
    }

    [Test]
    public void WilsonEdgeCasesAndBadArguments()
    {
        Assert.That(Significance.Wilson(0, 0), Is.EqualTo(new ProportionInterval(0, 0, 0, 1)));
        Assert.Throws<ArgumentOutOfRangeException>(() => Significance.Wilson(-1, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => Significance.Wilson(11, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => Significance.Wilson(1, 10, z: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Significance.Wilson(1, 10, z: double.NaN));
    }

    [TestCase(0, 5, 2.0 / 32)]
    [TestCase(5, 0, 2.0 / 32)]
    [TestCase(1, 9, 2.0 * 11 / 1024)]
    [TestCase(1, 7, 2.0 * 9 / 256)]   // Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91: exact p = 0.070
    [TestCase(2, 8, 2.0 * 56 / 1024)]
    [TestCase(3, 3, 1.0)]
    [TestCase(4, 5, 1.0)]
    [TestCase(0, 1, 1.0)]
    public void McNemarMatchesExactBinomialSumsForSmallCounts(int b, int c, double expected)
    {
        var result = Significance.McNemarExact(b, c);
        Assert.That(result.PValue, Is.EqualTo(expected).Within(1e-14 + 1e-12 * expected));
        Assert.That((result.OnlyACorrect, result.OnlyBCorrect), Is.EqualTo(((long)b, (long)c)));
    }

    [Test]
    public void McNemarWithNoDiscordantPairsIsOne()
    {
        Assert.That(Significance.McNemarExact(0, 0).PValue, Is.EqualTo(1));
        Assert.That(Significance.McNemarExact([true, false, true], [true, false, true]).PValue, Is.EqualTo(1));
    }

    [TestCase(20, 60)]
    [TestCase(100, 160)]
    [TestCase(480, 520)]
    [TestCase(4000, 6000)]
    [TestCase(4900, 5100)]
    [TestCase(0, 1000)]
    [TestCase(1, 1021)]
    [TestCase(5000, 5000)]
    public void McNemarMatchesAnExactBigIntegerSumUpToTenThousandPairs(int b, int c)
    {
        var n = b + c;
        var k = Math.Min(b, c);
        // Σ_{i ≤ k} C(n, i) in exact integers, the coefficients built by C(n, i+1) = C(n, i)·(n−i)/(i+1).
        BigInteger coefficient = 1, sum = 1;
        for (var i = 0; i < k; i++)
        {
            coefficient = coefficient * (n - i) / (i + 1);
            sum += coefficient;
        }
        var logExpected = BigInteger.Log(sum) + Math.Log(2) - n * Math.Log(2);
        var p = Significance.McNemarExact(b, c).PValue;
        if (logExpected >= 0)
        {
            Assert.That(p, Is.EqualTo(1));
            return;
        }
        Assert.That(p, Is.GreaterThan(0), "a tail above double's smallest normal does not underflow");
        Assert.That(Math.Log(p), Is.EqualTo(logExpected).Within(1e-9), $"b={b} c={c}: relative error of p within 1e-9");
    }

    [Test]
    public void McNemarCountsDiscordantPairsFromPredictions()
    {
        bool[] a = [true, true, true, false, false, true, false];
        bool[] b = [true, false, false, true, false, false, false];
        var result = Significance.McNemarExact(a, b);
        Assert.That((result.OnlyACorrect, result.OnlyBCorrect), Is.EqualTo((3L, 1L)));
        Assert.That(result.PValue, Is.EqualTo(Significance.McNemarExact(3, 1).PValue));
        Assert.Throws<ArgumentException>(() => Significance.McNemarExact([true], [true, false]));
        Assert.Throws<ArgumentOutOfRangeException>(() => Significance.McNemarExact(-1, 2));
    }
}
