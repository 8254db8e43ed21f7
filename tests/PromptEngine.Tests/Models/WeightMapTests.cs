using PromptEngine.Models;

namespace PromptEngine.Tests.Models;

public class WeightMapTests
{
    static TransformerConfig TinyLlama(bool gqa = true, bool tied = false, string arch = "LlamaForCausalLM") => TransformerConfig.Parse($$"""
        { "architectures": ["{{arch}}"], "hidden_size": 16, "intermediate_size": 40, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": {{(gqa ? 2 : 4)}}, "vocab_size": 50, "tie_word_embeddings": {{(tied ? "true" : "false")}} }
        """, "config.json");

    static TransformerConfig TinyGpt2() => TransformerConfig.Parse("""
        { "architectures": ["GPT2LMHeadModel"], "n_embd": 16, "n_layer": 2, "n_head": 4, "n_positions": 32, "vocab_size": 50 }
        """, "config.json");

    static Dictionary<string, long[]> Shapes(WeightMap map) => map.Weights.ToDictionary(w => w.Name, w => (long[])w.Shape.Clone());

    [Test]
    public void LlamaMapHasGqaShapes()
    {
        var map = WeightMap.For(TinyLlama());
        Assert.That(map.Get(WeightRole.Query, 1).Shape, Is.EqualTo(new long[] { 16, 16 }));
        Assert.That(map.Get(WeightRole.Key, 1).Shape, Is.EqualTo(new long[] { 8, 16 }));
        Assert.That(map.Get(WeightRole.MlpDown, 0).Shape, Is.EqualTo(new long[] { 16, 40 }));
        Assert.That(map.Get(WeightRole.LmHead).Name, Is.EqualTo("lm_head.weight"));
        // 1 embedding + 2 layers × 9 + final norm + head.
        Assert.That(map.Weights, Has.Count.EqualTo(1 + 2 * 9 + 2));
    }

    [Test]
    public void TiedModelsHaveNoHeadAndQwenHasBiases()
    {
        Assert.That(WeightMap.For(TinyLlama(tied: true)).Weights.Any(w => w.Role == WeightRole.LmHead), Is.False);
        var qwen = WeightMap.For(TinyLlama(arch: "Qwen2ForCausalLM"));
        Assert.That(qwen.Get(WeightRole.KeyBias, 0).Shape, Is.EqualTo(new long[] { 8 }));
    }

    [Test]
    public void ValidateAcceptsExactSetAndIgnorableBuffers()
    {
        var config = TinyLlama();
        var shapes = Shapes(WeightMap.For(config));
        shapes["model.layers.0.self_attn.rotary_emb.inv_freq"] = [2];
        Assert.DoesNotThrow(() => WeightMap.Validate(config, shapes, "tiny"));
    }

    [Test]
    public void ValidateReportsEveryProblemAtOnceWithConfigFields()
    {
        var config = TinyLlama();
        var shapes = Shapes(WeightMap.For(config));
        shapes.Remove("model.layers.1.mlp.up_proj.weight");
        shapes.Remove("model.norm.weight");
        shapes["model.layers.0.self_attn.k_proj.weight"] = [16, 16]; // as if num_key_value_heads were 4
        shapes["model.layers.0.self_attn.extra.weight"] = [3];
        var e = Assert.Throws<WeightMismatchException>(() => WeightMap.Validate(config, shapes, "/m/tiny"))!;
        Assert.That(e.Problems, Has.Count.EqualTo(4));
        Assert.That(e.Message, Does.Contain("/m/tiny"));
        Assert.That(e.Problems, Has.Some.Contains("'model.layers.0.self_attn.k_proj.weight' has shape [16, 16], expected [8, 16]")
            .And.Some.Contains("num_key_value_heads·head_dim"));
        Assert.That(e.Problems, Has.Some.Contains("missing tensor 'model.layers.1.mlp.up_proj.weight'"));
        Assert.That(e.Problems, Has.Some.Contains("missing tensor 'model.norm.weight'"));
        Assert.That(e.Problems, Has.Some.Contains("unexpected tensor 'model.layers.0.self_attn.extra.weight'"));
    }

    [Test]
    public void Gpt2AcceptsBothPrefixesAndConv1DLayout()
    {
        var config = TinyGpt2();
        var plain = Shapes(WeightMap.For(config));
        Assert.That(plain["h.0.attn.c_attn.weight"], Is.EqualTo(new long[] { 16, 48 }));
        Assert.That(WeightMap.For(config).Get(WeightRole.QkvFused, 0).StoredTransposed, Is.True);
        plain["h.0.attn.bias"] = [1, 1, 32, 32];
        Assert.That(WeightMap.Validate(config, plain, "g").NamePrefix, Is.EqualTo(""));
        var prefixed = Shapes(WeightMap.For(config, "transformer."));
        prefixed["lm_head.weight"] = [50, 16]; // tied head stored anyway
        Assert.That(WeightMap.Validate(config, prefixed, "g").NamePrefix, Is.EqualTo("transformer."));
    }

    [Test]
    public void TiedHeadWithWrongShapeIsUnexpected()
    {
        var config = TinyGpt2();
        var shapes = Shapes(WeightMap.For(config));
        shapes["lm_head.weight"] = [49, 16];
        var e = Assert.Throws<WeightMismatchException>(() => WeightMap.Validate(config, shapes, "g"))!;
        Assert.That(e.Problems.Single(), Does.Contain("lm_head.weight"));
    }
}
