using System.Buffers.Binary;
using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using PromptEngine.Import;

namespace PromptEngine.Tests.Assets;

/// <summary>Reads back a safetensors file without the library's reader, so that a bug shared by the importer and the reader cannot hide itself.</summary>
static class SafetensorsReadBack
{
    public sealed record Tensor(string DType, long[] Shape, byte[] Bytes)
    {
        public float[] Floats => MemoryMarshal.Cast<byte, float>(Bytes).ToArray();
    }

    public static (Dictionary<string, Tensor> Tensors, Dictionary<string, string> Metadata) Read(string path)
    {
        var bytes = File.ReadAllBytes(path);
        var headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        using var header = JsonDocument.Parse(bytes.AsMemory(8, headerLength));
        var tensors = new Dictionary<string, Tensor>();
        var metadata = new Dictionary<string, string>();
        foreach (var property in header.RootElement.EnumerateObject())
        {
            if (property.Name == "__metadata__")
            {
                foreach (var m in property.Value.EnumerateObject()) metadata[m.Name] = m.Value.GetString()!;
                continue;
            }
            var offsets = property.Value.GetProperty("data_offsets").EnumerateArray().Select(e => e.GetInt64()).ToArray();
            var start = 8 + headerLength + offsets[0];
            tensors[property.Name] = new Tensor(
                property.Value.GetProperty("dtype").GetString()!,
                property.Value.GetProperty("shape").EnumerateArray().Select(e => e.GetInt64()).ToArray(),
                bytes[(int)start..(int)(start + offsets[1] - offsets[0])]);
        }
        return (tensors, metadata);
    }
}

public class Llama2cImportTests
{
    string scratch = "";

    [SetUp]
    public void SetUp() => scratch = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-import-{Guid.NewGuid():N}")).FullName;

    [TearDown]
    public void TearDown()
    {
        if (Directory.Exists(scratch)) Directory.Delete(scratch, recursive: true);
    }

    /// <summary>A random model in llama2.c's legacy layout, written plainly from the format's description,
    /// with each tensor kept for comparison. Matrices are (out, in) row-major.</summary>
    sealed class SyntheticModel
    {
        public int Dim, Hidden, Layers, Heads, KvHeads, Vocab, SeqLen;
        public bool Tied;
        public int HeadSize => Dim / Heads;
        public float[] Embedding = [], RmsFinal = [], FreqReal = [], FreqImag = [];
        public float[]? Wcls;
        public float[][] RmsAtt = [], Wq = [], Wk = [], Wv = [], Wo = [], RmsFfn = [], W1 = [], W2 = [], W3 = [];

        public static SyntheticModel Make(int dim, int hidden, int layers, int heads, int kvHeads, int vocab, int seqLen, bool tied, int seed)
        {
            var random = new Random(seed);
            float[] R(long n) => Enumerable.Range(0, (int)n).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray();
            var m = new SyntheticModel { Dim = dim, Hidden = hidden, Layers = layers, Heads = heads, KvHeads = kvHeads, Vocab = vocab, SeqLen = seqLen, Tied = tied };
            int hs = dim / heads, kv = kvHeads * hs;
            float[][] L(long n) => Enumerable.Range(0, layers).Select(_ => R(n)).ToArray();
            m.Embedding = R(vocab * dim);
            m.RmsAtt = L(dim);
            m.Wq = L(heads * hs * dim);
            m.Wk = L(kv * dim);
            m.Wv = L(kv * dim);
            m.Wo = L(dim * heads * hs);
            m.RmsFfn = L(dim);
            m.W1 = L(hidden * dim);
            m.W2 = L(dim * hidden);
            m.W3 = L(hidden * dim);
            m.RmsFinal = R(dim);
            m.FreqReal = R(seqLen * hs / 2);
            m.FreqImag = R(seqLen * hs / 2);
            m.Wcls = tied ? null : R(vocab * dim);
            return m;
        }

