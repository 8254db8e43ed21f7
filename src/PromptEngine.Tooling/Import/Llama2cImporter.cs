using System.Text;
using System.Text.Json;
using PromptEngine.Safetensors;

namespace PromptEngine.Import;

/// <summary>What <see cref="Llama2cImporter.ImportModel"/> wrote.</summary>
/// <param name="OutDir">The Hugging Face model folder (absolute).</param>
/// <param name="Config">The llama2.c header it came from.</param>
/// <param name="TensorCount">Tensors in model.safetensors.</param>
/// <param name="ParameterCount">Elements in those tensors.</param>
public sealed record Llama2cImportResult(string OutDir, Llama2cConfig Config, int TensorCount, long ParameterCount);

/// <summary>
/// Converts a llama2.c checkpoint into a standard Hugging Face Llama folder (config.json and
/// model.safetensors) that computes the same function.
/// <para>The one non-trivial step is RoPE. llama2.c rotates adjacent pairs (2i, 2i+1) of each head;
/// HF's Llama rotates (i, i + head_size/2) ("rotate_half"). Both use the frequency θ^(-2i/head_size) for
/// pair i, so reordering the output rows of Wq and Wk within each head, pair i's two rows moving to
/// positions i and i + head_size/2, makes HF's rotation act on exactly the values llama2.c rotates.
/// Attention scores q·k are sums over a head, so they are unchanged by a shared reordering of q and k.
/// This is the same permutation as HF's convert_llama_weights_to_hf (view as (heads, hs/2, 2, dim),
/// swap the middle axes).</para>
/// </summary>
public static class Llama2cImporter
{
    /// <summary>Reads <paramref name="modelBin"/> and writes <c>config.json</c> and <c>model.safetensors</c>
    /// into <paramref name="outDir"/>, and, when <paramref name="tokenizerBin"/> is given, the tokenizer
    /// files converted from llama2.c's tokenizer.bin. The folder appears complete or not at all (written
    /// beside it, then renamed). An existing non-empty folder is replaced only when <paramref name="overwrite"/> is true.</summary>
    /// <exception cref="Llama2cFormatException">The model file is invalid.</exception>
    /// <exception cref="Tokenization.TokenizerException">The tokenizer file is invalid.</exception>
    /// <exception cref="IOException"><paramref name="outDir"/> is a non-empty folder (or a file) and
    /// <paramref name="overwrite"/> is false.</exception>
    public static Llama2cImportResult ImportModel(string modelBin, string outDir, bool overwrite = false, string? tokenizerBin = null)
    {
        var target = Path.GetFullPath(outDir).TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        EnsureReplaceable(target, overwrite);
        var model = Llama2cModel.Read(modelBin);
        var tensors = HuggingFaceTensors(model);

        var parent = Path.GetDirectoryName(target)!;
        Directory.CreateDirectory(parent);
        var temp = Path.Combine(parent, $".{Path.GetFileName(target)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        Directory.CreateDirectory(temp);
        try
        {
            File.WriteAllText(Path.Combine(temp, "config.json"), ConfigJson(model.Config), new UTF8Encoding(false));
            // "format": "pt" is what transformers' loader looks for in a safetensors header.
            SafetensorsWriter.Write(Path.Combine(temp, "model.safetensors"), tensors, new Dictionary<string, string> { ["format"] = "pt" });
            if (tokenizerBin is not null)
                Tokenization.Llama2cTokenizerConverter.WriteTokenizerFiles(tokenizerBin, temp, model.Config.VocabSize, modelMaxLength: model.Config.SeqLen);
            Publish(temp, target, overwrite);
        }
        catch
        {
            if (Directory.Exists(temp)) Directory.Delete(temp, recursive: true);
            throw;
        }
        return new Llama2cImportResult(target, model.Config, tensors.Count, tensors.Sum(t => t.Data.Length / (long)sizeof(float)));
    }

    /// <summary>The tensors of the HF Llama layout, in HF names, with q_proj and k_proj rows permuted to
    /// HF's rotary order.</summary>
    internal static List<TensorToWrite> HuggingFaceTensors(Llama2cModel model)
    {
        var c = model.Config;
        long d = c.Dim, h = c.HiddenDim, v = c.VocabSize, q = (long)c.NHeads * c.HeadSize, kv = c.KvDim;
        var tensors = new List<TensorToWrite> { TensorToWrite.F32("model.embed_tokens.weight", [v, d], model.TokenEmbedding) };
        for (var l = 0; l < c.NLayers; l++)
        {
            var p = $"model.layers.{l}.";
            tensors.Add(TensorToWrite.F32(p + "input_layernorm.weight", [d], model.RmsAttention[l]));
            tensors.Add(TensorToWrite.F32(p + "self_attn.q_proj.weight", [q, d], PermuteToRotateHalf(model.Wq[l], c.NHeads, c.HeadSize, c.Dim)));
            tensors.Add(TensorToWrite.F32(p + "self_attn.k_proj.weight", [kv, d], PermuteToRotateHalf(model.Wk[l], c.NKvHeads, c.HeadSize, c.Dim)));
            tensors.Add(TensorToWrite.F32(p + "self_attn.v_proj.weight", [kv, d], model.Wv[l]));
            tensors.Add(TensorToWrite.F32(p + "self_attn.o_proj.weight", [d, q], model.Wo[l]));
            tensors.Add(TensorToWrite.F32(p + "post_attention_layernorm.weight", [d], model.RmsFfn[l]));
            tensors.Add(TensorToWrite.F32(p + "mlp.gate_proj.weight", [h, d], model.W1[l]));
            tensors.Add(TensorToWrite.F32(p + "mlp.down_proj.weight", [d, h], model.W2[l]));
            tensors.Add(TensorToWrite.F32(p + "mlp.up_proj.weight", [h, d], model.W3[l]));
        }
        tensors.Add(TensorToWrite.F32("model.norm.weight", [d], model.RmsFinal));
        if (model.Wcls is { } wcls) tensors.Add(TensorToWrite.F32("lm_head.weight", [v, d], wcls));
        return tensors;
    }

    /// <summary>Reorders the rows of a (heads·headSize, cols) projection from llama2.c's interleaved rotary
    /// pairs to HF's half-split ones: within each head, row 2i + t moves to row t·headSize/2 + i.</summary>
    internal static float[] PermuteToRotateHalf(float[] weight, int heads, int headSize, int cols)
    {
        if (weight.Length != (long)heads * headSize * cols)
            throw new ArgumentException($"weight has {weight.Length} elements, expected {heads}x{headSize}x{cols}", nameof(weight));
        var half = headSize / 2;
        var result = new float[weight.Length];
        for (var head = 0; head < heads; head++)
            for (var i = 0; i < half; i++)
                for (var t = 0; t < 2; t++)
                {
                    var from = (long)head * headSize + 2 * i + t;
                    var to = (long)head * headSize + t * half + i;
                    Array.Copy(weight, from * cols, result, to * cols, cols);
                }
        return result;
    }

    /// <summary>config.json of an HF LlamaForCausalLM equivalent to <paramref name="c"/>.</summary>
    internal static string ConfigJson(Llama2cConfig c)
    {
        using var buffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            json.WriteStartObject();
            json.WriteStartArray("architectures");
            json.WriteStringValue("LlamaForCausalLM");
            json.WriteEndArray();
            json.WriteString("model_type", "llama");
            json.WriteNumber("hidden_size", c.Dim);
            json.WriteNumber("intermediate_size", c.HiddenDim);
            json.WriteNumber("num_hidden_layers", c.NLayers);
            json.WriteNumber("num_attention_heads", c.NHeads);
            json.WriteNumber("num_key_value_heads", c.NKvHeads);
            json.WriteNumber("head_dim", c.HeadSize);
            json.WriteNumber("vocab_size", c.VocabSize);
            json.WriteNumber("max_position_embeddings", c.SeqLen);
            // Written raw so they read as floats, the way transformers writes them (WriteNumber would give "1E-05" and "10000").
            json.WritePropertyName("rms_norm_eps");
            json.WriteRawValue("1e-05");
            json.WritePropertyName("rope_theta");
            json.WriteRawValue("10000.0");
            json.WriteBoolean("tie_word_embeddings", c.SharedClassifier);
            json.WriteNumber("bos_token_id", 1);
            json.WriteNumber("eos_token_id", 2);
            json.WriteString("hidden_act", "silu");
            json.WriteBoolean("attention_bias", false);
            json.WriteBoolean("mlp_bias", false);
            json.WriteString("torch_dtype", "float32");
            json.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray()) + "\n";
    }

    static void EnsureReplaceable(string target, bool overwrite)
    {
        if (File.Exists(target)) throw new IOException($"{target} is a file; the model needs a folder there");
        if (!overwrite && Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            throw new IOException($"{target} is not empty; pass overwrite: true to replace it");
    }

    static void Publish(string temp, string target, bool overwrite)
    {
        // Checked again: the folder may have been filled while the model was being converted.
        EnsureReplaceable(target, overwrite);
        if (!Directory.Exists(target))
        {
            Directory.Move(temp, target);
            return;
        }
        var aside = Path.Combine(Path.GetDirectoryName(target)!, $".{Path.GetFileName(target)}.{Guid.NewGuid():N}.old");
        Directory.Move(target, aside);
        Directory.Move(temp, target);
        Directory.Delete(aside, recursive: true);
    }
}
