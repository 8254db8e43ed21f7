using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using PromptEngine.Models;
using PromptEngine.Safetensors;

namespace PromptEngine.Prompts;

/// <summary>A short, stable identifier of a base model, so that a prompt trained on one model is not
/// silently used with another of the same width (a prompt only means something to the embedding
/// space and layers it was trained against).
/// <para>It is the first 16 hex digits (64 bits) of a SHA-256, prefixed "v1-", over, in this order:</para>
/// <list type="number">
/// <item>the parsed configuration's canonical fields (architecture, family, hidden, intermediate, layers,
/// heads, kv heads, head dim, vocabulary, positions, norm eps, RoPE theta, tied head, qkv bias, sliding
/// window, BOS/EOS ids), so whitespace, key order and irrelevant config.json fields do not matter;</item>
/// <item>every tensor's name, dtype and shape, sorted by name (so sharding does not matter);</item>
/// <item>for every tensor, its first and last 1 KiB of stored bytes (all of it when shorter than 2 KiB) —
/// the embedding table included, and also every other weight, so that a fine-tune or merged LoRA
/// that leaves the embeddings alone still changes the fingerprint.</item>
/// </list>
/// <para>Reading 2 KiB per tensor from the memory map costs milliseconds even for a 7B model, where a full
/// hash would read gigabytes. The price: a change confined to the middle of a tensor goes unnoticed,
/// and the same weights stored in another dtype get another fingerprint. The folder's path is not
/// part of it: copies of a model share a fingerprint.</para></summary>
public static class ModelFingerprint
{
    /// <summary>Bytes sampled from each end of every tensor.</summary>
    public const int SampleBytes = 1024;

    /// <summary>The version tag of the recipe above; a different recipe must change it.</summary>
    public const string Version = "v1";

    /// <summary>The fingerprint of an open model folder, e.g. "v1-3fa2c09b1d4e5f60".</summary>
    public static string Compute(ModelFolder model)
    {
        ArgumentNullException.ThrowIfNull(model);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Text(string text)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(text));
            hash.AppendData([0]);
        }

        var c = model.Config;
        Text("promptengine-model-fingerprint-" + Version);
        Text(string.Join(";",
            "architecture=" + c.Architecture, "family=" + c.Family, "hidden=" + I(c.HiddenSize), "intermediate=" + I(c.IntermediateSize),
            "layers=" + I(c.NumLayers), "heads=" + I(c.NumHeads), "kv_heads=" + I(c.NumKvHeads), "head_dim=" + I(c.HeadDim),
            "vocab=" + I(c.VocabSize), "positions=" + I(c.MaxPositions), "norm_eps=" + c.NormEps.ToString("R", CultureInfo.InvariantCulture),
            "rope_theta=" + c.RopeTheta.ToString("R", CultureInfo.InvariantCulture), "tied=" + c.TieWordEmbeddings, "qkv_bias=" + c.QkvBias,
            "sliding_window=" + (c.SlidingWindow?.ToString(CultureInfo.InvariantCulture) ?? "none"),
            "bos=" + (c.BosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "none"), "eos=" + (c.EosTokenId?.ToString(CultureInfo.InvariantCulture) ?? "none")));

        // SafetensorsModel.Tensors is already sorted by name (ordinal), shards merged.
        var tensors = model.Tensors.Tensors;
        foreach (var t in tensors) Text($"{t.Name}|{t.DType}|{string.Join(",", t.Shape)}");
        var buffer = new byte[2 * SampleBytes];
        foreach (var t in tensors)
        {
            var file = FileHolding(model.Tensors, t.Name);
            if (t.ByteLength <= 2 * SampleBytes)
            {
                var all = buffer.AsSpan(0, (int)t.ByteLength);
                file.ReadBytes(t, 0, all);
                hash.AppendData(all);
            }
            else
            {
                file.ReadBytes(t, 0, buffer.AsSpan(0, SampleBytes));
                file.ReadBytes(t, t.ByteLength - SampleBytes, buffer.AsSpan(SampleBytes, SampleBytes));
                hash.AppendData(buffer);
            }
        }
        return Version + "-" + Convert.ToHexStringLower(hash.GetHashAndReset().AsSpan(0, 8));
    }

    internal static SafetensorsFile FileHolding(SafetensorsModel tensors, string name)
    {
        foreach (var f in tensors.Files)
            if (f.TryGetTensor(name, out _)) return f;
        throw new SafetensorsException(tensors.Path, name, "no such tensor in the model");
    }

    static string I(int value) => value.ToString(CultureInfo.InvariantCulture);
}
