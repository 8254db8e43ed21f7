using System.Globalization;
using System.Text;

namespace PromptEngine.Training.Metrics;

/// <summary>Precision, recall and F1 of one class.</summary>
/// <param name="Label">The class.</param>
/// <param name="Precision">Of the examples predicted as this class, the share that are; 0 when none are predicted.</param>
/// <param name="Recall">Of the examples of this class, the share predicted as it; 0 when there are none.</param>
/// <param name="F1">Harmonic mean of precision and recall; 0 when both are 0.</param>
/// <param name="Support">Examples whose gold label is this class.</param>
/// <param name="Predicted">Examples predicted as this class.</param>
public sealed record ClassMetrics(string Label, double Precision, double Recall, double F1, long Support, long Predicted);

/// <summary>
/// Accuracy, per-class precision / recall / F1 and the confusion matrix of a classifier, from
/// (gold, predicted) label pairs. An undefined ratio (a class never predicted, or never present)
/// counts as 0, as scikit-learn's <c>zero_division=0</c> does, so a classifier that never predicts a
/// class is not flattered.
/// </summary>
public sealed class ClassificationMetrics
{
    /// <summary>The classes, in row/column order of <see cref="Confusion"/>.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>(K, K) counts: <c>Confusion[gold, predicted]</c>.</summary>
    public long[,] Confusion { get; }

    /// <summary>Examples counted.</summary>
    public long Count { get; }

    /// <summary>Examples predicted correctly.</summary>
    public long Correct { get; }

    /// <summary>Correct / Count (0 for no examples).</summary>
    public double Accuracy => Count == 0 ? 0 : (double)Correct / Count;

    /// <summary>Per-class precision, recall, F1, in label order.</summary>
    public IReadOnlyList<ClassMetrics> PerClass { get; }

    /// <summary>Unweighted mean of the per-class F1.</summary>
    public double MacroF1 => PerClass.Average(c => c.F1);

    ClassificationMetrics(IReadOnlyList<string> labels, long[,] confusion)
    {
        Labels = labels;
        Confusion = confusion;
        var k = labels.Count;
        var perClass = new ClassMetrics[k];
        long count = 0, correct = 0;
        for (var c = 0; c < k; c++)
        {
            long truePositive = confusion[c, c], support = 0, predicted = 0;
            for (var j = 0; j < k; j++)
            {
                support += confusion[c, j];
                predicted += confusion[j, c];
            }
            count += support;
            correct += truePositive;
            var precision = predicted == 0 ? 0 : (double)truePositive / predicted;
            var recall = support == 0 ? 0 : (double)truePositive / support;
            var f1 = precision + recall == 0 ? 0 : 2 * precision * recall / (precision + recall);
            perClass[c] = new ClassMetrics(labels[c], precision, recall, f1, support, predicted);
        }
        Count = count;
        Correct = correct;
        PerClass = perClass;
    }

