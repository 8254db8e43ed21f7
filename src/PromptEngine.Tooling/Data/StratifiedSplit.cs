namespace PromptEngine.Data;

/// <summary>
/// The seeded, stratified train / validation / test split every prepared data set uses (IMDB, SpamAssassin).
/// <para>Each class is shuffled on its own (<see cref="SplitMix64"/> Fisher–Yates, classes in index order),
/// its first rows go to validation then test in proportion to the class's share of the source (rounded to
/// nearest, ties to even; the last class takes what is left so the totals are exact), the rest to train;
/// each split is then shuffled so its classes interleave. The same seed and labels give the same rows on
/// every runtime.</para>
/// </summary>
internal static class StratifiedSplit
{
    /// <summary>Row indices of each split.</summary>
    /// <param name="labels">The class index of each source row, in 0..<paramref name="classNames"/>.Count-1.</param>
    /// <param name="classNames">Class names, for messages only.</param>
    /// <param name="seed">Shuffle seed.</param>
    /// <param name="validation">Rows in the validation split.</param>
    /// <param name="test">Rows in the test split.</param>
    /// <exception cref="ArgumentOutOfRangeException">A negative size, sizes above the rows available, or a
    /// class too small for its share.</exception>
    public static (int[] Train, int[] Validation, int[] Test) Split(IReadOnlyList<int> labels, IReadOnlyList<string> classNames, int seed, int validation, int test)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(validation);
        ArgumentOutOfRangeException.ThrowIfNegative(test);
        var total = labels.Count;
        if ((long)validation + test > total)
            throw new ArgumentOutOfRangeException(nameof(validation), $"validation ({validation}) + test ({test}) exceed the {total} rows available");

        var rng = new SplitMix64(unchecked((ulong)seed));
        var byClass = classNames.Select(_ => new List<int>()).ToArray();
        for (var i = 0; i < labels.Count; i++) byClass[labels[i]].Add(i);
        var train = new List<int>();
        var validationRows = new List<int>();
        var testRows = new List<int>();
        var validationTaken = 0;
        var testTaken = 0;
        for (var label = 0; label < byClass.Length; label++)
        {
            var rows = byClass[label];
            rng.Shuffle(rows);
            var last = label == byClass.Length - 1;
            var v = last ? validation - validationTaken : (int)Math.Round((double)validation * rows.Count / Math.Max(total, 1), MidpointRounding.ToEven);
            var t = last ? test - testTaken : (int)Math.Round((double)test * rows.Count / Math.Max(total, 1), MidpointRounding.ToEven);
            if (v + t > rows.Count)
                throw new ArgumentOutOfRangeException(nameof(validation), $"the {classNames[label]} class has {rows.Count} rows, fewer than its {v} validation + {t} test");
            validationRows.AddRange(rows.Take(v));
            testRows.AddRange(rows.Skip(v).Take(t));
            train.AddRange(rows.Skip(v + t));
            validationTaken += v;
            testTaken += t;
        }
        rng.Shuffle(train);
        rng.Shuffle(validationRows);
        rng.Shuffle(testRows);
        return (train.ToArray(), validationRows.ToArray(), testRows.ToArray());
    }
}
