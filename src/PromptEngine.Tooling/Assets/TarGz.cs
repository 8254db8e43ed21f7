using System.Formats.Tar;
using System.IO.Compression;

namespace PromptEngine.Assets;

/// <summary>Extracts chosen files of a .tgz. Every entry's name is checked, wanted or not, so a
/// package that tries to write outside its folder (absolute names, "..", links) is rejected
/// as a whole rather than half-installed.</summary>
internal static class TarGz
{
    /// <summary>Extracts the regular-file entries whose names are in <paramref name="wanted"/>, or which
    /// <paramref name="alsoWanted"/> accepts, into <paramref name="destination"/>, keeping their relative
    /// paths. Throws <see cref="AssetException"/> for an unsafe entry, a damaged archive, or an entry of
    /// <paramref name="wanted"/> that is absent.</summary>
    public static void Extract(string tgz, string destination, IReadOnlyCollection<string> wanted, string package, Func<string, bool>? alsoWanted = null)
    {
        var root = Path.GetFullPath(destination);
        var rootWithSeparator = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        var found = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            using var file = File.OpenRead(tgz);
            using var gzip = new GZipStream(file, CompressionMode.Decompress);
            using var reader = new TarReader(gzip);
            while (reader.GetNextEntry() is { } entry)
            {
                var target = SafeTarget(entry.Name, rootWithSeparator, package);
                switch (entry.EntryType)
                {
                    case TarEntryType.Directory:
                        continue;
                    case TarEntryType.RegularFile or TarEntryType.V7RegularFile or TarEntryType.ContiguousFile:
                        break;
                    default:
                        throw new AssetException(package, $"tar entry '{entry.Name}' is a {entry.EntryType}; only regular files and folders are accepted");
                }
                if (!wanted.Contains(entry.Name) && alsoWanted?.Invoke(entry.Name) != true) continue;
                if (!found.Add(entry.Name)) throw new AssetException(package, $"tar entry '{entry.Name}' appears twice");
                Directory.CreateDirectory(Path.GetDirectoryName(target)!);
                using var output = new FileStream(target, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
                entry.DataStream?.CopyTo(output);
            }
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or FormatException)
        {
            throw new AssetException(package, $"{tgz} is not a valid .tgz: {e.Message}", e);
        }

        var missing = wanted.Where(w => !found.Contains(w)).ToList();
        if (missing.Count > 0) throw new AssetException(package, $"the package has no file {string.Join(", ", missing.Select(m => $"'{m}'"))}");
    }

    static string SafeTarget(string name, string rootWithSeparator, string package)
    {
        if (string.IsNullOrEmpty(name) || name.Contains('\0'))
            throw new AssetException(package, "tar entry with an empty or NUL-containing name");
        var segments = name.Split('/', '\\');
        if (Path.IsPathRooted(name) || name.StartsWith('/') || name.StartsWith('\\') || segments.Contains(".."))
            throw new AssetException(package, $"tar entry '{name}' would be written outside the extraction folder");
        var target = Path.GetFullPath(Path.Combine(rootWithSeparator, name));
        // The segment test above already rules out escapes; this catches anything the platform's
        // path rules might still resolve elsewhere (drive-relative names, odd separators).
        if (!target.StartsWith(rootWithSeparator, StringComparison.Ordinal))
            throw new AssetException(package, $"tar entry '{name}' would be written outside the extraction folder");
        return target;
    }
}
