using System.Buffers.Binary;
using System.Runtime.InteropServices;

namespace PromptEngine.Import;

/// <summary>A llama2.c model.bin is not what its header says: bad header values, or a size that does
/// not match them.</summary>
public sealed class Llama2cFormatException : PromptEngineException
{
    /// <summary>Creates the exception for <paramref name="file"/>.</summary>
    public Llama2cFormatException(string file, string message) : base($"{file}: {message}") => File = file;

    /// <summary>The offending file.</summary>
    public string File { get; }
}

/// <summary>The 7-field header of a legacy llama2.c model.bin (seven little-endian int32s), with the
/// sign of vocab_size decoded: negative means an untied classifier is stored after all other tensors.</summary>
/// <param name="Dim">Model width (HF hidden_size).</param>
/// <param name="HiddenDim">Feed-forward width (HF intermediate_size).</param>
/// <param name="NLayers">Transformer blocks.</param>
/// <param name="NHeads">Query heads.</param>
/// <param name="NKvHeads">Key/value heads (fewer than NHeads under grouped-query attention).</param>
/// <param name="VocabSize">Vocabulary size, always positive here.</param>
/// <param name="SeqLen">Maximum sequence length the model (and its stored RoPE tables) covers.</param>
/// <param name="SharedClassifier">True when the classifier is the token embedding (tied).</param>
public sealed record Llama2cConfig(int Dim, int HiddenDim, int NLayers, int NHeads, int NKvHeads, int VocabSize, int SeqLen, bool SharedClassifier)
{
    /// <summary>Bytes of the header.</summary>
    public const int HeaderBytes = 7 * sizeof(int);

    /// <summary>Width of one attention head.</summary>
    public int HeadSize => Dim / NHeads;

    /// <summary>Width of all key (or value) heads together.</summary>
    public int KvDim => NKvHeads * HeadSize;

    /// <summary>Learned parameters: everything stored except the RoPE tables.</summary>
    public long ParameterCount
    {
        get
        {
            long d = Dim, h = HiddenDim, l = NLayers, v = VocabSize, q = (long)NHeads * HeadSize, kv = KvDim;
            return checked(v * d + l * (d + d * q + 2 * d * kv + q * d + d + 3 * h * d) + d + (SharedClassifier ? 0 : v * d));
        }
    }

    /// <summary>The exact size a file with this header has.</summary>
    public long FileSize => checked(HeaderBytes + sizeof(float) * (ParameterCount + 2L * SeqLen * (HeadSize / 2)));

    /// <summary>The header fields only, so printing a config never evaluates the derived sizes (which
    /// overflow for headers no file could match).</summary>
    bool PrintMembers(System.Text.StringBuilder builder)
    {
        builder.Append($"Dim = {Dim}, HiddenDim = {HiddenDim}, NLayers = {NLayers}, NHeads = {NHeads}, NKvHeads = {NKvHeads}, VocabSize = {VocabSize}, SeqLen = {SeqLen}, SharedClassifier = {SharedClassifier}");
        return true;
    }

    /// <summary>Why these values cannot describe a model, or null when they can.</summary>
    internal static string? Problem(int dim, int hiddenDim, int nLayers, int nHeads, int nKvHeads, int vocabSize, int seqLen)
    {
        if (dim <= 0) return $"dim = {dim} must be positive";
        if (hiddenDim <= 0) return $"hidden_dim = {hiddenDim} must be positive";
        if (nLayers <= 0) return $"n_layers = {nLayers} must be positive";
        if (nHeads <= 0) return $"n_heads = {nHeads} must be positive";
        if (nKvHeads <= 0) return $"n_kv_heads = {nKvHeads} must be positive";
        if (vocabSize == 0 || vocabSize == int.MinValue) return $"vocab_size = {vocabSize} is not a vocabulary size";
        if (seqLen <= 0) return $"seq_len = {seqLen} must be positive";
        if (dim % nHeads != 0) return $"dim = {dim} is not a multiple of n_heads = {nHeads}";
        if (dim / nHeads % 2 != 0) return $"head size dim / n_heads = {dim / nHeads} must be even for rotary embeddings";
        if (nKvHeads > nHeads || nHeads % nKvHeads != 0) return $"n_heads = {nHeads} is not a multiple of n_kv_heads = {nKvHeads}";
        return null;
    }
}

/// <summary>
/// A legacy (version 0) llama2.c fp32 checkpoint held in memory. Every matrix is stored as PyTorch's
/// nn.Linear weight, (out_features, in_features) row-major, exactly as llama2.c's export writes it and
/// its matmul reads it (out[i] = Σ_j W[i·n + j]·x[j]). Wq and Wk rows are in llama2.c's RoPE order:
/// rotary pairs are adjacent rows (2i, 2i+1) within each head.
/// </summary>
public sealed class Llama2cModel
{
    Llama2cModel(string path, Llama2cConfig config)
    {
        Path = path;
        Config = config;
    }

    /// <summary>The file read.</summary>
    public string Path { get; }

    /// <summary>The header.</summary>
    public Llama2cConfig Config { get; }

    /// <summary>(vocab, dim)</summary>
    public float[] TokenEmbedding { get; private set; } = [];

    /// <summary>[layer] (dim)</summary>
    public float[][] RmsAttention { get; private set; } = [];

    /// <summary>[layer] (n_heads·head_size, dim)</summary>
    public float[][] Wq { get; private set; } = [];

    /// <summary>[layer] (n_kv_heads·head_size, dim)</summary>
    public float[][] Wk { get; private set; } = [];