    /// <summary>Metrics of (gold, predicted) label pairs.</summary>
    /// <param name="labels">Every class, in the order rows and columns are reported; pairs may use only these.</param>
    /// <param name="pairs">(gold, predicted) per example.</param>
    /// <exception cref="ArgumentException">Fewer than one label, a repeated label, or a pair with a label outside <paramref name="labels"/>.</exception>
    public static ClassificationMetrics Compute(IReadOnlyList<string> labels, IEnumerable<(string Gold, string Predicted)> pairs)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(pairs);
        if (labels.Count == 0) throw new ArgumentException("metrics: no labels", nameof(labels));
        var index = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < labels.Count; i++)
            if (!index.TryAdd(labels[i], i)) throw new ArgumentException($"metrics: label \"{labels[i]}\" is given twice", nameof(labels));
        var confusion = new long[labels.Count, labels.Count];
        var n = 0;
        foreach (var (gold, predicted) in pairs)
        {
            if (!index.TryGetValue(gold, out var g)) throw new ArgumentException($"metrics: pair {n}: gold label \"{gold}\" is not one of [{string.Join(", ", labels)}]", nameof(pairs));
            if (!index.TryGetValue(predicted, out var p)) throw new ArgumentException($"metrics: pair {n}: predicted label \"{predicted}\" is not one of [{string.Join(", ", labels)}]", nameof(pairs));
            confusion[g, p]++;
            n++;
        }
        return new ClassificationMetrics(labels.ToArray(), confusion);
    }

    /// <summary>Metrics of (gold, predicted) class indices into <paramref name="labels"/>.</summary>
    /// <exception cref="ArgumentException">Lengths differ, or an index is outside the labels.</exception>
    public static ClassificationMetrics FromIndices(IReadOnlyList<string> labels, IReadOnlyList<int> gold, IReadOnlyList<int> predicted)
    {
        ArgumentNullException.ThrowIfNull(labels);
        ArgumentNullException.ThrowIfNull(gold);
        ArgumentNullException.ThrowIfNull(predicted);
        if (gold.Count != predicted.Count) throw new ArgumentException($"metrics: {gold.Count} gold labels but {predicted.Count} predictions");
        for (var i = 0; i < gold.Count; i++)
            if ((uint)gold[i] >= (uint)labels.Count || (uint)predicted[i] >= (uint)labels.Count)
                throw new ArgumentException($"metrics: example {i}: class index {gold[i]} or {predicted[i]} is outside the {labels.Count} labels");
        return Compute(labels, gold.Select((g, i) => (labels[g], labels[predicted[i]])));
    }

    /// <summary>Predicted class of each scored row of verbalizer logits: the argmax over the R columns,
    /// the lowest column on ties.</summary>
    /// <param name="logits">(S, R) row-major, as <see cref="Engine.TransformerEngine.Logits"/> returns for a verbalizer batch.</param>
    /// <param name="classes">R.</param>
    /// <exception cref="ArgumentException">The length is not a multiple of R, or a row holds a NaN.</exception>
    public static int[] Predict(ReadOnlySpan<float> logits, int classes)
    {
        if (classes <= 0) throw new ArgumentOutOfRangeException(nameof(classes), classes, "metrics: the number of classes must be positive");
        if (logits.Length % classes != 0) throw new ArgumentException($"metrics: {logits.Length} logits are not rows of {classes} classes", nameof(logits));
        var rows = logits.Length / classes;
        var predictions = new int[rows];
        for (var s = 0; s < rows; s++)
        {
            var row = logits.Slice(s * classes, classes);
            var best = 0;
            for (var r = 0; r < classes; r++)
            {
                if (float.IsNaN(row[r])) throw new ArgumentException($"metrics: logit row {s}, column {r} is NaN", nameof(logits));
                if (row[r] > row[best]) best = r;
            }
            predictions[s] = best;
        }
        return predictions;
    }

    /// <summary>The metrics as a fixed-width text table: accuracy, a precision / recall / F1 / support
    /// row per class and the macro average, then the confusion matrix (rows gold, columns predicted).</summary>
    public string ToTable()
    {
        var culture = CultureInfo.InvariantCulture;
        var width = Math.Max("gold \\ predicted".Length, Labels.Max(l => l.Length));
        var text = new StringBuilder();
        text.AppendLine(string.Format(culture, "accuracy {0:F4} ({1}/{2})", Accuracy, Correct, Count));
        text.AppendLine(string.Format(culture, "{0} {1,9} {2,9} {3,9} {4,9}", "class".PadRight(width), "precision", "recall", "f1", "support"));
        foreach (var c in PerClass)
            text.AppendLine(string.Format(culture, "{0} {1,9:F4} {2,9:F4} {3,9:F4} {4,9}", c.Label.PadRight(width), c.Precision, c.Recall, c.F1, c.Support));
        text.AppendLine(string.Format(culture, "{0} {1,9:F4} {2,9:F4} {3,9:F4} {4,9}", "macro avg".PadRight(width),
            PerClass.Average(c => c.Precision), PerClass.Average(c => c.Recall), MacroF1, Count));
        text.AppendLine();
        var cell = Math.Max(width, Math.Max(9, Count.ToString(culture).Length));
        text.Append("gold \\ predicted".PadRight(width));
        foreach (var label in Labels) text.Append(' ').Append(label.PadLeft(cell));
        text.AppendLine();
        for (var g = 0; g < Labels.Count; g++)
        {
            text.Append(Labels[g].PadRight(width));
            for (var p = 0; p < Labels.Count; p++) text.Append(' ').Append(Confusion[g, p].ToString(culture).PadLeft(cell));
            text.AppendLine();
        }
        return text.ToString();
    }
}
