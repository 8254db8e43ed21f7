using System.Text;
using PromptEngine.Data;
using PromptEngine.Training.Data;

namespace PromptEngine.Tests.Training;

public class JsonlDatasetTests
{
    string scratch = "";

    [SetUp]
    public void SetUp() => scratch = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-jsonl-{Guid.NewGuid():N}")).FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
    }

    string Write(params string[] lines) => WriteBytes(Encoding.UTF8.GetBytes(string.Join("\n", lines) + "\n"));

    string WriteBytes(byte[] bytes)
    {
        var path = Path.Combine(scratch, $"data-{Guid.NewGuid():N}.jsonl");
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static readonly JsonlFieldNames Imdb = JsonlFieldNames.Classification();

    [Test]
    public void ReadsClassificationRowsWithLineNumbersAndIgnoresBlankLinesAndOtherFields()
    {
        var path = Write(
            """{"text": "Great fun.", "label": "positive", "id": 7}""",
            "",
            "   ",
            """{"label": "negative", "text": "Dull \"and\" long.\nVery."}""");
        var data = JsonlDataset.Load(path, Imdb);
        Assert.That(data.Examples, Is.EqualTo(new[]
        {
            new Example("Great fun.", "positive", 1),
            new Example("Dull \"and\" long.\nVery.", "negative", 4),
        }));
        Assert.That(data.Labels, Is.EqualTo(new[] { "positive", "negative" }));
        Assert.That(data.Report, Is.EqualTo(new LoadReport(4, 2, 2, 0, 0, data.Report.MalformedSamples)));
        Assert.That(data.Report.MalformedSamples, Is.Empty);
        Assert.That(data.Path, Is.EqualTo(Path.GetFullPath(path)));
    }

    static IEnumerable<TestCaseData> MalformedLines()
    {
        yield return new TestCaseData("""{"text": "a", "label": "positive" """, "invalid JSON").SetName("InvalidJson");
        yield return new TestCaseData("""["a", "positive"]""", "expected a JSON object").SetName("NotAnObject");
        yield return new TestCaseData("\"just a string\"", "found a string").SetName("StringRoot");
        yield return new TestCaseData("""{"label": "positive"}""", "missing \"text\"").SetName("MissingText");
        yield return new TestCaseData("""{"text": "a"}""", "missing \"label\"").SetName("MissingLabel");
        yield return new TestCaseData("""{"text": 5, "label": "positive"}""", "\"text\" must be a string, found a number").SetName("NumericText");
        yield return new TestCaseData("""{"text": "a", "label": ["positive"]}""", "\"label\" must be a string or an integer, found an array").SetName("ArrayLabel");
        yield return new TestCaseData("""{"text": "a", "label": 0.5}""", "found a number 0.5").SetName("FractionalLabel");
        yield return new TestCaseData("""{"text": "a", "label": ""}""", "\"label\" is empty").SetName("EmptyLabel");
        yield return new TestCaseData("""{"text": "  ", "label": "positive"}""", "\"text\" is empty").SetName("WhitespaceText");
        yield return new TestCaseData("""{"text": "a", "label": "positive"} {"x": 1}""", "invalid JSON").SetName("TwoObjectsOnALine");
    }

    [TestCaseSource(nameof(MalformedLines))]
    public void AMalformedLineIsNamedByFileAndOneBasedLine(string bad, string expected)
    {
        var path = Write(
            """{"text": "fine", "label": "positive"}""",
            "",
            """{"text": "also fine", "label": "negative"}""",
            bad,
            """{"text": "after", "label": "negative"}""");
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(path, Imdb))!;
        Assert.That(e.Message, Does.StartWith($"{Path.GetFullPath(path)}: line 4: "));
        Assert.That(e.Message, Does.Contain(expected));
        Assert.That(e.File, Is.EqualTo(Path.GetFullPath(path)));
    }

    [Test]
    public void SkippingMalformedLinesCountsThemAndKeepsTheRest()
    {
        var lines = new List<string>();
        for (var i = 0; i < 30; i++)
            lines.Add(i % 3 == 1 ? $$"""{"text": "row {{i}}", "label": {{i}}.5}""" : $$"""{"text": "row {{i}}", "label": "{{(i % 2 == 0 ? "positive" : "negative")}}"}""");
        lines.Insert(5, "not json");
        var path = Write(lines.ToArray());
        var data = JsonlDataset.Load(path, Imdb, skipMalformed: true);
        // 10 rows with a fractional label, one line of garbage.
        Assert.That(data.Report.Malformed, Is.EqualTo(11));
        Assert.That(data.Report.Loaded, Is.EqualTo(20));
        Assert.That(data.Report.Lines, Is.EqualTo(31));
        Assert.That(data.Examples.Select(e => e.Text), Is.EqualTo(Enumerable.Range(0, 30).Where(i => i % 3 != 1).Select(i => $"row {i}")));
        Assert.That(data.Report.MalformedSamples, Has.Count.EqualTo(JsonlDataset.MalformedSampleLimit));
        Assert.That(data.Report.MalformedSamples[0], Does.Contain("line 2: ").And.Contain("found a number 1.5"));
        Assert.That(data.Report.MalformedSamples[1], Does.Contain("line 5: "));
        Assert.That(data.Report.MalformedSamples[2], Does.Contain("line 6: invalid JSON"));
        // Each kept example remembers its own line.
        Assert.That(data.Examples[2], Is.EqualTo(new Example("row 3", "negative", 4)));
        Assert.That(data.Examples[3], Is.EqualTo(new Example("row 5", "negative", 7)));
    }

    [Test]
    public void FieldNamesAreConfigurableAndIntegerLabelsAreKeptAsText()
    {
        var path = Write("""{"sentence": "good", "y": 1, "text": 3}""", """{"sentence": "bad", "y": 0}""");
        var data = JsonlDataset.Load(path, JsonlFieldNames.Classification("sentence", "y"));
        Assert.That(data.Examples.Select(e => (e.Text, e.Answer)), Is.EqualTo(new[] { ("good", "1"), ("bad", "0") }));
        // The default names find nothing on the second line ("text" is a number on the first).
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(path, Imdb))!;
        Assert.That(e.Message, Does.Contain("line 1: \"text\" must be a string"));
    }

    [Test]
    public void GenerationRowsUseInputAndOutputAndRejectNumericOutputs()
    {
        var path = Write("""{"input": "2+2=", "output": "4"}""", """{"question": "x", "answer": "y"}""");
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(path, JsonlFieldNames.Generation()))!;
        Assert.That(e.Message, Does.Contain("line 2: missing \"input\""));
        var data = JsonlDataset.Load(path, JsonlFieldNames.Generation(), skipMalformed: true);
        Assert.That(data.Examples, Is.EqualTo(new[] { new Example("2+2=", "4", 1) }));
        Assert.That(data.Labels, Is.Empty);

        var custom = Write("""{"question": "x", "answer": "y"}""", """{"question": "z", "answer": 5}""");
        e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(custom, JsonlFieldNames.Generation("question", "answer")))!;
        Assert.That(e.Message, Does.Contain("line 2: \"answer\" must be a string, found a number 5"));
    }

    [Test]
    public void EmptyTextsFollowThePolicy()
    {
        var path = Write(
            """{"text": "kept", "label": "positive"}""",
            """{"text": "", "label": "negative"}""",
            """{"text": " \n\t", "label": "positive"}""");
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(path, Imdb))!;
        Assert.That(e.Message, Does.Contain("line 2: \"text\" is empty"));

        var skippedAsMalformed = JsonlDataset.Load(path, Imdb, skipMalformed: true);
        Assert.That(skippedAsMalformed.Examples.Select(x => x.Text), Is.EqualTo(new[] { "kept" }));
        Assert.That((skippedAsMalformed.Report.Malformed, skippedAsMalformed.Report.EmptyTexts), Is.EqualTo((2L, 2L)));

        var skipped = JsonlDataset.Load(path, Imdb, emptyText: EmptyTextPolicy.Skip);
        Assert.That(skipped.Examples.Select(x => x.Text), Is.EqualTo(new[] { "kept" }));
        Assert.That((skipped.Report.Malformed, skipped.Report.EmptyTexts), Is.EqualTo((0L, 2L)));

        var kept = JsonlDataset.Load(path, Imdb, emptyText: EmptyTextPolicy.Keep);
        Assert.That(kept.Examples.Select(x => x.Text), Is.EqualTo(new[] { "kept", "", " \n\t" }));
        Assert.That((kept.Report.Malformed, kept.Report.EmptyTexts), Is.EqualTo((0L, 2L)));
    }

    [Test]
    public void ABomIsAllowedButBytesThatAreNotUtf8NameTheirLine()
    {
        var withBom = WriteBytes([.. Encoding.UTF8.GetPreamble(), .. Encoding.UTF8.GetBytes("{\"text\": \"café\", \"label\": \"positive\"}\n")]);
        Assert.That(JsonlDataset.Load(withBom, Imdb).Examples.Single().Text, Is.EqualTo("café"));

        var latin1 = WriteBytes([.. Encoding.UTF8.GetBytes("{\"text\": \"ok\", \"label\": \"positive\"}\n{\"text\": \"caf"), 0xE9, .. "\", \"label\": \"positive\"}\n"u8.ToArray()]);
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(latin1, Imdb, skipMalformed: true))!;
        Assert.That(e.Message, Does.Contain("line 2: not UTF-8"));
    }

    [Test]
    public void AMissingFileIsADataFormatExceptionNamingIt()
    {
        var missing = Path.Combine(scratch, "nope.jsonl");
        var e = Assert.Throws<DataFormatException>(() => JsonlDataset.Load(missing, Imdb))!;
        Assert.That(e.Message, Does.StartWith(missing).And.Contain("cannot read"));
    }

    [Test]
    public void ReadsThePreparedImdbSplit()
    {
        var data = JsonlDataset.Load(Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"), Imdb);
        Assert.That(data.Examples, Has.Count.EqualTo(5000));
        Assert.That(data.Report.Malformed + data.Report.BlankLines + data.Report.EmptyTexts, Is.Zero);
        Assert.That(data.Labels.Order(), Is.EqualTo(new[] { "negative", "positive" }));
        Assert.That(data.Examples.Count(e => e.Answer == "positive"), Is.EqualTo(2500));
    }
}
