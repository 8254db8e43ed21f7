using PromptEngine.Models;

namespace PromptEngine.Tests.Models;

public class TransformerConfigTests
{
    const string Llama = """
        { "architectures": ["LlamaForCausalLM"], "hidden_size": 288, "intermediate_size": 768,
          "num_hidden_layers": 6, "num_attention_heads": 6, "num_key_value_heads": 6, "vocab_size": 32000,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
          "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2, "hidden_act": "silu" }
        """;

    [Test]
    public void ParsesLlama()
    {
        var c = TransformerConfig.Parse(Llama, "config.json");
        Assert.Multiple(() =>
        {
            Assert.That(c.Family, Is.EqualTo(ModelFamily.Llama));
            Assert.That((c.HiddenSize, c.IntermediateSize, c.NumLayers, c.NumHeads, c.NumKvHeads, c.HeadDim), Is.EqualTo((288, 768, 6, 6, 6, 48)));
            Assert.That((c.VocabSize, c.MaxPositions), Is.EqualTo((32000, 256)));
            Assert.That(c.NormEps, Is.EqualTo(1e-5));
            Assert.That(c.RopeTheta, Is.EqualTo(10000.0));
            Assert.That(c.TieWordEmbeddings, Is.True);
            Assert.That(c.QkvBias, Is.False);
            Assert.That((c.BosTokenId, c.EosTokenId), Is.EqualTo(((int?)1, (int?)2)));
        });
    }

    [Test]
    public void ParsesMistralWithGqaAndSlidingWindow()
    {
        var c = TransformerConfig.Parse("""
            { "architectures": ["MistralForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 8, "num_key_value_heads": 2, "vocab_size": 100, "sliding_window": 4096, "rope_theta": 1000000.0 }
            """, "m.json");
        Assert.That((c.NumKvHeads, c.QueriesPerKvHead, c.HeadDim, c.SlidingWindow), Is.EqualTo((2, 4, 8, (int?)4096)));
        Assert.That(c.NormEps, Is.EqualTo(1e-6), "Hugging Face's default rms_norm_eps");
        Assert.That(c.TieWordEmbeddings, Is.False);
    }

    [Test]
    public void Qwen2HasQkvBiasAndHonoursUseSlidingWindowFalse()
    {
        var c = TransformerConfig.Parse("""
            { "architectures": ["Qwen2ForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 100, "sliding_window": 32768,
              "use_sliding_window": false, "tie_word_embeddings": true }
            """, "q.json");
        Assert.That(c.QkvBias, Is.True);
        Assert.That(c.SlidingWindow, Is.Null);
    }

    [Test]
    public void ParsesGpt2WithDefaults()
    {
        var c = TransformerConfig.Parse("""
            { "architectures": ["GPT2LMHeadModel"], "n_embd": 768, "n_layer": 12, "n_head": 12, "n_positions": 1024,
              "vocab_size": 50257, "layer_norm_epsilon": 1e-05, "n_inner": null, "activation_function": "gelu_new" }
            """, "g.json");
        Assert.Multiple(() =>
        {
            Assert.That(c.Family, Is.EqualTo(ModelFamily.Gpt2));
            Assert.That((c.IntermediateSize, c.HeadDim, c.NumKvHeads, c.MaxPositions), Is.EqualTo((3072, 64, 12, 1024)));
            Assert.That(c.TieWordEmbeddings, Is.True);
            Assert.That(c.QkvBias, Is.True);
            Assert.That(c.RopeTheta, Is.EqualTo(0));
        });
    }

    static ModelConfigException Fails(string json) =>
        Assert.Throws<ModelConfigException>(() => TransformerConfig.Parse(json, "/models/x/config.json"))!;

    [Test]
    public void MissingFieldIsNamed()
    {
        var e = Fails(Llama.Replace("\"intermediate_size\": 768,", ""));
        Assert.That(e.Field, Is.EqualTo("intermediate_size"));
        Assert.That(e.Message, Does.Contain("/models/x/config.json").And.Contain("intermediate_size"));
    }

    [Test]
    public void WrongTypeIsNamed()
    {
        var e = Fails(Llama.Replace("\"hidden_size\": 288", "\"hidden_size\": \"288\""));
        Assert.That(e.Field, Is.EqualTo("hidden_size"));
        Assert.That(e.Message, Does.Contain("expected an integer"));
    }

    [Test]
    public void UnsupportedArchitectureIsNamed()
    {
        var e = Fails(Llama.Replace("LlamaForCausalLM", "BertModel"));
        Assert.That(e.Message, Does.Contain("BertModel").And.Contain("LlamaForCausalLM"));
    }

    [Test]
    public void KvHeadsMustDivideHeads()
    {
        var e = Fails(Llama.Replace("\"num_key_value_heads\": 6", "\"num_key_value_heads\": 4"));
        Assert.That(e.Field, Is.EqualTo("num_key_value_heads"));
    }

    [Test]
    public void RopeScalingIsRefusedRatherThanComputedWrongly()
    {
        var e = Fails(Llama.Replace("\"rope_theta\": 10000.0", "\"rope_theta\": 10000.0, \"rope_scaling\": {\"type\": \"llama3\"}"));
        Assert.That(e.Field, Is.EqualTo("rope_scaling"));
    }

    [Test]
    public void InvalidJsonAndNonPositiveSizesAreRejected()
    {
        Assert.That(Fails("{ \"architectures\": [").Message, Does.Contain("not valid JSON"));
        Assert.That(Fails(Llama.Replace("\"num_hidden_layers\": 6", "\"num_hidden_layers\": 0")).Field, Is.EqualTo("num_hidden_layers"));
        Assert.That(Fails(Llama.Replace("\"bos_token_id\": 1", "\"bos_token_id\": 32000")).Field, Is.EqualTo("bos_token_id"));
        Assert.That(Fails(Llama.Replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"relu\"")).Field, Is.EqualTo("hidden_act"));
    }

    [Test]
    public void LoadNamesAMissingFile()
    {
        var e = Assert.Throws<ModelConfigException>(() => TransformerConfig.Load("/nonexistent/config.json"))!;
        Assert.That(e.Message, Does.Contain("/nonexistent/config.json"));
    }
}
