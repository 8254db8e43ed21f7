using System.Text.Json;
using System.Text.Unicode;

namespace PromptEngine.Safetensors;

/// <summary>A model's weights: one safetensors file, or shards listed by a Hugging Face
/// <c>model.safetensors.index.json</c> (<c>{"metadata": {...}, "weight_map": {tensor: shard file}}</c>).
/// The index and every shard are validated when opened: each shard exists, each mapped tensor is in
/// its shard, no tensor is in two shards, and no shard holds a tensor the index does not list.</summary>
public sealed class SafetensorsModel : IDisposable
{
    /// <summary>File name a single-file model uses inside a folder.</summary>
    public const string SingleFileName = "model.safetensors";

    /// <summary>File name of the shard index inside a folder.</summary>
    public const string IndexFileName = "model.safetensors.index.json";

    private readonly SafetensorsFile[] _files;
    private readonly Dictionary<string, SafetensorsFile> _fileOf;

    private SafetensorsModel(string path, SafetensorsFile[] files, Dictionary<string, SafetensorsFile> fileOf)
    {
        Path = path;
        _files = files;
        _fileOf = fileOf;
        Tensors = fileOf.Select(pair => pair.Value.GetTensor(pair.Key)).OrderBy(t => t.Name, StringComparer.Ordinal).ToArray();
    }

    /// <summary>The single .safetensors file or the index file the model was opened from.</summary>
    public string Path { get; }

    /// <summary>The files holding the weights (one, or the shards in name order).</summary>
    public IReadOnlyList<SafetensorsFile> Files => _files;

    /// <summary>All tensors of all shards, sorted by name (ordinal). Offsets are relative to their own shard.</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    /// <summary>Opens a .safetensors file, an index .json file, or a folder holding
    /// <see cref="SingleFileName"/> or else <see cref="IndexFileName"/>.</summary>
    /// <exception cref="SafetensorsException">Nothing to open, or the index or a shard is broken; the message names the file and tensor.</exception>
    public static SafetensorsModel Open(string fileOrFolder)
    {
        ArgumentNullException.ThrowIfNull(fileOrFolder);
        if (Directory.Exists(fileOrFolder))
        {
            var single = System.IO.Path.Combine(fileOrFolder, SingleFileName);
            if (File.Exists(single)) return OpenSingle(single);
            var index = System.IO.Path.Combine(fileOrFolder, IndexFileName);
            if (File.Exists(index)) return OpenIndex(index);
            throw new SafetensorsException(fileOrFolder, null, $"the folder holds neither {SingleFileName} nor {IndexFileName}");
        }
        if (fileOrFolder.EndsWith(".json", StringComparison.OrdinalIgnoreCase)) return OpenIndex(fileOrFolder);
        return OpenSingle(fileOrFolder);
    }

    /// <summary>Looks a tensor up by name.</summary>
    public bool TryGetTensor(string name, out TensorInfo info)
    {
        if (_fileOf.TryGetValue(name, out var file)) return file.TryGetTensor(name, out info);
        info = null!;
        return false;
    }

    /// <summary>Looks a tensor up by name.</summary>
    /// <exception cref="SafetensorsException">No tensor has that name.</exception>
    public TensorInfo GetTensor(string name) => FileHolding(name).GetTensor(name);

    /// <summary>Path of the file (shard) that holds <paramref name="tensorName"/>.</summary>
    /// <exception cref="SafetensorsException">No tensor has that name.</exception>
    public string FileOf(string tensorName) => FileHolding(tensorName).Path;

    /// <summary>See <see cref="SafetensorsFile.ReadF32(string)"/>.</summary>
    public float[] ReadF32(string name) => FileHolding(name).ReadF32(name);

    /// <summary>See <see cref="SafetensorsFile.ReadF32(string, Span{float})"/>.</summary>
    public void ReadF32(string name, Span<float> destination) => FileHolding(name).ReadF32(name, destination);

    /// <summary>See <see cref="SafetensorsFile.ReadRaw16(string)"/>.</summary>
    public ushort[] ReadRaw16(string name) => FileHolding(name).ReadRaw16(name);

    /// <summary>See <see cref="SafetensorsFile.ReadBytes(string)"/>.</summary>
    public byte[] ReadBytes(string name) => FileHolding(name).ReadBytes(name);

    /// <summary>Unmaps every file.</summary>
    public void Dispose()
    {
        foreach (var file in _files) file.Dispose();
    }

    private SafetensorsFile FileHolding(string name) =>
        _fileOf.TryGetValue(name, out var file) ? file : throw new SafetensorsException(Path, name, "no such tensor in the model");

    private static SafetensorsModel OpenSingle(string path)
    {
        var file = SafetensorsFile.Open(path);
        return new SafetensorsModel(path, [file], file.Tensors.ToDictionary(t => t.Name, _ => file, StringComparer.Ordinal));
    }

    private static SafetensorsModel OpenIndex(string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var folder = System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(indexPath))!;

