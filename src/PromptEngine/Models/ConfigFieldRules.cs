using System.Text.Json;

namespace PromptEngine.Models;

/// <summary>What the engine does with a config.json field.</summary>
public enum ConfigFieldUse
{
    /// <summary>Read into <see cref="TransformerConfig"/> and computed as transformers computes it.</summary>
    Computed,
    /// <summary>Does not change the model's function: bookkeeping (versions, dtype, ids for padding), settings of
    /// other heads or of generation, training-time dropout (the engine computes the model's inference function), or
    /// a rearrangement that gives the same values (pretraining_tp's sliced matmuls, reorder_and_upcast_attn in float32).</summary>
    NoEffect,
    /// <summary>Changes the model's function in a way the engine does not implement: accepted only at transformers'
    /// default value, refused otherwise, never silently ignored.</summary>
    OnlyDefault,
}

/// <summary>The rule that every field of a supported family's config class either changes the computation correctly or
/// is refused when it is not at its default. Fields no config class of the family has are ignored, as transformers
/// ignores them (it keeps them as attributes no model code reads).</summary>
public static class ConfigFieldRules
{
    static readonly string[] CommonComputed = ["architectures", "vocab_size", "bos_token_id", "eos_token_id", "tie_word_embeddings"];

    /// <summary>PretrainedConfig's own fields and the generation settings older configs carry: none changes the forward pass.</summary>
    static readonly string[] CommonNoEffect =
    [
        "_name_or_path", "model_type", "transformers_version", "torch_dtype", "dtype", "use_cache", "pad_token_id", "sep_token_id",
        "decoder_start_token_id", "initializer_range", "output_hidden_states", "output_attentions", "return_dict", "torchscript",
        "use_bfloat16", "tf_legacy_loss", "chunk_size_feed_forward", "id2label", "label2id", "num_labels", "problem_type",
        "finetuning_task", "tokenizer_class", "prefix", "task_specific_params", "is_decoder", "_attn_implementation",
        "attn_implementation", "_commit_hash", "max_length", "min_length", "do_sample", "early_stopping", "num_beams",
        "num_beam_groups", "diversity_penalty", "temperature", "top_k", "top_p", "typical_p", "repetition_penalty",
        "length_penalty", "no_repeat_ngram_size", "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences",
        "output_scores", "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
        "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    ];

    /// <summary>Fields every family accepts only at their default, with a test for "is the default".</summary>
    static readonly (string Field, Func<JsonElement, bool> IsDefault, string Why)[] CommonOnlyDefault =
    [
        ("is_encoder_decoder", IsFalseOrNull, "encoder-decoder models are not supported"),
        ("add_cross_attention", IsFalseOrNull, "cross-attention is not supported"),
        ("tie_encoder_decoder", IsFalseOrNull, "encoder-decoder models are not supported"),
        ("cross_attention_hidden_size", IsNull, "cross-attention is not supported"),
        ("pruned_heads", IsEmptyObjectOrNull, "pruned attention heads are not supported"),
        ("quantization_config", IsNull, "quantised weights are not supported"),
        ("rope_scaling", IsNull, "RoPE scaling is not supported; this engine computes plain RoPE only"),
    ];

    static readonly string[] LlamaComputed =
    [
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim",
        "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta", "rope_parameters",
    ];

    static readonly string[] Gpt2Computed =
    [
        "n_positions", "n_ctx", "n_embd", "n_layer", "n_head", "n_inner", "activation_function", "layer_norm_epsilon",
    ];

    static readonly string[] Gpt2NoEffect =
    [
        // Dropout (training-time regularisation) and the GPT2DoubleHeadsModel's summary head, which the LM head model lacks.
        "resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_type", "summary_use_proj", "summary_activation",
        "summary_proj_to_labels", "summary_first_dropout",
        // Scales K before QK^T and upcasts to float32: the same function in float32, which the engine computes in.
        "reorder_and_upcast_attn",
    ];

    /// <summary>How <paramref name="architecture"/>'s engine treats <paramref name="field"/>; null for a field no config
    /// class of the family has (ignored, as transformers ignores it).</summary>
    /// <exception cref="ArgumentException">An unsupported architecture.</exception>
    public static ConfigFieldUse? Use(string architecture, string field)
    {
        ArgumentNullException.ThrowIfNull(architecture);
        ArgumentNullException.ThrowIfNull(field);
        if (!TransformerConfig.SupportedArchitectures.TryGetValue(architecture, out var family))
            throw new ArgumentException($"'{architecture}' is not a supported architecture", nameof(architecture));
        if (OnlyDefaultRule(architecture, field) is not null) return ConfigFieldUse.OnlyDefault;
        if (CommonComputed.Contains(field)) return ConfigFieldUse.Computed;
        if (CommonNoEffect.Contains(field)) return ConfigFieldUse.NoEffect;
        if (family == ModelFamily.Gpt2)
            return Gpt2Computed.Contains(field) ? ConfigFieldUse.Computed : Gpt2NoEffect.Contains(field) ? ConfigFieldUse.NoEffect : null;
        if (LlamaComputed.Contains(field)) return ConfigFieldUse.Computed;
        return (architecture, field) switch
        {
            (_, "attention_dropout") => ConfigFieldUse.NoEffect, // dropout
            ("LlamaForCausalLM", "pretraining_tp") => ConfigFieldUse.NoEffect, // the same matmuls in slices
            ("LlamaForCausalLM", "attention_bias") => ConfigFieldUse.Computed, // q, k, v and o biases
            ("MistralForCausalLM", "sliding_window") => ConfigFieldUse.Computed, // bounds ContextLength
            ("Qwen2ForCausalLM", "sliding_window" or "use_sliding_window") => ConfigFieldUse.Computed,
            // Which layers the window applies to: the context is bounded by the window whatever the layers, which is exact for any choice.
            ("Qwen2ForCausalLM", "max_window_layers" or "layer_types") => ConfigFieldUse.NoEffect,
            _ => null,
        };
    }

    static (Func<JsonElement, bool> IsDefault, string Why)? OnlyDefaultRule(string architecture, string field)
    {
        foreach (var rule in CommonOnlyDefault)
            if (rule.Field == field) return (rule.IsDefault, rule.Why);
        return (architecture, field) switch
        {
            ("LlamaForCausalLM", "mlp_bias") => (IsFalseOrNull, "MLP biases are not supported"),
            ("GPT2LMHeadModel", "scale_attn_weights") => (IsTrueOrNull,
                "attention without the 1/√head_dim scale is not supported"),
            ("GPT2LMHeadModel", "scale_attn_by_inverse_layer_idx") => (IsFalseOrNull,
                "scaling attention by 1/(layer index + 1) is not supported"),
            _ => null,
        };
    }

    /// <summary>Refuses a config whose fields ask for a computation the engine does not do.</summary>
    /// <exception cref="ModelConfigException">A field of <see cref="ConfigFieldUse.OnlyDefault"/> at another value, or
    /// <c>rope_parameters</c> asking for anything but plain RoPE.</exception>
    internal static void Check(JsonElement root, string architecture, string source)
    {
        foreach (var property in root.EnumerateObject())
        {
            if (OnlyDefaultRule(architecture, property.Name) is { } rule && !rule.IsDefault(property.Value))
                throw new ModelConfigException(source, property.Name,
                    $"{Describe(property.Value)} is not supported for {architecture}: {rule.Why}, and ignoring it would give wrong results");
        }
        if (TransformerConfig.SupportedArchitectures[architecture] == ModelFamily.Llama
            && root.TryGetProperty("rope_parameters", out var rope) && rope.ValueKind != JsonValueKind.Null)
        {
            if (rope.ValueKind != JsonValueKind.Object)
                throw new ModelConfigException(source, "rope_parameters", $"expected an object, found {Describe(rope)}");
            foreach (var p in rope.EnumerateObject())
            {
                var plain = p.Name switch
                {
                    "rope_theta" => true,
                    "rope_type" or "type" => p.Value.ValueKind == JsonValueKind.String && p.Value.GetString() == "default",
                    _ => false,
                };
                if (!plain)
                    throw new ModelConfigException(source, "rope_parameters",
                        $"'{p.Name}': {Describe(p.Value)} is not supported: this engine computes plain RoPE (rope_type \"default\") only");
            }
        }
    }

    static bool IsNull(JsonElement v) => v.ValueKind == JsonValueKind.Null;
    static bool IsFalseOrNull(JsonElement v) => v.ValueKind is JsonValueKind.False or JsonValueKind.Null;
    static bool IsTrueOrNull(JsonElement v) => v.ValueKind is JsonValueKind.True or JsonValueKind.Null;
    static bool IsEmptyObjectOrNull(JsonElement v) =>
        v.ValueKind == JsonValueKind.Null || (v.ValueKind == JsonValueKind.Object && !v.EnumerateObject().Any());

    static string Describe(JsonElement v)
    {
        var raw = v.GetRawText();
        return raw.Length > 40 ? raw[..40] + "..." : raw;
    }
}