        public void Write(string path, int? vocabInHeader = null)
        {
            using var file = new BinaryWriter(File.Create(path));
            foreach (var v in new[] { Dim, Hidden, Layers, Heads, KvHeads, vocabInHeader ?? (Tied ? Vocab : -Vocab), SeqLen }) file.Write(v);
            void F(float[] values) { foreach (var v in values) file.Write(v); }
            F(Embedding);
            foreach (var group in new[] { RmsAtt, Wq, Wk, Wv, Wo, RmsFfn, W1, W2, W3 })
                foreach (var layer in group) F(layer);
            F(RmsFinal);
            F(FreqReal);
            F(FreqImag);
            if (Wcls is not null) F(Wcls);
        }
    }

    static byte[] Bytes(float[] values) => MemoryMarshal.AsBytes(values.AsSpan()).ToArray();

    /// <summary>y = W·x for W (rows, cols) row-major, in double.</summary>
    static double[] MatVec(float[] w, int rows, int cols, double[] x)
    {
        var y = new double[rows];
        for (var r = 0; r < rows; r++)
        {
            double s = 0;
            for (var c = 0; c < cols; c++) s += w[r * cols + c] * x[c];
            y[r] = s;
        }
        return y;
    }

    /// <summary>llama2.c's RoPE (run.c): over the whole vector, pairs (i, i+1) with i even, frequency
    /// 10000^(-(i mod head_size)/head_size).</summary>
    static double[] RopeInterleaved(double[] v, int headSize, int pos)
    {
        var o = (double[])v.Clone();
        for (var i = 0; i < v.Length; i += 2)
        {
            var headDim = i % headSize;
            var angle = pos * (1.0 / Math.Pow(10000.0, headDim / (double)headSize));
            double c = Math.Cos(angle), s = Math.Sin(angle);
            o[i] = v[i] * c - v[i + 1] * s;
            o[i + 1] = v[i] * s + v[i + 1] * c;
        }
        return o;
    }

    /// <summary>HF Llama's RoPE: per head, x·cos + rotate_half(x)·sin, inv_freq_j = 10000^(-2j/head_size),
    /// cos and sin repeated over both halves, rotate_half(x) = (-x2, x1).</summary>
    static double[] RopeRotateHalf(double[] v, int headSize, int pos)
    {
        var o = new double[v.Length];
        var half = headSize / 2;
        for (var head = 0; head < v.Length / headSize; head++)
        {
            var b = head * headSize;
            for (var k = 0; k < headSize; k++)
            {
                var j = k % half;
                var angle = pos * (1.0 / Math.Pow(10000.0, 2 * j / (double)headSize));
                var rotated = k < half ? -v[b + k + half] : v[b + k - half];
                o[b + k] = v[b + k] * Math.Cos(angle) + rotated * Math.Sin(angle);
            }
        }
        return o;
    }

