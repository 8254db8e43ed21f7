namespace PromptEngine.Oracle.Tests;

/// <summary>Error measures for engine-vs-TorchSharp comparisons; each prints what it measured, so a passing run
/// still records the margins.</summary>
static class OracleCompare
{
    /// <summary>Asserts |actual − expected| ≤ atol + rtol·|expected| elementwise; on failure lists the first mismatches.
    /// Returns the largest absolute error.</summary>
    public static double Elementwise(string what, IReadOnlyList<float> actual, IReadOnlyList<float> expected, double atol, double rtol)
    {
        Assert.That(actual, Has.Count.EqualTo(expected.Count), $"{what}: element count");
        double maxError = 0, worstRatio = 0, maxReference = 0;
        var mismatches = new List<string>();
        for (var i = 0; i < expected.Count; i++)
        {
            double error = Math.Abs((double)actual[i] - expected[i]), bound = atol + rtol * Math.Abs(expected[i]);
            maxError = Math.Max(maxError, error);
            maxReference = Math.Max(maxReference, Math.Abs(expected[i]));
            worstRatio = Math.Max(worstRatio, error / bound);
            if (!(error <= bound) && mismatches.Count < 5) mismatches.Add($"[{i}] engine {actual[i]:R} torch {expected[i]:R} error {error:E2} > {bound:E2}");
        }
        TestContext.Out.WriteLine($"{what}: max |error| {maxError:E2} (max |ref| {maxReference:E2}), worst error/bound {worstRatio:F3}");
        Assert.That(mismatches, Is.Empty, $"{what}: elements outside {atol:E0} + {rtol:E0}·|ref|:\n  " + string.Join("\n  ", mismatches));
        return maxError;
    }

    /// <summary>Asserts ‖actual − expected‖₂ ≤ tolerance·‖expected‖₂ and that the reference is not trivially zero.
    /// Returns the relative error.</summary>
    public static double NormWise(string what, IReadOnlyList<float> actual, IReadOnlyList<float> expected, double tolerance)
    {
        Assert.That(actual, Has.Count.EqualTo(expected.Count), $"{what}: element count");
        double difference = 0, reference = 0, maxError = 0;
        for (var i = 0; i < expected.Count; i++)
        {
            var error = (double)actual[i] - expected[i];
            difference += error * error;
            reference += (double)expected[i] * expected[i];
            maxError = Math.Max(maxError, Math.Abs(error));
        }
        var relative = Math.Sqrt(difference) / Math.Sqrt(reference);
        TestContext.Out.WriteLine($"{what}: relative error (2-norm) {relative:E2}, max |error| {maxError:E2}, ‖ref‖ {Math.Sqrt(reference):E2}");
        Assert.That(Math.Sqrt(reference), Is.GreaterThan(1e-6), $"{what}: the reference is (nearly) zero; the comparison would prove nothing");
        Assert.That(relative, Is.LessThanOrEqualTo(tolerance), $"{what}: relative error");
        return relative;
    }
}
