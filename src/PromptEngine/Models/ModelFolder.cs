using PromptEngine.Safetensors;
using PromptEngine.Tokenization;

namespace PromptEngine.Models;

/// <summary>A Hugging Face model folder opened for the engine: <c>config.json</c> parsed, the
/// safetensors weights (single file or shards) indexed and checked tensor by tensor against the
/// config, and the tokenizer loaded on first use. Weights stay memory-mapped until uploaded.</summary>
public sealed class ModelFolder : IDisposable
{
    ITextTokenizer? tokenizer;

    /// <summary>The folder path.</summary>
    public string Path { get; }
    /// <summary>The parsed configuration.</summary>
    public TransformerConfig Config { get; }
    /// <summary>The checked map from the engine's weight roles to tensor names.</summary>
    public WeightMap Weights { get; }
    /// <summary>The memory-mapped tensors.</summary>
    public SafetensorsModel Tensors { get; }

    ModelFolder(string path, TransformerConfig config, WeightMap weights, SafetensorsModel tensors)
    {
        Path = path;
        Config = config;
        Weights = weights;
        Tensors = tensors;
    }

    /// <summary>Opens and checks a model folder.</summary>
    /// <exception cref="ModelConfigException">config.json is missing or unusable.</exception>
    /// <exception cref="SafetensorsException">A weight file is malformed.</exception>
    /// <exception cref="WeightMismatchException">The tensors do not match the config (all problems listed).</exception>
    public static ModelFolder Open(string folder)
    {
        if (!Directory.Exists(folder)) throw new ModelConfigException(folder, null, "model folder does not exist");
        var config = TransformerConfig.Load(System.IO.Path.Combine(folder, "config.json"));
        var tensors = SafetensorsModel.Open(folder);
        try
        {
            var shapes = tensors.Tensors.ToDictionary(t => t.Name, t => t.Shape, StringComparer.Ordinal);
            var map = WeightMap.Validate(config, shapes, folder);
            foreach (var w in map.Weights)
            {
                var dtype = tensors.GetTensor(w.Name).DType;
                if (dtype is not (DType.F32 or DType.F16 or DType.BF16))
                    throw new WeightMismatchException(folder, [$"tensor '{w.Name}' has dtype {dtype}; weights must be F32, F16 or BF16"]);
            }
            return new ModelFolder(folder, config, map, tensors);
        }
        catch
        {
            tensors.Dispose();
            throw;
        }
    }

    /// <summary>The folder's tokenizer (loaded once).</summary>
    public ITextTokenizer Tokenizer => tokenizer ??= TokenizerLoader.Load(Path);

    /// <summary>Number of parameters the engine uses (ignorable buffers excluded; a tied head counted once).</summary>
    public long ParameterCount => Weights.Weights.Sum(w => w.Shape.Aggregate(1L, (a, d) => a * d));

    /// <inheritdoc/>
    public void Dispose() => Tensors.Dispose();
}
