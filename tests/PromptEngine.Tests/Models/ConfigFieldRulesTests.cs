using System.Text.Json.Nodes;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Models;

/// <summary>Every field of a supported family's config class either changes the computation or is refused when not at its
/// default (issue 16, items 19-21). The field lists are the config classes' own, read from huggingface/transformers:
/// LlamaConfig, MistralConfig and Qwen2Config at main (commit 008e5743 / 001f85b3; rope_parameters replaced rope_theta and
/// rope_scaling there, so both spellings are listed), GPT2Config at 01ae98ae, and PretrainedConfig's fields that saved
/// configs carry.</summary>
public class ConfigFieldRulesTests
{
    static readonly string[] PretrainedConfigFields =
    [
        "architectures", "model_type", "transformers_version", "torch_dtype", "dtype", "_name_or_path", "is_encoder_decoder", "is_decoder",
        "add_cross_attention", "tie_encoder_decoder", "cross_attention_hidden_size", "pruned_heads", "chunk_size_feed_forward",
        "output_hidden_states", "output_attentions", "return_dict", "torchscript", "use_bfloat16", "tf_legacy_loss", "id2label",
        "label2id", "problem_type", "finetuning_task", "tokenizer_class", "prefix", "pad_token_id", "sep_token_id",
        "decoder_start_token_id", "task_specific_params", "tie_word_embeddings", "bos_token_id", "eos_token_id", "quantization_config",
    ];

    static readonly Dictionary<string, string[]> ClassFields = new()
    {
        ["LlamaForCausalLM"] =
        [
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache", "pad_token_id", "bos_token_id",
            "eos_token_id", "pretraining_tp", "tie_word_embeddings", "rope_parameters", "rope_theta", "rope_scaling", "attention_bias",
            "attention_dropout", "mlp_bias", "head_dim",
        ],
        ["MistralForCausalLM"] =
        [
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "head_dim", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache", "pad_token_id",
            "bos_token_id", "eos_token_id", "tie_word_embeddings", "rope_parameters", "rope_theta", "rope_scaling", "sliding_window",
            "attention_dropout",
        ],
        ["Qwen2ForCausalLM"] =
        [
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
            "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "use_cache", "tie_word_embeddings",
            "rope_parameters", "rope_theta", "rope_scaling", "use_sliding_window", "sliding_window", "max_window_layers", "layer_types",
            "attention_dropout", "pad_token_id", "bos_token_id", "eos_token_id",
        ],
        ["GPT2LMHeadModel"] =
        [
            "vocab_size", "n_positions", "n_embd", "n_layer", "n_head", "n_inner", "activation_function", "resid_pdrop", "embd_pdrop",
            "attn_pdrop", "layer_norm_epsilon", "initializer_range", "summary_type", "summary_use_proj", "summary_activation",
            "summary_proj_to_labels", "summary_first_dropout", "scale_attn_weights", "use_cache", "bos_token_id", "eos_token_id",
            "scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn",
        ],
    };

    static string Base(string architecture) => architecture switch
    {
        "GPT2LMHeadModel" => """
            { "architectures": ["GPT2LMHeadModel"], "n_embd": 16, "n_head": 2, "n_layer": 2, "vocab_size": 41, "n_positions": 32 }
            """,
        _ => $$"""
            { "architectures": ["{{architecture}}"], "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 37, "max_position_embeddings": 64 }
            """,
    };

    public static IEnumerable<TestCaseData> Fields() =>
        ClassFields.SelectMany(kv => kv.Value.Concat(PretrainedConfigFields).Distinct().Select(field => new TestCaseData(kv.Key, field).SetName($"{kv.Key}.{field}")));