    [TestCase(true)]
    [TestCase(false)]
    public void ImportedModelComputesTheSameAttentionScoresAndCopiesTheRestExactly(bool tied)
    {
        // Grouped-query attention (4 query heads over 2 kv heads) so k_proj's permutation is per kv head.
        var m = SyntheticModel.Make(dim: 32, hidden: 40, layers: 2, heads: 4, kvHeads: 2, vocab: 11, seqLen: 9, tied, seed: tied ? 5 : 6);
        var bin = Path.Combine(scratch, "model.bin");
        m.Write(bin);
        var outDir = Path.Combine(scratch, "hf");

        var result = Llama2cImporter.ImportModel(bin, outDir);

        var (tensors, metadata) = SafetensorsReadBack.Read(Path.Combine(outDir, "model.safetensors"));
        Assert.That(metadata["format"], Is.EqualTo("pt"));
        Assert.That(tensors, Has.Count.EqualTo(2 + 9 * m.Layers + (tied ? 0 : 1)));
        Assert.That(result.TensorCount, Is.EqualTo(tensors.Count));
        Assert.That(result.ParameterCount, Is.EqualTo(tensors.Values.Sum(t => t.Bytes.Length / 4)));
        Assert.That(tensors.Values.Select(t => t.DType).Distinct(), Is.EqualTo(new[] { "F32" }));

        int hs = m.HeadSize, kvDim = m.KvHeads * hs, qDim = m.Heads * hs, group = m.Heads / m.KvHeads;
        void Exact(string name, long[] shape, float[] expected)
        {
            Assert.That(tensors.ContainsKey(name), $"missing {name}");
            Assert.That(tensors[name].Shape, Is.EqualTo(shape), name);
            Assert.That(tensors[name].Bytes, Is.EqualTo(Bytes(expected)), $"{name} must be copied bit for bit");
        }
        Exact("model.embed_tokens.weight", [m.Vocab, m.Dim], m.Embedding);
        Exact("model.norm.weight", [m.Dim], m.RmsFinal);
        if (tied) Assert.That(tensors.ContainsKey("lm_head.weight"), Is.False);
        else Exact("lm_head.weight", [m.Vocab, m.Dim], m.Wcls!);

        var random = new Random(42);
        int[] positions = [0, 1, 2, 5, 8];
        var maxRelative = 0.0;
        for (var l = 0; l < m.Layers; l++)
        {
            var p = $"model.layers.{l}.";
            Exact(p + "input_layernorm.weight", [m.Dim], m.RmsAtt[l]);
            Exact(p + "self_attn.v_proj.weight", [kvDim, m.Dim], m.Wv[l]);
            Exact(p + "self_attn.o_proj.weight", [m.Dim, qDim], m.Wo[l]);
            Exact(p + "post_attention_layernorm.weight", [m.Dim], m.RmsFfn[l]);
            Exact(p + "mlp.gate_proj.weight", [m.Hidden, m.Dim], m.W1[l]);
            Exact(p + "mlp.down_proj.weight", [m.Dim, m.Hidden], m.W2[l]);
            Exact(p + "mlp.up_proj.weight", [m.Hidden, m.Dim], m.W3[l]);
            var qProj = tensors[p + "self_attn.q_proj.weight"];
            var kProj = tensors[p + "self_attn.k_proj.weight"];
            Assert.That(qProj.Shape, Is.EqualTo(new long[] { qDim, m.Dim }));
            Assert.That(kProj.Shape, Is.EqualTo(new long[] { kvDim, m.Dim }));

            var xs = positions.Select(_ => Enumerable.Range(0, m.Dim).Select(_ => random.NextDouble() * 2 - 1).ToArray()).ToArray();
            var qLlama = new double[positions.Length][];
            var kLlama = new double[positions.Length][];
            var qHf = new double[positions.Length][];
            var kHf = new double[positions.Length][];
            for (var i = 0; i < positions.Length; i++)
            {
                qLlama[i] = RopeInterleaved(MatVec(m.Wq[l], qDim, m.Dim, xs[i]), hs, positions[i]);
                kLlama[i] = RopeInterleaved(MatVec(m.Wk[l], kvDim, m.Dim, xs[i]), hs, positions[i]);
                qHf[i] = RopeRotateHalf(MatVec(qProj.Floats, qDim, m.Dim, xs[i]), hs, positions[i]);
                kHf[i] = RopeRotateHalf(MatVec(kProj.Floats, kvDim, m.Dim, xs[i]), hs, positions[i]);

                // The rotated vectors are the same numbers, reordered: HF index t·hs/2 + j holds llama2.c's 2j + t.
                for (var head = 0; head < m.Heads; head++)
                    for (var j = 0; j < hs / 2; j++)
                        for (var t = 0; t < 2; t++)
                        {
                            var hf = qHf[i][head * hs + t * hs / 2 + j];
                            var ll = qLlama[i][head * hs + 2 * j + t];
                            Assert.That(hf, Is.EqualTo(ll).Within(1e-12 * Math.Abs(ll) + 1e-15), $"layer {l} q head {head} pair {j}.{t} pos {positions[i]}");
                            if (head < m.KvHeads)
                                Assert.That(kHf[i][head * hs + t * hs / 2 + j], Is.EqualTo(kLlama[i][head * hs + 2 * j + t]).Within(1e-12 * Math.Abs(kLlama[i][head * hs + 2 * j + t]) + 1e-15));
                        }
            }

            // Attention logits q(pos a)·k(pos b) per head: equal to 1e-9 relative (the sums run in a
            // different order; 1e-14 absolute only guards values that cancel to ~0).
            for (var head = 0; head < m.Heads; head++)
            {
                var kvHead = head / group;
                for (var a = 0; a < positions.Length; a++)
                    for (var b = 0; b <= a; b++)
                    {
                        double sLlama = 0, sHf = 0;
                        for (var k = 0; k < hs; k++)
                        {
                            sLlama += qLlama[a][head * hs + k] * kLlama[b][kvHead * hs + k];
                            sHf += qHf[a][head * hs + k] * kHf[b][kvHead * hs + k];
                        }
                        Assert.That(sHf, Is.EqualTo(sLlama).Within(1e-9 * Math.Abs(sLlama) + 1e-14), $"layer {l} head {head} positions {positions[a]},{positions[b]}");
                        maxRelative = Math.Max(maxRelative, Math.Abs(sHf - sLlama) / Math.Max(Math.Abs(sLlama), 1e-300));
                    }
            }
        }
        TestContext.Out.WriteLine($"max relative attention-score difference: {maxRelative:E2}");

        using var config = JsonDocument.Parse(File.ReadAllText(Path.Combine(outDir, "config.json")));
        var root = config.RootElement;
        Assert.That(root.GetProperty("architectures")[0].GetString(), Is.EqualTo("LlamaForCausalLM"));
        Assert.That(root.GetProperty("model_type").GetString(), Is.EqualTo("llama"));
        Assert.That(root.GetProperty("hidden_size").GetInt32(), Is.EqualTo(32));
        Assert.That(root.GetProperty("intermediate_size").GetInt32(), Is.EqualTo(40));
        Assert.That(root.GetProperty("num_hidden_layers").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("num_attention_heads").GetInt32(), Is.EqualTo(4));
        Assert.That(root.GetProperty("num_key_value_heads").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("vocab_size").GetInt32(), Is.EqualTo(11));
        Assert.That(root.GetProperty("max_position_embeddings").GetInt32(), Is.EqualTo(9));
        Assert.That(root.GetProperty("rms_norm_eps").GetDouble(), Is.EqualTo(1e-5));
        Assert.That(root.GetProperty("rope_theta").GetDouble(), Is.EqualTo(10000.0));
        Assert.That(root.GetProperty("tie_word_embeddings").GetBoolean(), Is.EqualTo(tied));
        Assert.That(root.GetProperty("bos_token_id").GetInt32(), Is.EqualTo(1));
        Assert.That(root.GetProperty("eos_token_id").GetInt32(), Is.EqualTo(2));
        Assert.That(root.GetProperty("hidden_act").GetString(), Is.EqualTo("silu"));
        Assert.That(root.GetProperty("torch_dtype").GetString(), Is.EqualTo("float32"));
        Assert.That(Directory.GetFileSystemEntries(scratch).Select(Path.GetFileName), Is.EquivalentTo(new[] { "model.bin", "hf" }), "no temp folders left");
    }

