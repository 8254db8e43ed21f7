using System.Diagnostics;
using System.Text;
using System.Text.Json;
using PromptEngine.Data;

namespace PromptEngine.Tests.Assets;

public class ImdbPreparerTests
{
    string scratch = "";

    [SetUp]
    public void SetUp() => scratch = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-imdb-{Guid.NewGuid():N}")).FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
    }

    string WriteReviews(IEnumerable<(string Text, int Label)> rows, string name = "reviews.json")
    {
        var path = Path.Combine(scratch, name);
        File.WriteAllText(path, JsonSerializer.Serialize(rows.Select(r => new { t = r.Text, s = r.Label })));
        return path;
    }

    static List<(string Text, string Label)> ReadJsonl(string path) =>
        File.ReadLines(path).Select(line =>
        {
            using var doc = JsonDocument.Parse(line);
            Assert.That(doc.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "text", "label" }));
            return (doc.RootElement.GetProperty("text").GetString()!, doc.RootElement.GetProperty("label").GetString()!);
        }).ToList();

    /// <summary>Review i says "review i", so every output line can be traced to its source row.</summary>
    static IEnumerable<(string, int)> Numbered(int positives, int negatives) =>
        Enumerable.Range(0, positives + negatives).Select(i => ($"review {i}", i < positives ? 1 : 0));

    [Test]
    public void SplitMix64MatchesThePublishedSequence()
    {
        // Vigna's reference output for seed 1234567 (also produced by an independent Python version).
        var rng = new SplitMix64(1234567);
        Assert.That(new[] { rng.Next(), rng.Next(), rng.Next() },
            Is.EqualTo(new[] { 6457827717110365317UL, 3203168211198807973UL, 9817491932198370423UL }));
    }

    [Test]
    public void SameSeedGivesIdenticalFilesAndAnotherSeedAnotherOrder()
    {
        var source = WriteReviews(Numbered(30, 30));
        ImdbPreparer.Prepare(source, Path.Combine(scratch, "a"), seed: 7, validation: 10, test: 10);
        ImdbPreparer.Prepare(source, Path.Combine(scratch, "b"), seed: 7, validation: 10, test: 10);
        ImdbPreparer.Prepare(source, Path.Combine(scratch, "c"), seed: 8, validation: 10, test: 10);
        foreach (var file in new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" })
            Assert.That(File.ReadAllBytes(Path.Combine(scratch, "b", file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(scratch, "a", file))), file);
        Assert.That(File.ReadAllBytes(Path.Combine(scratch, "c", "train.jsonl")), Is.Not.EqualTo(File.ReadAllBytes(Path.Combine(scratch, "a", "train.jsonl"))));
        // Not the source order either.
        Assert.That(ReadJsonl(Path.Combine(scratch, "a", "train.jsonl")).Select(r => r.Text),
            Is.Not.EqualTo(ReadJsonl(Path.Combine(scratch, "a", "train.jsonl")).Select(r => r.Text).OrderBy(t => int.Parse(t[7..]))));
    }

    [Test]
    public void SplitsAreStratifiedDisjointAndCoverEveryRow()
    {
        var source = WriteReviews(Numbered(40, 20));
        var summary = ImdbPreparer.Prepare(source, Path.Combine(scratch, "out"), seed: 3, validation: 6, test: 9);

        // 2:1 positive:negative in the source, so 4+2 validation and 6+3 test.
        Assert.That(summary.Validation, Is.EqualTo(new ImdbSplitCounts(6, 4, 2)));
        Assert.That(summary.Test, Is.EqualTo(new ImdbSplitCounts(9, 6, 3)));
        Assert.That(summary.Train, Is.EqualTo(new ImdbSplitCounts(45, 30, 15)));

        var splits = new[] { "train", "validation", "test" }.ToDictionary(s => s, s => ReadJsonl(Path.Combine(scratch, "out", s + ".jsonl")));
        var all = splits.Values.SelectMany(x => x).ToList();
        Assert.That(all.Select(r => r.Text), Is.EquivalentTo(Enumerable.Range(0, 60).Select(i => $"review {i}")), "each row exactly once");
        foreach (var (text, label) in all)
            Assert.That(label, Is.EqualTo(int.Parse(text[7..]) < 40 ? "positive" : "negative"), text);
        Assert.That(splits["validation"].Count(r => r.Label == "positive"), Is.EqualTo(4));
        Assert.That(splits["test"].Count(r => r.Label == "negative"), Is.EqualTo(3));

        using var split = JsonDocument.Parse(File.ReadAllText(Path.Combine(scratch, "out", "split.json")));
        Assert.That(split.RootElement.GetProperty("seed").GetInt32(), Is.EqualTo(3));
        Assert.That(split.RootElement.GetProperty("rows").GetInt32(), Is.EqualTo(60));
        var test = split.RootElement.GetProperty("splits").GetProperty("test");
        Assert.That((test.GetProperty("count").GetInt32(), test.GetProperty("positive").GetInt32(), test.GetProperty("negative").GetInt32()), Is.EqualTo((9, 6, 3)));
        Assert.That(Directory.GetFiles(Path.Combine(scratch, "out")).Select(Path.GetFileName),
            Is.EquivalentTo(new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" }), "no temp files left");
    }

    [Test]
    public void BalancedSourceGivesBalancedSplits()
    {
        var (train, validation, test) = ImdbPreparer.Split(Enumerable.Range(0, 100).Select(i => i % 2).ToArray(), seed: 1234, validation: 20, test: 10);
        Assert.That(train.Concat(validation).Concat(test).Order(), Is.EqualTo(Enumerable.Range(0, 100)));
        Assert.That(validation.Count(i => i % 2 == 1), Is.EqualTo(10));
        Assert.That(test.Count(i => i % 2 == 1), Is.EqualTo(5));
        Assert.That(train.Count(i => i % 2 == 1), Is.EqualTo(35));
    }

    [TestCase("Great film.<br /><br />Loved it.", "Great film.\n\nLoved it.")]
    [TestCase("one<br/>two<br>three<BR />four", "one\ntwo\nthree\nfour")]
    [TestCase("a <br /> <br /> <br /><br /> b", "a\n\nb")]
    [TestCase("  <br />lead and trail<br />  ", "lead and trail")]
    [TestCase("keep  inner   spaces, \"quotes\" and ünïcödé", "keep  inner   spaces, \"quotes\" and ünïcödé")]
    [TestCase("not a tag: <b>bold</b> <brr>", "not a tag: <b>bold</b> <brr>")]
    public void CleansLineBreakTags(string raw, string expected) => Assert.That(ImdbPreparer.CleanText(raw), Is.EqualTo(expected));

    [Test]
    public void CleanedTextIsWhatTheFilesHold()
    {
        var source = WriteReviews([("x<br />y \"q\" \\ é", 1), ("plain", 0)]);
        ImdbPreparer.Prepare(source, Path.Combine(scratch, "out"), validation: 0, test: 0);
        var train = ReadJsonl(Path.Combine(scratch, "out", "train.jsonl"));
        Assert.That(train, Is.EquivalentTo(new[] { ("x\ny \"q\" \\ é", "positive"), ("plain", "negative") }));
        Assert.That(File.ReadAllText(Path.Combine(scratch, "out", "train.jsonl"), Encoding.UTF8), Does.Contain("é"), "non-ASCII written as UTF-8, not escaped");
    }

    [TestCase("[{\"t\":\"ok\",\"s\":1},{\"s\":0}]", 1L, "missing \"t\"")]
    [TestCase("[{\"t\":\"ok\",\"s\":1},{\"t\":\"ok\",\"s\":1},{\"t\":\"no label\"}]", 2L, "missing \"s\"")]
    [TestCase("[{\"t\":\"ok\",\"s\":2}]", 0L, "\"s\" must be 0 or 1")]
    [TestCase("[{\"t\":\"ok\",\"s\":\"1\"}]", 0L, "\"s\" must be 0 or 1")]
    [TestCase("[{\"t\":\"ok\",\"s\":0.5}]", 0L, "\"s\" must be 0 or 1")]
    [TestCase("[{\"t\":5,\"s\":1}]", 0L, "\"t\" must be a string")]
    [TestCase("[{\"t\":null,\"s\":1}]", 0L, "\"t\" must be a string")]
    [TestCase("[{\"t\":\"ok\",\"s\":1},[1,2]]", 1L, "expected an object")]
    [TestCase("[{\"t\":\"ok\",\"s\":1},{\"t\":\"ok\",", 1L, "invalid JSON")]
    [TestCase("[{\"t\":\"ok\",\"s\":1}] trailing", 1L, "invalid JSON")]
    [TestCase("{\"t\":\"ok\",\"s\":1}", null, "expected a JSON array")]
    public void MalformedRowsNameFileAndRow(string json, long? row, string expected)
    {
        var path = Path.Combine(scratch, "bad.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<DataFormatException>(() => ImdbPreparer.Prepare(path, Path.Combine(scratch, "out"), validation: 0, test: 0))!;
        Assert.That(e.File, Is.EqualTo(path));
        Assert.That(e.Row, Is.EqualTo(row));
        Assert.That(e.Message, Does.Contain(path).And.Contain(expected));
        if (row is not null) Assert.That(e.Message, Does.Contain($"row {row}"));
        Assert.That(Directory.Exists(Path.Combine(scratch, "out")), Is.False, "nothing written for a bad source");
    }

    [Test]
    public void SizesThatDoNotFitAreRejected()
    {
        var source = WriteReviews(Numbered(5, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ImdbPreparer.Prepare(source, Path.Combine(scratch, "out"), validation: 6, test: 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => ImdbPreparer.Prepare(source, Path.Combine(scratch, "out"), validation: -1));
    }

    [Test]
    public void RealImdbSplitsInto40000And5000And5000()
    {
        var clock = Stopwatch.StartNew();
        var summary = ImdbPreparer.Prepare(TestAssets.ImdbReviewsJson, Path.Combine(scratch, "imdb"));
        var seconds = clock.Elapsed.TotalSeconds;
        TestContext.Out.WriteLine($"IMDB prepared in {seconds:F2} s: {summary}");

        Assert.That(summary.Train, Is.EqualTo(new ImdbSplitCounts(40000, 20000, 20000)));
        Assert.That(summary.Validation, Is.EqualTo(new ImdbSplitCounts(5000, 2500, 2500)));
        Assert.That(summary.Test, Is.EqualTo(new ImdbSplitCounts(5000, 2500, 2500)));

        var train = ReadJsonl(Path.Combine(scratch, "imdb", "train.jsonl"));
        var validation = ReadJsonl(Path.Combine(scratch, "imdb", "validation.jsonl"));
        var test = ReadJsonl(Path.Combine(scratch, "imdb", "test.jsonl"));
        Assert.That((train.Count, validation.Count, test.Count), Is.EqualTo((40000, 5000, 5000)));
        Assert.That(validation.Count(r => r.Label == "positive"), Is.EqualTo(2500));
        Assert.That(test.Count(r => r.Label == "positive"), Is.EqualTo(2500));
        Assert.That(train.Count(r => r.Label == "positive"), Is.EqualTo(20000));
        Assert.That(train.Concat(validation).Concat(test).Any(r => r.Text.Contains("<br", StringComparison.OrdinalIgnoreCase)), Is.False);

        // Disjoint by source row, and together exactly the source (IMDB has 418 duplicate texts, so
        // disjointness is checked on row indices and coverage on the multiset of (text, label)).
        var reviews = ImdbPreparer.ReadReviews(TestAssets.ImdbReviewsJson);
        var (trainRows, validationRows, testRows) = ImdbPreparer.Split(reviews.Select(r => r.Label).ToArray(), 1234, 5000, 5000);
        Assert.That(trainRows.Concat(validationRows).Concat(testRows).Distinct().Count(), Is.EqualTo(50000));
        Assert.That(validationRows.Select(i => reviews[i].Text), Is.EqualTo(validation.Select(r => r.Text)), "the files hold the split's rows in its order");
        var expected = reviews.Select(r => (r.Text, ImdbPreparer.Labels[r.Label])).OrderBy(x => x.Text, StringComparer.Ordinal).ThenBy(x => x.Item2, StringComparer.Ordinal);
        var actual = train.Concat(validation).Concat(test).OrderBy(x => x.Text, StringComparer.Ordinal).ThenBy(x => x.Label, StringComparer.Ordinal);
        Assert.That(actual, Is.EqualTo(expected));
        var trainTexts = train.Select(r => r.Text).ToHashSet();
        var overlap = validation.Count(r => trainTexts.Contains(r.Text));
        TestContext.Out.WriteLine($"validation texts also in train (source duplicates): {overlap}");
        Assert.That(overlap, Is.LessThan(418));
    }
}