    /// <summary>A value other than transformers' default, valid for the field's type.</summary>
    static JsonNode? Other(string architecture, string field) => field switch
    {
        "hidden_size" or "n_embd" => 32, "intermediate_size" or "n_inner" => 40, "num_hidden_layers" or "n_layer" => 3,
        "num_attention_heads" => 8, "n_head" => 4, "num_key_value_heads" => 4, "head_dim" => 8, "vocab_size" => 50,
        "max_position_embeddings" or "n_positions" => 48, "rms_norm_eps" or "layer_norm_epsilon" => 1e-3, "rope_theta" => 500.0,
        "rope_parameters" => new JsonObject { ["rope_type"] = "default", ["rope_theta"] = 500.0 },
        "bos_token_id" => 3, "eos_token_id" => 4, "tie_word_embeddings" => architecture != "GPT2LMHeadModel", // GPT-2 ties by default "attention_bias" => true, "sliding_window" => 8,
        "use_sliding_window" => true, "hidden_act" => "gelu", "activation_function" => "relu",
        "is_encoder_decoder" or "add_cross_attention" or "tie_encoder_decoder" or "mlp_bias" or "scale_attn_by_inverse_layer_idx" => true,
        "scale_attn_weights" => false, "cross_attention_hidden_size" => 16,
        "pruned_heads" => new JsonObject { ["0"] = new JsonArray(1) },
        "quantization_config" => new JsonObject { ["quant_method"] = "gptq", ["bits"] = 4 },
        "rope_scaling" => new JsonObject { ["rope_type"] = "linear", ["factor"] = 2.0 },
        "architectures" => null,
        _ => 123, // bookkeeping, dropout, other heads: any value
    };

    [TestCaseSource(nameof(Fields))]
    public void EveryConfigFieldChangesTheComputationOrIsRefused(string architecture, string field)
    {
        var use = ConfigFieldRules.Use(architecture, field);
        Assert.That(use, Is.Not.Null, $"{architecture}: config field '{field}' has no rule");
        if (field == "architectures") return;
        var baseline = JsonNode.Parse(Base(architecture))!.AsObject();
        // Qwen2's window exists only with use_sliding_window, as Qwen2Config has it.
        if (architecture == "Qwen2ForCausalLM" && field == "sliding_window") baseline["use_sliding_window"] = true;
        var changed = baseline.DeepClone().AsObject();
        changed[field] = Other(architecture, field);
        var before = TransformerConfig.Parse(baseline.ToJsonString(), "config.json");
        switch (use)
        {
            case ConfigFieldUse.OnlyDefault:
                var e = Assert.Throws<ModelConfigException>(() => TransformerConfig.Parse(changed.ToJsonString(), "config.json"))!;
                Assert.That(e.Field, Is.EqualTo(field));
                Assert.That(e.Message, Does.Contain("config.json").And.Contain("not supported"));
                break;
            case ConfigFieldUse.NoEffect:
                Assert.That(TransformerConfig.Parse(changed.ToJsonString(), "config.json"), Is.EqualTo(before), $"{field} must not change what is computed");
                break;
            default:
                ModelConfigException? refused = null;
                TransformerConfig? after = null;
                try { after = TransformerConfig.Parse(changed.ToJsonString(), "config.json"); }
                catch (ModelConfigException x) { refused = x; }
                // A computed field either changes the configuration or, at a value the engine cannot compute (GELU for Llama, ReLU for GPT-2), is refused by name.
                if (refused is not null) Assert.That(refused.Field, Is.EqualTo(field), refused.Message);
                else Assert.That(after, Is.Not.EqualTo(before), $"{field} is read but changes nothing");
                break;
        }
    }

    [Test]
    public void FieldsOfNoSupportedConfigClassAreIgnoredAsTransformersIgnoresThem()
    {
        Assert.That(ConfigFieldRules.Use("MistralForCausalLM", "attention_bias"), Is.Null, "MistralConfig has no attention_bias");
        var mistral = TransformerConfig.Parse(Base("MistralForCausalLM").Replace("\"vocab_size\"", "\"attention_bias\": true, \"vocab_size\""), "config.json");
        Assert.That((mistral.QkvBias, mistral.OutputBias), Is.EqualTo((false, false)));
        var qwen = TransformerConfig.Parse(Base("Qwen2ForCausalLM").Replace("\"vocab_size\"", "\"attention_bias\": true, \"vocab_size\""), "config.json");
        Assert.That((qwen.QkvBias, qwen.OutputBias), Is.EqualTo((true, false)), "Qwen2's bias is q/k/v only");
        var llama = TransformerConfig.Parse(Base("LlamaForCausalLM").Replace("\"vocab_size\"", "\"attention_bias\": true, \"vocab_size\""), "config.json");
        Assert.That((llama.QkvBias, llama.OutputBias), Is.EqualTo((true, true)), "transformers gives q, k, v and o a bias");
        Assert.That(WeightMap.For(llama).Weights.Select(w => w.Name), Does.Contain("model.layers.1.self_attn.o_proj.bias"));
    }

