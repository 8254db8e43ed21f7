using System.Formats.Tar;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using PromptEngine.Data;

namespace PromptEngine.Tests.Assets;

public class SpamAssassinPreparerTests
{
    string scratch = "";

    [SetUp]
    public void SetUp() => scratch = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-spam-{Guid.NewGuid():N}")).FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
    }

    /// <summary>A messages.tar of (entry name, raw message) pairs, as the asset store writes it.</summary>
    string WriteTar(IEnumerable<(string Name, string Message)> messages, string name = "messages.tar")
    {
        var path = Path.Combine(scratch, name);
        using var file = File.Create(path);
        using var tar = new TarWriter(file, TarEntryFormat.Ustar);
        foreach (var (entryName, message) in messages)
            tar.WriteEntry(new UstarTarEntry(TarEntryType.RegularFile, entryName) { DataStream = new MemoryStream(Encoding.Latin1.GetBytes(message)) });
        return path;
    }

    static List<(string Text, string Label)> ReadJsonl(string path) =>
        File.ReadLines(path).Select(line =>
        {
            using var doc = JsonDocument.Parse(line);
            Assert.That(doc.RootElement.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "text", "label" }));
            return (doc.RootElement.GetProperty("text").GetString()!, doc.RootElement.GetProperty("label").GetString()!);
        }).ToList();

    /// <summary>Message i has subject "message i", so every row can be traced to its source.</summary>
    static IEnumerable<(string, string)> Numbered(int ham, int spam) =>
        Enumerable.Range(0, ham + spam).Select(i => (
            $"{(i < ham ? (i % 2 == 0 ? "easy-ham-1" : "hard-ham-1") : (i % 2 == 0 ? "spam-1" : "spam-2"))}/{i:D5}.abc.txt",
            $"From x@y  Mon Jan 1 00:00:00 2002\nSubject: message {i}\n\nbody {i}\n"));

    [Test]
    public void GroupsGiveLabelsAndSplitsAreStratifiedDisjointAndComplete()
    {
        var source = WriteTar(Numbered(20, 10));
        var summary = SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "out"), seed: 5, validation: 6, test: 3);

        // 2:1 ham:spam, so 4+2 validation and 2+1 test.
        Assert.That(summary.Validation, Is.EqualTo(new SpamSplitCounts(6, 4, 2)));
        Assert.That(summary.Test, Is.EqualTo(new SpamSplitCounts(3, 2, 1)));
        Assert.That(summary.Train, Is.EqualTo(new SpamSplitCounts(21, 14, 7)));
        Assert.That((summary.Messages, summary.DuplicatesDropped), Is.EqualTo((30, 0)));

        var all = new[] { "train", "validation", "test" }.SelectMany(s => ReadJsonl(Path.Combine(scratch, "out", s + ".jsonl"))).ToList();
        Assert.That(all.Select(r => r.Text), Is.EquivalentTo(Enumerable.Range(0, 30).Select(i => $"Subject: message {i}\nbody {i}")));
        foreach (var (text, label) in all)
            Assert.That(label, Is.EqualTo(int.Parse(text.Split('\n')[0]["Subject: message ".Length..]) < 20 ? "ham" : "spam"), text);

        using var split = JsonDocument.Parse(File.ReadAllText(Path.Combine(scratch, "out", "split.json")));
        Assert.That(split.RootElement.GetProperty("seed").GetInt32(), Is.EqualTo(5));
        Assert.That(split.RootElement.GetProperty("maxChars").GetInt32(), Is.EqualTo(SpamAssassinPreparer.DefaultMaxChars));
        var validation = split.RootElement.GetProperty("splits").GetProperty("validation");
        Assert.That((validation.GetProperty("count").GetInt32(), validation.GetProperty("ham").GetInt32(), validation.GetProperty("spam").GetInt32()), Is.EqualTo((6, 4, 2)));
        Assert.That(Directory.GetFiles(Path.Combine(scratch, "out")).Select(Path.GetFileName),
            Is.EquivalentTo(new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" }), "no temp files left");
    }

    [Test]
    public void SameSeedGivesIdenticalFilesAndAnotherSeedAnotherOrder()
    {
        var source = WriteTar(Numbered(30, 30));
        SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "a"), seed: 7, validation: 10, test: 10);
        SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "b"), seed: 7, validation: 10, test: 10);
        SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "c"), seed: 8, validation: 10, test: 10);
        foreach (var file in new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" })
            Assert.That(File.ReadAllBytes(Path.Combine(scratch, "b", file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(scratch, "a", file))), file);
        Assert.That(File.ReadAllBytes(Path.Combine(scratch, "c", "train.jsonl")), Is.Not.EqualTo(File.ReadAllBytes(Path.Combine(scratch, "a", "train.jsonl"))));
    }

    [Test]
    public void RepeatedTextsAreKeptOnceAndTextsUnderBothLabelsAreDropped()
    {
        var source = WriteTar([
            ("easy-ham-1/00001.a.txt", "Subject: same\n\nhello\n"),
            ("easy-ham-2/00002.b.txt", "Received: elsewhere\nSubject: same\n\nhello\n"),
            ("spam-1/00003.c.txt", "Subject: both\n\nbuy\n"),
            ("hard-ham-1/00004.d.txt", "Subject: both\n\nbuy\n"),
            ("spam-2/00005.e.txt", "Subject: unique spam\n\nbuy now\n"),
            ("easy-ham-1/00006.f.txt", "Subject: unique ham\n\nlunch?\n"),
        ]);
        var summary = SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "out"), validation: 0, test: 0);
        Assert.That((summary.Messages, summary.DuplicatesDropped), Is.EqualTo((6, 3)));
        Assert.That(ReadJsonl(Path.Combine(scratch, "out", "train.jsonl")), Is.EquivalentTo(new[]
        {
            ("Subject: same\nhello", "ham"), ("Subject: unique spam\nbuy now", "spam"), ("Subject: unique ham\nlunch?", "ham"),
        }));
    }

    [TestCase("other-group/00001.a.txt", "not GROUP/NAME.txt")]
    [TestCase("spam-1/00001.a.json", "not GROUP/NAME.txt")]
    [TestCase("00001.a.txt", "not GROUP/NAME.txt")]
    public void UnknownEntriesNameFileAndRow(string entry, string expected)
    {
        var source = WriteTar([("spam-1/00000.ok.txt", "Subject: ok\n\nok\n"), (entry, "Subject: x\n\ny\n")]);
        var e = Assert.Throws<DataFormatException>(() => SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "out")))!;
        Assert.That(e.File, Is.EqualTo(source));
        Assert.That(e.Row, Is.EqualTo(1));
        Assert.That(e.Message, Does.Contain(source).And.Contain(entry).And.Contain(expected));
        Assert.That(Directory.Exists(Path.Combine(scratch, "out")), Is.False, "nothing written for a bad source");
    }

    [Test]
    public void NotATarOrAnEmptyTarIsADataFormatError()
    {
        var garbage = Path.Combine(scratch, "garbage.tar");
        File.WriteAllText(garbage, "this is not a tar archive, just some text that is long enough to be read as a header block? " + new string('x', 600));
        var e = Assert.Throws<DataFormatException>(() => SpamAssassinPreparer.Prepare(garbage, Path.Combine(scratch, "out")))!;
        Assert.That(e.Message, Does.Contain(garbage));

        var empty = WriteTar([], "empty.tar");
        Assert.That(Assert.Throws<DataFormatException>(() => SpamAssassinPreparer.Prepare(empty, Path.Combine(scratch, "out")))!.Message, Does.Contain("no messages"));
    }

    [Test]
    public void SizesThatDoNotFitAreRejected()
    {
        var source = WriteTar(Numbered(5, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "out"), validation: 6, test: 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => SpamAssassinPreparer.Prepare(source, Path.Combine(scratch, "out"), maxChars: 0));
    }

    /// <summary>The held-out files of the real split, pinned: the conversion and the split are deterministic,
    /// so a change to either shows here first (and then needs DemoWorkspace.DerivationVersion bumped, so
    /// caches holding the old split are re-derived).</summary>
    const string ValidationSha256 = "be3bbcb60a9f0c0990b41d1e52b5457b7c7697e443359ffc4b44b16b6268896e";
    const string TestSha256 = "1ef04940dd4f4bf1f3cd1ba1d82b77c5c1c35adfd0d5a1b4f49878c68a5eaa47";

    [Test]
    public void RealCorpusSplitIsStratifiedStableAndDeduplicated()
    {
        var messages = SpamAssassinPreparer.ReadMessages(TestAssets.SpamAssassinMessagesTar, SpamAssassinPreparer.DefaultMaxChars);
        Assert.That(messages, Has.Count.EqualTo(6046));
        Assert.That(messages.Count(m => m.Label == 1), Is.EqualTo(500 + 1396), "spam-1 and spam-2");
        Assert.That(messages.Count(m => m.Label == 0), Is.EqualTo(2500 + 1400 + 250), "easy-ham-1, easy-ham-2, hard-ham-1");

        var summary = SpamAssassinPreparer.Prepare(TestAssets.SpamAssassinMessagesTar, Path.Combine(scratch, "a"));
        TestContext.Out.WriteLine(summary);
        var kept = 6046 - summary.DuplicatesDropped;
        Assert.That(summary.Train.Count + summary.Validation.Count + summary.Test.Count, Is.EqualTo(kept));
        Assert.That((summary.Validation.Count, summary.Test.Count), Is.EqualTo((1000, 1000)));

        // Stratified: each split's spam count is the source's spam share of its size, rounded.
        var spamKept = summary.Train.Spam + summary.Validation.Spam + summary.Test.Spam;
        var expectedSpam = (int)Math.Round(1000.0 * spamKept / kept, MidpointRounding.ToEven);
        Assert.That(summary.Validation.Spam, Is.EqualTo(expectedSpam));
        Assert.That(summary.Test.Spam, Is.EqualTo(expectedSpam));

        var splits = new[] { "train", "validation", "test" }.ToDictionary(s => s, s => ReadJsonl(Path.Combine(scratch, "a", s + ".jsonl")));
        var texts = splits.Values.SelectMany(rows => rows.Select(r => r.Text)).ToList();
        Assert.That(texts.Distinct(StringComparer.Ordinal).Count(), Is.EqualTo(texts.Count), "no text in two rows, so none is both trained and tested on");
        Assert.That(texts, Has.All.StartWith("Subject: "));
        Assert.That(texts.Max(t => t.Length), Is.LessThanOrEqualTo(SpamAssassinPreparer.DefaultMaxChars));
        Assert.That(splits["validation"].Count(r => r.Label == "spam"), Is.EqualTo(summary.Validation.Spam));

        // Stable: a second run gives the same bytes, and the held-out files are the pinned ones.
        SpamAssassinPreparer.Prepare(TestAssets.SpamAssassinMessagesTar, Path.Combine(scratch, "b"));
        foreach (var file in new[] { "train.jsonl", "validation.jsonl", "test.jsonl", "split.json" })
            Assert.That(File.ReadAllBytes(Path.Combine(scratch, "b", file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(scratch, "a", file))), file);
        Assert.That(Sha256Of(Path.Combine(scratch, "a", "validation.jsonl")), Is.EqualTo(ValidationSha256), "validation.jsonl changed");
        Assert.That(Sha256Of(Path.Combine(scratch, "a", "test.jsonl")), Is.EqualTo(TestSha256), "test.jsonl changed");
    }

    [Test]
    public void TheWorkspaceSplitIsTheOneTheDefaultsGive()
    {
        var folder = TestAssets.SpamSplitFolder;
        var fresh = SpamAssassinPreparer.Prepare(TestAssets.SpamAssassinMessagesTar, Path.Combine(scratch, "fresh"), seed: PromptEngine.Assets.DemoWorkspace.SpamSeed);
        foreach (var file in new[] { "train.jsonl", "validation.jsonl", "test.jsonl" })
            Assert.That(File.ReadAllBytes(Path.Combine(folder, file)), Is.EqualTo(File.ReadAllBytes(Path.Combine(fresh.OutDir, file))), file);
    }

    static string Sha256Of(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));
}