    [Test]
    public void ReaderReturnsTheTensorsItWasGiven()
    {
        var m = SyntheticModel.Make(dim: 16, hidden: 24, layers: 3, heads: 2, kvHeads: 1, vocab: 7, seqLen: 5, tied: false, seed: 9);
        var bin = Path.Combine(scratch, "model.bin");
        m.Write(bin);
        var model = Llama2cModel.Read(bin);
        Assert.That(model.Config, Is.EqualTo(new Llama2cConfig(16, 24, 3, 2, 1, 7, 5, SharedClassifier: false)));
        Assert.That(model.Config.FileSize, Is.EqualTo(new FileInfo(bin).Length));
        Assert.That(model.TokenEmbedding, Is.EqualTo(m.Embedding));
        Assert.That(model.Wq[2], Is.EqualTo(m.Wq[2]));
        Assert.That(model.Wk[1], Is.EqualTo(m.Wk[1]));
        Assert.That(model.W2[0], Is.EqualTo(m.W2[0]));
        Assert.That(model.RmsFinal, Is.EqualTo(m.RmsFinal));
        Assert.That(model.Wcls, Is.EqualTo(m.Wcls), "the classifier comes after the skipped RoPE tables");
    }

    [TestCase(1, "implies exactly")]
    [TestCase(-1, "implies exactly")]
    [TestCase(-4, "implies exactly")]
    public void WrongFileSizeNamesFileExpectedAndActual(int delta, string expectedText)
    {
        var m = SyntheticModel.Make(dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 2, vocab: 5, seqLen: 3, tied: true, seed: 1);
        var bin = Path.Combine(scratch, "model.bin");
        m.Write(bin);
        var expected = new FileInfo(bin).Length;
        using (var f = new FileStream(bin, FileMode.Open)) f.SetLength(expected + delta);

        var e = Assert.Throws<Llama2cFormatException>(() => Llama2cModel.Read(bin))!;
        Assert.That(e.File, Is.EqualTo(bin));
        Assert.That(e.Message, Does.Contain(bin).And.Contain(expectedText).And.Contain($"{expected:N0}").And.Contain($"{expected + delta:N0}"));
    }

