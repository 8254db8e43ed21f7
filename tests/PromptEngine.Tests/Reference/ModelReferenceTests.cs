using PromptEngine.Models;

namespace PromptEngine.Tests.Reference;

/// <summary>The whole-model reference on tiny random models: its hand-written dPrompt against central
/// finite differences of its own loss, and its forward against properties that follow from the model
/// definitions alone (causality, padding, RoPE's relativity, GQA = MHA with repeated kv heads).</summary>
public class ModelReferenceTests
{
    public enum Tiny { LlamaGqa, LlamaGqaBias, Gpt2 }

    static readonly Dictionary<Tiny, ModelReference> Models = new();

    static ModelReference Model(Tiny kind)
    {
        lock (Models)
        {
            if (Models.TryGetValue(kind, out var model)) return model;
            var config = kind switch
            {
                // Untied head without bias, tied head with bias: both head paths are covered.
                Tiny.LlamaGqa => ModelReferenceTinyModels.LlamaConfig(qkvBias: false, tied: false),
                Tiny.LlamaGqaBias => ModelReferenceTinyModels.LlamaConfig(qkvBias: true, tied: true),
                _ => ModelReferenceTinyModels.Gpt2Config(),
            };
            return Models[kind] = ModelReferenceTinyModels.LoadAndDelete(ModelReferenceTinyModels.WriteRandom(config, seed: (int)kind + 1));
        }
    }

    /// <summary>One loss problem: the batch layout, where the prompt rows sit, and what is predicted.</summary>
    public sealed record Scenario(string Name, int B, int T, int PromptTableRows, int[] SourceMap, int[] Targets,
        int[]? KeyMask = null, int[]? PositionIds = null, int[]? Verbalizer = null, int[]? UnusedPromptRows = null)
    {
        public override string ToString() => Name;
    }

    /// <summary>Next-token targets: position i predicts the token at i + 1 when that is a real token.</summary>
    static int[] NextTokenTargets(int[] sourceMap, int T, int[]? keyMask = null)
    {
        var targets = new int[sourceMap.Length];
        for (int i = 0; i < sourceMap.Length; i++)
        {
            bool hasNext = i % T < T - 1 && sourceMap[i + 1] >= 0 && (keyMask is null || (keyMask[i] == 1 && keyMask[i + 1] == 1));
            targets[i] = hasNext ? sourceMap[i + 1] : -1;
        }
        return targets;
    }

    static Scenario Make(string name, int B, int T, int P, int[] map, int[]? keyMask = null, int[]? positionIds = null, int[]? unused = null) =>
        new(name, B, T, P, map, NextTokenTargets(map, T, keyMask), keyMask, positionIds, UnusedPromptRows: unused);

    public static IEnumerable<Scenario> Scenarios()
    {
        yield return Make("prefix", 1, 9, 3, [-1, -2, -3, 5, 9, 2, 30, 14, 8]);
        yield return Make("suffix", 1, 10, 3, [5, 9, 2, 30, 14, -1, -2, -3, 8, 21]);
        yield return Make("interleaved", 1, 10, 3, [4, -1, 7, 12, -2, 6, 6, -3, 19, 2]);
        // Row 0 uses bank rows 0,1; row 1 uses 2,3 and shares row 0; bank row 4 is unused.
        yield return Make("mixed-task batch", 2, 7, 5, [-1, -2, 3, 8, 13, 21, 5, /**/ -3, -4, -1, 9, 27, 1, 16], unused: [4]);
        yield return Make("right padding", 2, 7, 3, [-1, -2, -3, 8, 13, 21, 5, /**/ -1, -2, -3, 9, 27, 0, 0],
            keyMask: [1, 1, 1, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 1, 0, 0]);
        // HF-style left padding: positions count real tokens only; the first query has no allowed key.
        yield return Make("left padding", 2, 7, 3, [-1, -2, -3, 8, 13, 21, 5, /**/ 0, 0, -1, -2, -3, 9, 27],
            keyMask: [1, 1, 1, 1, 1, 1, 1, /**/ 0, 0, 1, 1, 1, 1, 1],
            positionIds: [0, 1, 2, 3, 4, 5, 6, /**/ 0, 0, 0, 1, 2, 3, 4]);
        int[] verbalizerMap = [-1, -2, -3, 8, 13, 21, 5, /**/ -1, -2, -3, 9, 27, 4, 16];
        yield return new Scenario("verbalizer", 2, 7, 3, verbalizerMap,
            Targets: [-1, -1, -1, -1, -1, -1, 7, /**/ -1, -1, -1, -1, -1, -1, 11], Verbalizer: [3, 7, 11]);
    }

