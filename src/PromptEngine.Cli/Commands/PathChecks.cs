namespace PromptEngine.Cli.Commands;

/// <summary>Checks of the files and folders a command line names, before anything is read or written: an input that
/// is a folder where a file is meant (exit 2, like a missing input), an output where none can go, an output that is
/// one of the inputs, or an output over a file the command did not write (exit 1: the command line has to change).
/// Paths are compared by their real location, symbolic links followed.</summary>
internal static class PathChecks
{
    /// <summary>An input file: it exists and is not a folder.</summary>
    public static void InputFile(string flag, string path)
    {
        if (Directory.Exists(path)) throw new PromptEngineException($"{flag} {path} is a folder; a file is expected");
        if (!File.Exists(path)) throw new PromptEngineException($"{flag} {path}: no such file");
    }

    /// <summary>A prompt to read: a file, a PEFT adapter folder, or <c>bank.safetensors#name</c> of an existing file.</summary>
    public static void PromptInput(string flag, string path)
    {
        var hash = path.LastIndexOf('#');
        if (!File.Exists(path) && !Directory.Exists(path) && !(hash > 0 && File.Exists(path[..hash])))
            throw new PromptEngineException($"{flag} {path}: no such file or folder");
    }

    /// <summary>An output folder: not a file, not under a file.</summary>
    public static void OutputFolder(string flag, string path)
    {
        if (File.Exists(path)) throw new UsageException($"{flag} {path} is a file; a folder is expected");
        ParentsAreFolders(flag, path);
    }

    /// <summary>An output file: not a folder, not under a file.</summary>
    public static void OutputFile(string flag, string path)
    {
        if (Directory.Exists(path)) throw new UsageException($"{flag} {path} is a folder; a file is expected");
        ParentsAreFolders(flag, path);
    }

    static void ParentsAreFolders(string flag, string path)
    {
        for (var parent = Path.GetDirectoryName(Path.GetFullPath(path)); !string.IsNullOrEmpty(parent); parent = Path.GetDirectoryName(parent))
            if (File.Exists(parent)) throw new UsageException($"{flag} {path} lies under {parent}, which is a file");
    }

    /// <summary>Refuses to write <paramref name="outputFlag"/>'s <paramref name="outputs"/> over any of the <paramref name="inputs"/>.</summary>
    public static void NotOverInputs(string outputFlag, IEnumerable<string> outputs, params (string Flag, string? Path)[] inputs)
    {
        var given = inputs.Where(i => !string.IsNullOrEmpty(i.Path)).SelectMany(i => FilesOf(i.Path!).Select(f => (i.Flag, i.Path, Real: RealPath(f)))).ToList();
        foreach (var output in outputs)
        {
            var real = RealPath(output);
            foreach (var input in given)
                if (string.Equals(real, input.Real, StringComparison.Ordinal))
                    throw new UsageException($"{outputFlag} would write {output} over {input.Flag} {input.Path}; choose another {outputFlag}");
        }
    }

    /// <summary>The files an input names: itself, or a folder's files (a model or adapter folder).</summary>
    static IEnumerable<string> FilesOf(string path) =>
        Directory.Exists(path) ? Directory.EnumerateFiles(path) : [path];

    /// <summary>The path with every symbolic link along it resolved (the path need not exist).</summary>
    public static string RealPath(string path) => RealPath(Path.GetFullPath(path), depth: 0);

    static string RealPath(string full, int depth)
    {
        if (depth > 40) return full; // a link cycle: the comparison then works on the path as given
        var root = Path.GetPathRoot(full) ?? "";
        var current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            var next = Path.Combine(current, part);
            FileSystemInfo info = Directory.Exists(next) ? new DirectoryInfo(next) : new FileInfo(next);
            if (info.LinkTarget is { } target)
                next = RealPath(Path.GetFullPath(Path.IsPathRooted(target) ? target : Path.Combine(current, target)), depth + 1);
            current = next;
        }
        return current;
    }
}