    [Test]
    public void UntiedHeaderOnATiedFileIsASizeError()
    {
        var m = SyntheticModel.Make(dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 2, vocab: 5, seqLen: 3, tied: true, seed: 1);
        var bin = Path.Combine(scratch, "model.bin");
        m.Write(bin, vocabInHeader: -5);
        Assert.That(() => Llama2cModel.ReadConfig(bin), Throws.TypeOf<Llama2cFormatException>().With.Message.Contains("untied"));
    }

    [TestCase(0, 12, 1, 2, 2, 5, 3, "dim = 0")]
    [TestCase(8, -12, 1, 2, 2, 5, 3, "hidden_dim = -12")]
    [TestCase(8, 12, 0, 2, 2, 5, 3, "n_layers = 0")]
    [TestCase(8, 12, 1, 3, 3, 5, 3, "not a multiple of n_heads")]
    [TestCase(6, 12, 1, 2, 2, 5, 3, "must be even")]
    [TestCase(8, 12, 1, 2, 3, 5, 3, "n_kv_heads = 3")]
    [TestCase(16, 12, 1, 4, 3, 5, 3, "n_kv_heads = 3")]
    [TestCase(8, 12, 1, 2, 2, 0, 3, "vocab_size = 0")]
    [TestCase(8, 12, 1, 2, 2, 5, 0, "seq_len = 0")]
    [TestCase(int.MaxValue - 1, int.MaxValue, int.MaxValue, 1, 1, int.MaxValue, 2, "larger than any file")]
    public void InvalidHeaderIsRejectedWithTheFieldNamed(int dim, int hidden, int layers, int heads, int kv, int vocab, int seq, string expected)
    {
        var bin = Path.Combine(scratch, "model.bin");
        using (var w = new BinaryWriter(File.Create(bin)))
        {
            foreach (var v in new[] { dim, hidden, layers, heads, kv, vocab, seq }) w.Write(v);
            w.Write(new byte[64]);
        }
        var e = Assert.Throws<Llama2cFormatException>(() => Llama2cModel.ReadConfig(bin))!;
        Assert.That(e.Message, Does.Contain(bin).And.Contain(expected));
    }

    [Test]
    public void ShortFileIsRejected()
    {
        var bin = Path.Combine(scratch, "model.bin");
        File.WriteAllBytes(bin, new byte[27]);
        Assert.That(() => Llama2cModel.Read(bin), Throws.TypeOf<Llama2cFormatException>().With.Message.Contains("27 bytes"));
    }

    [Test]
    public void RefusesNonEmptyFolderUnlessOverwriting()
    {
        var m = SyntheticModel.Make(dim: 8, hidden: 12, layers: 1, heads: 2, kvHeads: 2, vocab: 5, seqLen: 3, tied: true, seed: 1);
        var bin = Path.Combine(scratch, "model.bin");
        m.Write(bin);
        var outDir = Path.Combine(scratch, "hf");
        Directory.CreateDirectory(outDir);
        Llama2cImporter.ImportModel(bin, outDir); // an empty folder is fine
        File.WriteAllText(Path.Combine(outDir, "keep.txt"), "mine");

        var e = Assert.Throws<IOException>(() => Llama2cImporter.ImportModel(bin, outDir))!;
        Assert.That(e.Message, Does.Contain(outDir).And.Contain("overwrite"));
        Assert.That(File.Exists(Path.Combine(outDir, "keep.txt")));

        Llama2cImporter.ImportModel(bin, outDir, overwrite: true);
        Assert.That(Directory.GetFiles(outDir).Select(Path.GetFileName), Is.EquivalentTo(new[] { "config.json", "model.safetensors" }));
        Assert.That(Directory.GetFileSystemEntries(scratch).Select(Path.GetFileName), Is.EquivalentTo(new[] { "model.bin", "hf" }));
    }