    /// <summary>[layer] (n_kv_heads·head_size, dim)</summary>
    public float[][] Wv { get; private set; } = [];

    /// <summary>[layer] (dim, n_heads·head_size)</summary>
    public float[][] Wo { get; private set; } = [];

    /// <summary>[layer] (dim)</summary>
    public float[][] RmsFfn { get; private set; } = [];

    /// <summary>[layer] (hidden, dim): the gate projection, silu(W1·x).</summary>
    public float[][] W1 { get; private set; } = [];

    /// <summary>[layer] (dim, hidden): the down projection.</summary>
    public float[][] W2 { get; private set; } = [];

    /// <summary>[layer] (hidden, dim): the up projection.</summary>
    public float[][] W3 { get; private set; } = [];

    /// <summary>(dim)</summary>
    public float[] RmsFinal { get; private set; } = [];

    /// <summary>(vocab, dim) when the classifier is untied; null when it is the token embedding.</summary>
    public float[]? Wcls { get; private set; }

    /// <summary>Reads and validates the header of <paramref name="path"/>, including that the file has
    /// exactly the size the header implies.</summary>
    /// <exception cref="Llama2cFormatException">The header is invalid or the size differs.</exception>
    public static Llama2cConfig ReadConfig(string path)
    {
        var fullPath = System.IO.Path.GetFullPath(path);
        using var file = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read);
        return ReadConfig(file, fullPath);
    }

    static Llama2cConfig ReadConfig(FileStream file, string path)
    {
        if (file.Length < Llama2cConfig.HeaderBytes)
            throw new Llama2cFormatException(path, $"file is {file.Length} bytes, shorter than the {Llama2cConfig.HeaderBytes}-byte llama2.c header");
        Span<byte> header = stackalloc byte[Llama2cConfig.HeaderBytes];
        file.ReadExactly(header);
        Span<int> f = stackalloc int[7];
        for (var i = 0; i < 7; i++) f[i] = BinaryPrimitives.ReadInt32LittleEndian(header[(4 * i)..]);
        var problem = Llama2cConfig.Problem(f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
        if (problem is not null)
            throw new Llama2cFormatException(path, $"invalid llama2.c header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len = {f[0]}, {f[1]}, {f[2]}, {f[3]}, {f[4]}, {f[5]}, {f[6]}): {problem}");
        var config = new Llama2cConfig(f[0], f[1], f[2], f[3], f[4], Math.Abs(f[5]), f[6], SharedClassifier: f[5] > 0);
        long expected;
        try
        {
            expected = config.FileSize;
        }
        catch (OverflowException)
        {
            throw new Llama2cFormatException(path, $"header {config} implies a file larger than any file can be");
        }
        if (file.Length != expected)
            throw new Llama2cFormatException(path,
                $"size is {file.Length:N0} bytes but the header ({config.Dim}x{config.NLayers} layers, vocab {config.VocabSize}, {(config.SharedClassifier ? "tied" : "untied")} classifier) implies exactly {expected:N0} bytes");
        return config;
    }

    /// <summary>Reads the whole checkpoint.</summary>
    /// <exception cref="Llama2cFormatException">The header is invalid or the size differs.</exception>
    public static Llama2cModel Read(string path)
    {
        if (!BitConverter.IsLittleEndian) throw new PlatformNotSupportedException("llama2.c files are little-endian; this reader maps them directly");
        var fullPath = System.IO.Path.GetFullPath(path);
        using var file = new FileStream(fullPath, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        var c = ReadConfig(file, fullPath);
        long d = c.Dim, h = c.HiddenDim, v = c.VocabSize, q = (long)c.NHeads * c.HeadSize, kv = c.KvDim;
        var model = new Llama2cModel(fullPath, c);

        // The order of the legacy export: each kind of tensor for all layers, then the next kind.
        model.TokenEmbedding = ReadFloats(file, v * d);
        model.RmsAttention = ReadLayers(file, c.NLayers, d);
        model.Wq = ReadLayers(file, c.NLayers, q * d);
        model.Wk = ReadLayers(file, c.NLayers, kv * d);
        model.Wv = ReadLayers(file, c.NLayers, kv * d);
        model.Wo = ReadLayers(file, c.NLayers, d * q);
        model.RmsFfn = ReadLayers(file, c.NLayers, d);
        model.W1 = ReadLayers(file, c.NLayers, h * d);
        model.W2 = ReadLayers(file, c.NLayers, d * h);
        model.W3 = ReadLayers(file, c.NLayers, h * d);
        model.RmsFinal = ReadFloats(file, d);
        // freq_cis_real and freq_cis_imag (seq_len, head_size/2) each: recomputable from theta 10000,
        // which is what an HF Llama does, so they are skipped.
        file.Seek(2L * c.SeqLen * (c.HeadSize / 2) * sizeof(float), SeekOrigin.Current);
        model.Wcls = c.SharedClassifier ? null : ReadFloats(file, v * d);
        return model;
    }

    static float[][] ReadLayers(FileStream file, int layers, long count)
    {
        var result = new float[layers][];
        for (var l = 0; l < layers; l++) result[l] = ReadFloats(file, count);
        return result;
    }

    static float[] ReadFloats(FileStream file, long count)
    {
        if (count > Array.MaxLength) throw new Llama2cFormatException(file.Name, $"a tensor of {count:N0} floats is too large to hold in one array");
        var values = new float[count];
        file.ReadExactly(MemoryMarshal.AsBytes(values.AsSpan()));
        return values;
    }
}