    static IEnumerable<TestCaseData> GradientCases() =>
        from kind in Enum.GetValues<Tiny>()
        from scenario in Scenarios()
        select new TestCaseData(kind, scenario).SetArgDisplayNames(kind.ToString(), scenario.Name);

    static double[] RandomPrompt(int rows, int c, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rows * c).Select(_ => 2 * rng.NextDouble() - 1).ToArray();
    }

    // Central differences at h = 1e-5 in double: truncation ~h²·|L'''| ≈ 1e-10 and rounding ~ε·|L|/h ≈ 1e-11,
    // so a correct backward agrees to ~1e-9 of the gradient's scale; 1e-6 leaves margin while any wrong
    // term (a missing residual, a wrong transpose, a lost GQA sum) is off by far more than that.
    const double FdStep = 1e-5, FdRelativeTolerance = 1e-6;

    [TestCaseSource(nameof(GradientCases))]
    public void PromptGradientMatchesFiniteDifferences(Tiny kind, Scenario s)
    {
        var model = Model(kind);
        var prompt = RandomPrompt(s.PromptTableRows, model.Config.HiddenSize, seed: 7);
        double Loss(double[] p) => model.LossAndPromptGradient(s.SourceMap, p, s.Targets, s.B, s.T, s.KeyMask, s.PositionIds, s.Verbalizer).Loss;
        var (loss, analytic) = model.LossAndPromptGradient(s.SourceMap, prompt, s.Targets, s.B, s.T, s.KeyMask, s.PositionIds, s.Verbalizer);

        var numeric = new double[prompt.Length];
        var shifted = (double[])prompt.Clone();
        for (int i = 0; i < prompt.Length; i++)
        {
            shifted[i] = prompt[i] + FdStep;
            double plus = Loss(shifted);
            shifted[i] = prompt[i] - FdStep;
            double minus = Loss(shifted);
            shifted[i] = prompt[i];
            numeric[i] = (plus - minus) / (2 * FdStep);
        }

        double scale = analytic.Max(Math.Abs);
        double maxError = analytic.Zip(numeric, (a, n) => Math.Abs(a - n)).Max();
        TestContext.Out.WriteLine($"{kind} {s.Name}: loss {loss:F6}, max|dPrompt| {scale:E3}, max|fd − analytic| {maxError:E3}, relative {maxError / scale:E3}");
        Assert.That(double.IsFinite(loss) && loss > 0, $"loss {loss}");
        Assert.That(scale, Is.GreaterThan(1e-3), "the gradient is (nearly) zero, so the check would be vacuous");
        var bad = Enumerable.Range(0, analytic.Length).Where(i => Math.Abs(analytic[i] - numeric[i]) > FdRelativeTolerance * scale).ToList();
        Assert.That(bad, Is.Empty, () => "first mismatches: " + string.Join("; ", bad.Take(5).Select(i => $"[{i}] analytic {analytic[i]:E6} fd {numeric[i]:E6}")));

        int c = model.Config.HiddenSize;
        foreach (var row in s.UnusedPromptRows ?? [])
            Assert.That(analytic.Skip(row * c).Take(c), Is.All.EqualTo(0.0), $"unused prompt row {row} got gradient");
    }

    [TestCase(Tiny.LlamaGqa)]
    [TestCase(Tiny.Gpt2)]
    public void LossIsTheMeanCrossEntropyOfTheLogits(Tiny kind)
    {
        var model = Model(kind);
        int V = model.Config.VocabSize;
        foreach (var s in Scenarios())
        {
            var prompt = RandomPrompt(s.PromptTableRows, model.Config.HiddenSize, seed: 3);
            var logits = model.Logits(s.SourceMap, prompt, s.B, s.T, s.KeyMask, s.PositionIds);
            var classes = s.Verbalizer ?? Enumerable.Range(0, V).ToArray();
            var perPosition = new List<double>();
            for (int i = 0; i < s.Targets.Length; i++)
            {
                if (s.Targets[i] < 0) continue;
                // Plain softmax probability (no log-sum-exp shift), a different route to the same number.
                double z = classes.Sum(v => Math.Exp(logits[i * V + v]));
                perPosition.Add(-Math.Log(Math.Exp(logits[i * V + s.Targets[i]]) / z));
            }
            var loss = model.LossAndPromptGradient(s.SourceMap, prompt, s.Targets, s.B, s.T, s.KeyMask, s.PositionIds, s.Verbalizer).Loss;
            Assert.That(loss, Is.EqualTo(perPosition.Average()).Within(1e-12).Percent, s.Name);
        }
    }

    [TestCase(Tiny.LlamaGqa)]
    [TestCase(Tiny.LlamaGqaBias)]
    [TestCase(Tiny.Gpt2)]
    public void LogitsDoNotDependOnLaterPositions(Tiny kind)
    {
        var model = Model(kind);
        int V = model.Config.VocabSize;
        var prompt = RandomPrompt(2, model.Config.HiddenSize, seed: 5);
        int[] shortMap = [-1, 4, 17, -2, 9];
        int[] longMap = [.. shortMap, 30, 2, 11];
        var shortLogits = model.Logits(shortMap, prompt, 1, shortMap.Length);
        var longLogits = model.Logits(longMap, prompt, 1, longMap.Length);
        AssertClose(longLogits[..shortLogits.Length], shortLogits, 1e-12, "prefix logits changed when tokens were appended");
        // And the appended positions do see the past: changing an early token moves the last logits.
        int[] changed = [.. longMap];
        changed[1] = 5;
        var changedLogits = model.Logits(changed, prompt, 1, changed.Length);
        Assert.That(MaxDifference(changedLogits[^V..], longLogits[^V..]), Is.GreaterThan(1e-3));
    }

    [TestCase(Tiny.LlamaGqa)]
    [TestCase(Tiny.LlamaGqaBias)]
    [TestCase(Tiny.Gpt2)]
    public void BatchRowsAndPaddingAreIndependent(Tiny kind)
    {
        var model = Model(kind);
        int V = model.Config.VocabSize;
        var prompt = RandomPrompt(3, model.Config.HiddenSize, seed: 9);
        int[] rowA = [-1, -2, 8, 13, 21, 5];
        int[] rowB = [-3, 9, 27, 14];
        var aliceAlone = model.Logits(rowA, prompt, 1, 6);
        var bobAlone = model.Logits(rowB, prompt, 1, 4);

        // Right padding: Bob padded with junk tokens that are masked out.
        int[] mask = [1, 1, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 0, 0];
        var right = model.Logits([.. rowA, .. rowB, 33, 1], prompt, 2, 6, mask);
        var rightOtherJunk = model.Logits([.. rowA, .. rowB, -2, 7], prompt, 2, 6, mask);
        AssertClose(right[..(6 * V)], aliceAlone, 1e-12, "row 0 changed by batching");
        AssertClose(right[(6 * V)..(10 * V)], bobAlone, 1e-12, "row 1 changed by right padding");
        AssertClose(rightOtherJunk[..(10 * V)], right[..(10 * V)], 0, "the padding's content leaked");

        // Left padding with HF-style positions: the real tokens must not attend the padding keys.
        int[] leftMask = [1, 1, 1, 1, 1, 1, /**/ 0, 0, 1, 1, 1, 1];
        int[] positions = [0, 1, 2, 3, 4, 5, /**/ 0, 0, 0, 1, 2, 3];
        var left = model.Logits([.. rowA, 33, 1, .. rowB], prompt, 2, 6, leftMask, positions);
        var leftOtherJunk = model.Logits([.. rowA, 2, -1, .. rowB], prompt, 2, 6, leftMask, positions);
        AssertClose(left[(8 * V)..], bobAlone, 1e-12, "row 1 changed by left padding");
        AssertClose(leftOtherJunk[(8 * V)..], left[(8 * V)..], 0, "the left padding's content leaked");
        Assert.That(left.All(double.IsFinite), "a query with every key masked must give finite (zero-attention) output");
        // Unmasked, the same junk does change Bob's logits: the mask is what removes it.
        var unmasked = model.Logits([.. rowA, 33, 1, .. rowB], prompt, 2, 6, null, positions);
        Assert.That(MaxDifference(unmasked[(8 * V)..], bobAlone), Is.GreaterThan(1e-3));
    }

    [TestCase(Tiny.LlamaGqa)]
    [TestCase(Tiny.LlamaGqaBias)]
    [TestCase(Tiny.Gpt2)]
    public void LeftAndRightPaddingGiveTheSameLossAndGradient(Tiny kind)
    {
        // The two padding scenarios hold the same real content in row 1, padded on opposite sides.
        var model = Model(kind);
        var right = Scenarios().Single(s => s.Name == "right padding");
        var left = Scenarios().Single(s => s.Name == "left padding");
        var prompt = RandomPrompt(3, model.Config.HiddenSize, seed: 19);
        var (rightLoss, rightGrad) = model.LossAndPromptGradient(right.SourceMap, prompt, right.Targets, 2, 7, right.KeyMask, right.PositionIds);
        var (leftLoss, leftGrad) = model.LossAndPromptGradient(left.SourceMap, prompt, left.Targets, 2, 7, left.KeyMask, left.PositionIds);
        Assert.That(leftLoss, Is.EqualTo(rightLoss).Within(1e-12));
        AssertClose(leftGrad, rightGrad, 1e-11, "left-padded gradient differs from right-padded");
    }

    [TestCase(Tiny.LlamaGqa)]
    [TestCase(Tiny.LlamaGqaBias)]
    public void RopeDependsOnlyOnRelativePositions(Tiny kind)
    {
        // Nothing else in Llama sees absolute positions, so shifting them all is exact invariance;
        // it holds only if q and k rotate consistently (same pairs, same frequencies, same sign).
        var model = Model(kind);
        var prompt = RandomPrompt(2, model.Config.HiddenSize, seed: 11);
        int[] map = [-1, 4, 17, -2, 9, 30, 2, 11, 3, 3];
        var baseline = model.Logits(map, prompt, 1, map.Length);
        var shifted = model.Logits(map, prompt, 1, map.Length, positionIds: Enumerable.Range(13, map.Length).ToArray());
        AssertClose(shifted, baseline, 1e-10, "logits changed under a uniform position shift");
        var explicitDefault = model.Logits(map, prompt, 1, map.Length, positionIds: Enumerable.Range(0, map.Length).ToArray());
        AssertClose(explicitDefault, baseline, 0, "explicit positions 0..T−1 differ from the default");
        // Spreading positions apart is not a shift and must change the logits (RoPE is in effect).
        var spread = model.Logits(map, prompt, 1, map.Length, positionIds: Enumerable.Range(0, map.Length).Select(t => 3 * t).ToArray());
        Assert.That(MaxDifference(spread, baseline), Is.GreaterThan(1e-3));
    }

    [Test]
    public void Gpt2AddsLearnedPositionsToPromptPositionsToo()
    {
        var model = Model(Tiny.Gpt2);
        int V = model.Config.VocabSize;
        var prompt = RandomPrompt(1, model.Config.HiddenSize, seed: 13);
        int[] map = [-1, 4, 17];
        var baseline = model.Logits(map, prompt, 1, 3);
        AssertClose(model.Logits(map, prompt, 1, 3, positionIds: [0, 1, 2]), baseline, 0, "explicit positions differ from the default");
        // Moving only the prompt position changes even the prompt's own logits: wpe is added there.
        var moved = model.Logits(map, prompt, 1, 3, positionIds: [5, 1, 2]);
        Assert.That(MaxDifference(moved[..V], baseline[..V]), Is.GreaterThan(1e-3));
        Assert.Throws<ArgumentOutOfRangeException>(() => model.Logits(map, prompt, 1, 3, positionIds: [0, 1, 32]));
    }

    [TestCase(false)]
    [TestCase(true)]
    public void GroupedQueryAttentionEqualsMultiHeadWithRepeatedKvHeads(bool qkvBias)
    {
        // The same weights written twice: as GQA (KV = 2 of H = 4) and as MHA (KV = H) with kv head
        // h/2 copied into heads h. The reference must compute identical logits.
        const int C = 16, H = 4, KV = 2, HS = C / H;
        var gqaFolder = ModelReferenceTinyModels.WriteRandom(ModelReferenceTinyModels.LlamaConfig(heads: H, kvHeads: KV, qkvBias: qkvBias), seed: 21);
        string mhaFolder;
        using (var gqa = ModelFolder.Open(gqaFolder))
        {
            mhaFolder = ModelReferenceTinyModels.Write(ModelReferenceTinyModels.LlamaConfig(heads: H, kvHeads: H, qkvBias: qkvBias), w =>
            {
                var source = gqa.Weights.Get(w.Role, w.Layer);
                var values = gqa.Tensors.ReadF32(source.Name);
                if (w.Role is not (WeightRole.Key or WeightRole.Value or WeightRole.KeyBias or WeightRole.ValueBias)) return values;
                int rowLength = w.Shape.Length == 2 ? C : 1;
                var repeated = new float[H * HS * rowLength];
                for (int h = 0; h < H; h++)
                    Array.Copy(values, (h / (H / KV)) * HS * rowLength, repeated, h * HS * rowLength, HS * rowLength);
                return repeated;
            });
        }
        var gqaModel = ModelReferenceTinyModels.LoadAndDelete(gqaFolder);
        var mhaModel = ModelReferenceTinyModels.LoadAndDelete(mhaFolder);
        Assert.That((gqaModel.Config.NumKvHeads, mhaModel.Config.NumKvHeads), Is.EqualTo((KV, H)));

        var prompt = RandomPrompt(2, C, seed: 17);
        int[] map = [-1, -2, 8, 13, 21, 5, /**/ 3, -2, 9, 27, 14, 0];
        int[] mask = [1, 1, 1, 1, 1, 1, /**/ 1, 1, 1, 1, 1, 0];
        AssertClose(mhaModel.Logits(map, prompt, 2, 6, mask), gqaModel.Logits(map, prompt, 2, 6, mask), 1e-12, "GQA differs from repeated-kv MHA");
        var targets = NextTokenTargets(map, 6, mask);
        var (gqaLoss, gqaGrad) = gqaModel.LossAndPromptGradient(map, prompt, targets, 2, 6, mask);
        var (mhaLoss, mhaGrad) = mhaModel.LossAndPromptGradient(map, prompt, targets, 2, 6, mask);
        Assert.That(gqaLoss, Is.EqualTo(mhaLoss).Within(1e-12));
        AssertClose(gqaGrad, mhaGrad, 1e-11, "GQA's summed kv gradients differ from MHA's");
    }

    [Test]
    public void BadInputsAreRejectedWithTheFieldNamed()
    {
        var model = Model(Tiny.LlamaGqa);
        var prompt = RandomPrompt(2, model.Config.HiddenSize, seed: 1);
        Assert.That(Assert.Throws<ArgumentException>(() => model.Logits([1, 2, 3], prompt, 1, 4))!.ParamName, Is.EqualTo("sourceMap"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => model.Logits([1, -3], prompt, 1, 2))!.ParamName, Is.EqualTo("sourceMap"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => model.Logits([1, 37], prompt, 1, 2))!.ParamName, Is.EqualTo("sourceMap"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() => model.Logits([1, 2], prompt, 1, 2, keyMask: [1, 2]))!.ParamName, Is.EqualTo("keyMask"));
        Assert.That(Assert.Throws<ArgumentOutOfRangeException>(() =>
            model.LossAndPromptGradient([1, 2], prompt, [3, -1], 1, 2, verbalizer: [4, 5]))!.ParamName, Is.EqualTo("targets"));
        Assert.That(Assert.Throws<ArgumentException>(() =>
            model.LossAndPromptGradient([1, 2], prompt, [-1, -1], 1, 2))!.ParamName, Is.EqualTo("targets"));
    }

    static double MaxDifference(double[] a, double[] b) => a.Zip(b, (x, y) => Math.Abs(x - y)).Max();

    /// <summary>|actual − expected| ≤ tolerance·max(1, |expected|) elementwise; prints the first mismatches.</summary>
    static void AssertClose(double[] actual, double[] expected, double tolerance, string what)
    {
        Assert.That(actual, Has.Length.EqualTo(expected.Length), what);
        var bad = Enumerable.Range(0, actual.Length).Where(i => !(Math.Abs(actual[i] - expected[i]) <= tolerance * Math.Max(1, Math.Abs(expected[i])))).ToList();
        Assert.That(bad, Is.Empty, () => $"{what}: max error {MaxDifference(actual, expected):E3}; first: " +
            string.Join("; ", bad.Take(5).Select(i => $"[{i}] {actual[i]:R} vs {expected[i]:R}")));
    }
}