        var shardNames = weightMap.Values.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        var opened = new List<SafetensorsFile>();
        try
        {
            var shardByName = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (var shardName in shardNames)
            {
                var firstTensor = weightMap.First(pair => pair.Value == shardName).Key;
                var shardPath = System.IO.Path.Combine(folder, shardName);
                if (!File.Exists(shardPath))
                    throw new SafetensorsException(indexPath, firstTensor, $"shard '{shardName}' does not exist (looked for '{shardPath}')");
                var shard = SafetensorsFile.Open(shardPath);
                opened.Add(shard);
                shardByName.Add(shardName, shard);
            }

            var holders = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (var shard in opened)
            {
                foreach (var tensor in shard.Tensors)
                {
                    if (holders.TryGetValue(tensor.Name, out var other))
                        throw new SafetensorsException(indexPath, tensor.Name, $"the tensor is in two shards, '{other.Path}' and '{shard.Path}'");
                    holders.Add(tensor.Name, shard);
                }
            }

            var fileOf = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
            foreach (var (tensorName, shardName) in weightMap)
            {
                var shard = shardByName[shardName];
                if (!shard.TryGetTensor(tensorName, out _))
                    throw new SafetensorsException(indexPath, tensorName, $"the weight_map puts the tensor in shard '{shard.Path}', which lacks it");
                fileOf.Add(tensorName, shard);
            }
            foreach (var (tensorName, shard) in holders)
            {
                if (!weightMap.ContainsKey(tensorName))
                    throw new SafetensorsException(indexPath, tensorName, $"shard '{shard.Path}' holds the tensor but the weight_map does not list it");
            }
            return new SafetensorsModel(indexPath, opened.ToArray(), fileOf);
        }
        catch
        {
            foreach (var shard in opened) shard.Dispose();
            throw;
        }
    }

    /// <summary>The index's weight_map, each shard name checked to be a file in the index's own folder.</summary>
    private static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        byte[] bytes;
        try
        {
            var length = new FileInfo(indexPath).Length;
            if (length > SafetensorsHeader.MaxHeaderBytes)
                throw new SafetensorsException(indexPath, null, $"the index has {length} bytes, over the {SafetensorsHeader.MaxHeaderBytes}-byte limit");
            bytes = File.ReadAllBytes(indexPath);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            throw new SafetensorsException(indexPath, null, $"cannot read the shard index: {e.Message}", e);
        }
        if (!Utf8.IsValid(bytes))
            throw new SafetensorsException(indexPath, null, "the shard index is not valid UTF-8");

        JsonDocument document;
        try { document = JsonDocument.Parse(bytes, new JsonDocumentOptions { MaxDepth = 16 }); }
        catch (JsonException e) { throw new SafetensorsException(indexPath, null, $"the shard index is not valid JSON: {e.Message}", e); }
        string? currentTensor = null;
        try
        {
            return WalkIndex(indexPath, document, ref currentTensor);
        }
        catch (InvalidOperationException e)
        {
            // A lone surrogate escape such as "\ud800" parses but cannot be read as a string.
            throw new SafetensorsException(indexPath, currentTensor, $"the shard index holds a string that is not valid UTF-16 (lone surrogate escape): {e.Message}", e);
        }
        finally
        {
            document.Dispose();
        }
    }

    private static Dictionary<string, string> WalkIndex(string indexPath, JsonDocument document, ref string? currentTensor)
    {
        var root = document.RootElement;
        if (root.ValueKind != JsonValueKind.Object)
            throw new SafetensorsException(indexPath, null, "the shard index is not a JSON object");
        JsonElement? weightMapElement = null;
        foreach (var property in root.EnumerateObject())
        {
            if (property.Name != "weight_map") continue;
            if (weightMapElement is not null)
                throw new SafetensorsException(indexPath, null, "'weight_map' appears more than once");
            weightMapElement = property.Value;
        }
        if (weightMapElement is not { ValueKind: JsonValueKind.Object } weightMapValue)
            throw new SafetensorsException(indexPath, null, "the shard index has no 'weight_map' object");

        var weightMap = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var entry in weightMapValue.EnumerateObject())
        {
            currentTensor = null;  // in case reading the name itself fails
            currentTensor = entry.Name;
            if (entry.Value.ValueKind != JsonValueKind.String)
                throw new SafetensorsException(indexPath, entry.Name, "the weight_map value is not a shard file name string");
            var shard = entry.Value.GetString()!;
            // A shard is a plain file next to the index: a hostile index must not reach elsewhere.
            if (shard.Length == 0 || shard is "." or ".." || shard != System.IO.Path.GetFileName(shard) || shard.Contains('\\') || shard.Contains('\0'))
                throw new SafetensorsException(indexPath, entry.Name, $"shard '{shard}' is not a plain file name in the index's folder");
            if (!weightMap.TryAdd(entry.Name, shard))
                throw new SafetensorsException(indexPath, entry.Name, "the tensor appears more than once in the weight_map");
        }
        return weightMap;
    }
}