    [Test]
    public void Gpt2AttentionScalingOptionsAreRefused()
    {
        foreach (var (field, value) in new[] { ("scale_attn_by_inverse_layer_idx", "true"), ("scale_attn_weights", "false") })
        {
            var json = Base("GPT2LMHeadModel").Replace("\"vocab_size\"", $"\"{field}\": {value}, \"vocab_size\"");
            var e = Assert.Throws<ModelConfigException>(() => TransformerConfig.Parse(json, "/m/config.json"))!;
            Assert.That(e.Message, Does.Contain("/m/config.json").And.Contain(field));
        }
        Assert.That(TransformerConfig.Parse(Base("GPT2LMHeadModel").Replace("\"vocab_size\"", "\"scale_attn_weights\": true, \"vocab_size\""), "c").Family, Is.EqualTo(ModelFamily.Gpt2));
    }

    [Test]
    public void RopeParametersAsTransformers5WritesThem()
    {
        var plain = TransformerConfig.Parse(Base("LlamaForCausalLM").Replace("\"vocab_size\"", "\"rope_parameters\": {\"rope_type\": \"default\", \"rope_theta\": 500000.0}, \"vocab_size\""), "c");
        Assert.That(plain.RopeTheta, Is.EqualTo(500000.0), "not the 10000 default");
        var scaled = Base("LlamaForCausalLM").Replace("\"vocab_size\"", "\"rope_parameters\": {\"rope_type\": \"llama3\", \"rope_theta\": 500000.0, \"factor\": 8.0}, \"vocab_size\"");
        Assert.That(Assert.Throws<ModelConfigException>(() => TransformerConfig.Parse(scaled, "c"))!.Field, Is.EqualTo("rope_parameters"));
    }

    [Test]
    public void SlidingWindowBoundsTheContextAndLongerSequencesAreRefused()
    {
        var mistral = TransformerConfig.Parse(Base("MistralForCausalLM").Replace("\"vocab_size\"", "\"sliding_window\": 4, \"vocab_size\""), "c");
        Assert.That((mistral.SlidingWindow, mistral.ContextLength), Is.EqualTo(((int?)4, 4)));
        Assert.That(TransformerConfig.Parse(Base("MistralForCausalLM"), "c").SlidingWindow, Is.EqualTo(4096), "MistralConfig's default window");
        Assert.That(TransformerConfig.Parse(Base("MistralForCausalLM").Replace("\"vocab_size\"", "\"sliding_window\": null, \"vocab_size\""), "c").SlidingWindow, Is.Null);
        Assert.That(TransformerConfig.Parse(Base("Qwen2ForCausalLM").Replace("\"vocab_size\"", "\"sliding_window\": 4, \"vocab_size\""), "c").SlidingWindow,
            Is.Null, "Qwen2's window needs use_sliding_window");

        var folder = ModelReferenceTinyModels.WriteRandom(Base("MistralForCausalLM").Replace("\"vocab_size\"", "\"sliding_window\": 4, \"vocab_size\""), seed: 5);
        try
        {
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            using var model = ModelFolder.Open(folder);
            var e = Assert.Throws<SlidingWindowException>(() => new TransformerEngine(kernels, model, new EngineOptions(1, 5, 0)))!;
            Assert.That(e.Message, Does.Contain("sliding window of 4").And.Contain("5"));
            using var engine = new TransformerEngine(kernels, model, new EngineOptions(1, 4, 0));
            Assert.That(engine, Is.Not.Null, "sequences within the window are computed");
        }
        finally { Directory.Delete(folder, recursive: true); }
    }
}
