namespace PromptEngine.Training.Metrics;

/// <summary>A proportion with its confidence interval.</summary>
/// <param name="Successes">Examples counted as successes (e.g. correct predictions).</param>
/// <param name="Trials">Examples in all.</param>
/// <param name="Lower">Lower bound of the interval, in [0, 1].</param>
/// <param name="Upper">Upper bound of the interval, in [0, 1].</param>
public readonly record struct ProportionInterval(long Successes, long Trials, double Lower, double Upper)
{
    /// <summary>Successes / Trials (0 for no trials).</summary>
    public double Estimate => Trials == 0 ? 0 : (double)Successes / Trials;
}

/// <summary>The exact McNemar test of two classifiers on the same examples.</summary>
/// <param name="OnlyACorrect">b: examples classifier A gets right and B gets wrong.</param>
/// <param name="OnlyBCorrect">c: examples B gets right and A gets wrong.</param>
/// <param name="PValue">Two-sided exact p-value: min(1, 2·P[X ≤ min(b, c)]) for X ~ Binomial(b + c, 1/2); 1 when b + c = 0.</param>
public readonly record struct McNemarResult(long OnlyACorrect, long OnlyBCorrect, double PValue);

/// <summary>
/// The two statistics the results pages quote: a 95 % interval for an accuracy (Wilson's score interval)
/// and a paired test of whether two classifiers on the same examples differ (the exact, binomial McNemar
/// test). Both need only counts.
/// <para>Wilson (1927): with p̂ = k/n and z the normal quantile,
/// centre = (p̂ + z²/2n) / (1 + z²/n), half-width = z·√(p̂(1−p̂)/n + z²/4n²) / (1 + z²/n). Unlike the
/// Wald interval p̂ ± z·√(p̂(1−p̂)/n) it stays inside [0, 1] and keeps its coverage near 0 and 1.</para>
/// <para>McNemar, exact form: only the discordant pairs carry information; under the null hypothesis that
/// A and B are equally accurate each of the b + c discordant examples is A's with probability 1/2. The
/// binomial terms are summed in log space (log-gamma for the coefficients, log-sum-exp for the sum), so
/// b + c in the tens of thousands neither overflows nor loses the small tail to underflow before the sum.</para>
/// </summary>
public static class Significance
{
    /// <summary>z for a two-sided 95 % interval: the 0.975 quantile of the standard normal.</summary>
    public const double Z95 = 1.959963984540054;

    /// <summary>Wilson's score interval for <paramref name="successes"/> out of <paramref name="trials"/>
    /// (95 % by default). For no trials the interval is [0, 1].</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative counts, successes above trials, or z not positive.</exception>
    public static ProportionInterval Wilson(long successes, long trials, double z = Z95)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(successes);
        ArgumentOutOfRangeException.ThrowIfNegative(trials);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(successes, trials);
        if (!(z > 0)) throw new ArgumentOutOfRangeException(nameof(z), z, "z must be positive");
        if (trials == 0) return new ProportionInterval(0, 0, 0, 1);

        double n = trials;
        var p = successes / n;
        var z2 = z * z;
        var denominator = 1 + z2 / n;
        var centre = (p + z2 / (2 * n)) / denominator;
        var halfWidth = z * Math.Sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator;
        // At k = 0 (k = n) the lower (upper) bound is exactly 0 (1); rounding must not move it off.
        var lower = successes == 0 ? 0 : Math.Max(0, centre - halfWidth);
        var upper = successes == trials ? 1 : Math.Min(1, centre + halfWidth);
        return new ProportionInterval(successes, trials, lower, upper);
    }

    /// <summary>The exact two-sided McNemar test from the discordant counts.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative count.</exception>
    public static McNemarResult McNemarExact(long onlyACorrect, long onlyBCorrect)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(onlyACorrect);
        ArgumentOutOfRangeException.ThrowIfNegative(onlyBCorrect);
        var n = onlyACorrect + onlyBCorrect;
        if (n == 0) return new McNemarResult(0, 0, 1);
        var k = Math.Min(onlyACorrect, onlyBCorrect);
        // log P[X ≤ k] = log Σ_{i ≤ k} C(n, i) − n·log 2, with the sum taken relative to its largest
        // term, C(n, k) (the terms grow with i up to n/2, and k ≤ n/2).
        var logLargest = LogChoose(n, k);
        var sum = 0.0;
        for (var i = k; i >= 0; i--)
        {
            var relative = Math.Exp(LogChoose(n, i) - logLargest);
            sum += relative;
            // Terms fall at least geometrically below the mode; once one adds nothing, the rest do not either.
            if (relative < 1e-17 * sum) break;
        }
        var logTail = logLargest + Math.Log(sum) - n * Math.Log(2);
        var p = Math.Min(1, 2 * Math.Exp(logTail));
        return new McNemarResult(onlyACorrect, onlyBCorrect, p);
    }

    /// <summary>The exact McNemar test of classifier A against classifier B from whether each got each
    /// example right (the same examples, in the same order).</summary>
    /// <exception cref="ArgumentException">The two lists differ in length.</exception>
    public static McNemarResult McNemarExact(IReadOnlyList<bool> aCorrect, IReadOnlyList<bool> bCorrect)
    {
        ArgumentNullException.ThrowIfNull(aCorrect);
        ArgumentNullException.ThrowIfNull(bCorrect);
        if (aCorrect.Count != bCorrect.Count)
            throw new ArgumentException($"paired predictions need the same examples: {aCorrect.Count} results for A, {bCorrect.Count} for B", nameof(bCorrect));
        long onlyA = 0, onlyB = 0;
        for (var i = 0; i < aCorrect.Count; i++)
        {
            if (aCorrect[i] && !bCorrect[i]) onlyA++;
            else if (bCorrect[i] && !aCorrect[i]) onlyB++;
        }
        return McNemarExact(onlyA, onlyB);
    }

    /// <summary>log C(n, k) through log-gamma.</summary>
    static double LogChoose(long n, long k) => LogFactorial(n) - LogFactorial(k) - LogFactorial(n - k);

    /// <summary>log(m!) = log Γ(m + 1). Exact sums for small m (where Stirling's series is least accurate),
    /// the Stirling series with four correction terms beyond.</summary>
    static double LogFactorial(long m)
    {
        if (m < SmallLogFactorials.Length) return SmallLogFactorials[m];
        double x = m + 1;
        // log Γ(x) = (x − ½)·log x − x + ½·log 2π + 1/12x − 1/360x³ + 1/1260x⁵ − 1/1680x⁷; at x ≥ 257 the
        // next term is below 1e-20, far under double precision of the result.
        var inverse = 1 / x;
        var inverse2 = inverse * inverse;
        var series = inverse * (1.0 / 12 - inverse2 * (1.0 / 360 - inverse2 * (1.0 / 1260 - inverse2 / 1680)));
        return (x - 0.5) * Math.Log(x) - x + 0.5 * Math.Log(2 * Math.PI) + series;
    }

    static readonly double[] SmallLogFactorials = BuildSmallLogFactorials(256);

    static double[] BuildSmallLogFactorials(int count)
    {
        var table = new double[count];
        for (var i = 1; i < count; i++) table[i] = table[i - 1] + Math.Log(i);
        return table;
    }
}