    [Test]
    public void BadModelLeavesNoOutputFolder()
    {
        var bin = Path.Combine(scratch, "model.bin");
        File.WriteAllBytes(bin, new byte[100]);
        Assert.Throws<Llama2cFormatException>(() => Llama2cImporter.ImportModel(bin, Path.Combine(scratch, "hf")));
        Assert.That(Directory.GetFileSystemEntries(scratch).Select(Path.GetFileName), Is.EqualTo(new[] { "model.bin" }));
    }

    [Test]
    public void ImportsRealStories15M()
    {
        var clock = Stopwatch.StartNew();
        var result = Llama2cImporter.ImportModel(TestAssets.Llama2cModelBin, Path.Combine(scratch, "stories15M"));
        var seconds = clock.Elapsed.TotalSeconds;

        Assert.That(result.Config, Is.EqualTo(new Llama2cConfig(288, 768, 6, 6, 6, 32000, 256, SharedClassifier: true)));
        var (tensors, _) = SafetensorsReadBack.Read(Path.Combine(result.OutDir, "model.safetensors"));
        Assert.That(tensors, Has.Count.EqualTo(2 + 9 * 6));
        Assert.That(result.TensorCount, Is.EqualTo(56));
        Assert.That(tensors["model.embed_tokens.weight"].Shape, Is.EqualTo(new long[] { 32000, 288 }));
        Assert.That(tensors["model.layers.5.self_attn.q_proj.weight"].Shape, Is.EqualTo(new long[] { 288, 288 }));
        Assert.That(tensors["model.layers.5.mlp.gate_proj.weight"].Shape, Is.EqualTo(new long[] { 768, 288 }));
        Assert.That(tensors["model.layers.5.mlp.down_proj.weight"].Shape, Is.EqualTo(new long[] { 288, 768 }));
        Assert.That(tensors.ContainsKey("lm_head.weight"), Is.False);
        long parameters = tensors.Values.Sum(t => t.Shape.Aggregate(1L, (a, b) => a * b));
        // 32000·288 + 6·(2·288 + 4·288² + 3·768·288) + 288, computed by hand from the architecture.
        Assert.That(parameters, Is.EqualTo(15_191_712));
        Assert.That(result.ParameterCount, Is.EqualTo(parameters));
        TestContext.Out.WriteLine($"stories15M: {result.TensorCount} tensors, {parameters:N0} parameters, imported in {seconds:F2} s");

        // The real weights through both RoPE conventions: same attention logits (1e-9 relative + 1e-12).
        var source = Llama2cModel.Read(TestAssets.Llama2cModelBin);
        var random = new Random(11);
        foreach (var layer in new[] { 0, 5 })
        {
            var wq = tensors[$"model.layers.{layer}.self_attn.q_proj.weight"].Floats;
            var wk = tensors[$"model.layers.{layer}.self_attn.k_proj.weight"].Floats;
            var x = Enumerable.Range(0, 288).Select(_ => random.NextDouble() * 2 - 1).ToArray();
            var y = Enumerable.Range(0, 288).Select(_ => random.NextDouble() * 2 - 1).ToArray();
            var qLlama = RopeInterleaved(MatVec(source.Wq[layer], 288, 288, x), 48, 200);
            var kLlama = RopeInterleaved(MatVec(source.Wk[layer], 288, 288, y), 48, 37);
            var qHf = RopeRotateHalf(MatVec(wq, 288, 288, x), 48, 200);
            var kHf = RopeRotateHalf(MatVec(wk, 288, 288, y), 48, 37);
            for (var head = 0; head < 6; head++)
            {
                double sLlama = 0, sHf = 0;
                for (var k = 0; k < 48; k++)
                {
                    sLlama += qLlama[head * 48 + k] * kLlama[head * 48 + k];
                    sHf += qHf[head * 48 + k] * kHf[head * 48 + k];
                }
                Assert.That(sHf, Is.EqualTo(sLlama).Within(1e-9 * Math.Abs(sLlama) + 1e-12), $"layer {layer} head {head}");
            }
        }
    }
}
