using PromptEngine.Training.Metrics;

namespace PromptEngine.Tests.Training;

public class ClassificationMetricsTests
{
    static readonly string[] Labels = ["pos", "neg", "neu"];

    /// <summary>18 pairs whose confusion matrix (rows gold, columns predicted) is
    /// pos [5 2 1], neg [1 4 0], neu [0 3 2].</summary>
    static IEnumerable<(string, string)> HandExample()
    {
        foreach (var (gold, predicted, count) in new[]
        {
            ("pos", "pos", 5), ("pos", "neg", 2), ("pos", "neu", 1),
            ("neg", "pos", 1), ("neg", "neg", 4),
            ("neu", "neg", 3), ("neu", "neu", 2),
        })
            for (var i = 0; i < count; i++) yield return (gold, predicted);
    }

    [Test]
    public void HandComputedThreeClassExample()
    {
        var m = ClassificationMetrics.Compute(Labels, HandExample());
        Assert.That(m.Confusion, Is.EqualTo(new long[,] { { 5, 2, 1 }, { 1, 4, 0 }, { 0, 3, 2 } }));
        Assert.That((m.Count, m.Correct), Is.EqualTo((18L, 11L)));
        Assert.That(m.Accuracy, Is.EqualTo(11.0 / 18).Within(1e-15));
        // Precision TP/(column sum), recall TP/(row sum), F1 = 2TP/(2TP + FP + FN).
        double[][] expected =
        [
            [5.0 / 6, 5.0 / 8, 10.0 / 14, 8, 6],
            [4.0 / 9, 4.0 / 5, 8.0 / 14, 5, 9],
            [2.0 / 3, 2.0 / 5, 4.0 / 8, 5, 3],
        ];
        for (var c = 0; c < 3; c++)
        {
            var k = m.PerClass[c];
            Assert.That(k.Label, Is.EqualTo(Labels[c]));
            Assert.That(new[] { k.Precision, k.Recall, k.F1, k.Support, k.Predicted }, Is.EqualTo(expected[c]).Within(1e-15), Labels[c]);
        }
        Assert.That(m.MacroF1, Is.EqualTo(25.0 / 42).Within(1e-15));
    }

    [Test]
    public void AClassNeverPredictedOrAbsentScoresZeroNotNaN()
    {
        var m = ClassificationMetrics.Compute(["a", "b", "c"], [("a", "a"), ("b", "a"), ("a", "a")]);
        Assert.That(m.PerClass[1], Is.EqualTo(new ClassMetrics("b", 0, 0, 0, 1, 0)));
        Assert.That(m.PerClass[2], Is.EqualTo(new ClassMetrics("c", 0, 0, 0, 0, 0)));
        Assert.That(m.PerClass[0].Precision, Is.EqualTo(2.0 / 3));
        Assert.That(m.PerClass[0].Recall, Is.EqualTo(1.0));
        var empty = ClassificationMetrics.Compute(["a", "b"], []);
        Assert.That((empty.Accuracy, empty.MacroF1), Is.EqualTo((0.0, 0.0)));
    }

    [Test]
    public void IndicesAndLabelsGiveTheSameMetrics()
    {
        var pairs = HandExample().ToArray();
        var gold = pairs.Select(p => Array.IndexOf(Labels, p.Item1)).ToArray();
        var predicted = pairs.Select(p => Array.IndexOf(Labels, p.Item2)).ToArray();
        var m = ClassificationMetrics.FromIndices(Labels, gold, predicted);
        Assert.That(m.Confusion, Is.EqualTo(ClassificationMetrics.Compute(Labels, pairs).Confusion));
        Assert.Throws<ArgumentException>(() => ClassificationMetrics.FromIndices(Labels, [0, 1], [0]));
        Assert.Throws<ArgumentException>(() => ClassificationMetrics.FromIndices(Labels, [3], [0]));
    }

    [Test]
    public void UnknownOrRepeatedLabelsAreNamed()
    {
        var e = Assert.Throws<ArgumentException>(() => ClassificationMetrics.Compute(Labels, [("pos", "pos"), ("pos", "meh")]))!;
        Assert.That(e.Message, Does.Contain("pair 1: predicted label \"meh\""));
        e = Assert.Throws<ArgumentException>(() => ClassificationMetrics.Compute(Labels, [("bad", "pos")]))!;
        Assert.That(e.Message, Does.Contain("pair 0: gold label \"bad\""));
        Assert.Throws<ArgumentException>(() => ClassificationMetrics.Compute(["a", "a"], []));
    }

    [Test]
    public void PredictIsTheArgmaxOverVerbalizerColumnsLowestOnTies()
    {
        float[] logits = [1, 2, 0, 3, 3, 3, -1, -5, -9, 0.5f, 0.25f, 0.75f];
        Assert.That(ClassificationMetrics.Predict(logits, 3), Is.EqualTo(new[] { 1, 0, 0, 2 }));
        Assert.That(ClassificationMetrics.Predict(logits, 2), Is.EqualTo(new[] { 1, 1, 0, 0, 1, 1 }));
        Assert.That(Assert.Throws<ArgumentException>(() => ClassificationMetrics.Predict([1, float.NaN, 0, 0], 2))!.Message, Does.Contain("row 0, column 1 is NaN"));
        Assert.Throws<ArgumentException>(() => ClassificationMetrics.Predict([1, 2, 3], 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => ClassificationMetrics.Predict([1, 2], 0));
    }

    [Test]
    public void TheTableShowsEveryNumberAndTheMatrixReadsBack()
    {
        var table = ClassificationMetrics.Compute(Labels, HandExample()).ToTable();
        var lines = table.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => l.TrimEnd('\r')).ToArray();
        Assert.That(lines[0], Is.EqualTo("accuracy 0.6111 (11/18)"));
        Assert.That(lines[1].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "class", "precision", "recall", "f1", "support" }));
        Assert.That(lines[2].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "pos", "0.8333", "0.6250", "0.7143", "8" }));
        Assert.That(lines[3].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "neg", "0.4444", "0.8000", "0.5714", "5" }));
        Assert.That(lines[4].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "neu", "0.6667", "0.4000", "0.5000", "5" }));
        Assert.That(lines[5].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "macro", "avg", "0.6481", "0.6083", "0.5952", "18" }));
        Assert.That(lines[6].Split(' ', StringSplitOptions.RemoveEmptyEntries), Is.EqualTo(new[] { "gold", "\\", "predicted", "pos", "neg", "neu" }));
        Assert.That(lines[7..].Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)),
            Is.EqualTo(new[] { new[] { "pos", "5", "2", "1" }, ["neg", "1", "4", "0"], ["neu", "0", "3", "2"] }));
        // Columns line up: every matrix line is as long as its header.
        Assert.That(lines[7..].Select(l => l.Length), Is.All.EqualTo(lines[6].Length));
    }
}
