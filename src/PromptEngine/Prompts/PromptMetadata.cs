using System.Globalization;
using System.Text.Json;
using PromptEngine.Models;

namespace PromptEngine.Prompts;

/// <summary>The metadata keys PromptEngine writes into prompt files, banks and PEFT adapters, and the
/// description of a base model that goes into every one of them.</summary>
public static class PromptMetadata
{
    /// <summary><see cref="ModelFingerprint.Compute"/> of the model the prompt was made for.</summary>
    public const string BaseModelFingerprint = "base_model_fingerprint";
    /// <summary>Hidden size C of that model; a prompt of another width can never run on a model.</summary>
    public const string BaseModelWidth = "base_model_width";
    /// <summary>The model's name (PEFT's field name "base_model_name_or_path"): see <see cref="NameOrPath"/>; never a local path.</summary>
    public const string BaseModelNameOrPath = "base_model_name_or_path";
    /// <summary>The model's <c>architectures[0]</c>.</summary>
    public const string Architecture = "architecture";
    /// <summary>Number of blocks (PEFT's <c>num_layers</c>).</summary>
    public const string NumLayers = "num_layers";
    /// <summary>Number of attention heads (PEFT's <c>num_attention_heads</c>).</summary>
    public const string NumAttentionHeads = "num_attention_heads";
    /// <summary>Rows of the embedding table.</summary>
    public const string VocabSize = "vocab_size";
    /// <summary>Rows n of the prompt.</summary>
    public const string VirtualTokens = "num_virtual_tokens";
    /// <summary>How the prompt was initialised: "random", "sample_vocab", "text" or "file".</summary>
    public const string InitMethod = "init_method";
    /// <summary>The text of a "text" initialisation.</summary>
    public const string InitText = "init_text";
    /// <summary>The seed of a "random" or "sample_vocab" initialisation.</summary>
    public const string InitSeed = "init_seed";
    /// <summary>The half-width of a "random" initialisation (see <see cref="PromptInit.Spread"/>).</summary>
    public const string InitSpread = "init_spread";
    /// <summary>Comma-separated token ids whose embedding rows became the prompt ("sample_vocab", "text").</summary>
    public const string InitTokenIds = "init_token_ids";
    /// <summary>The name of the file a "file" initialisation copied (its name only: prompts carry no path of this machine).</summary>
    public const string InitSource = "init_source";
    /// <summary>The prompt method: "prefix" for a deep prompt (<see cref="DeepPromptFile"/>); absent or "prompt" for a plain prompt.</summary>
    public const string Method = "method";
    /// <summary><see cref="Method"/> of a plain prompt.</summary>
    public const string MethodPrompt = "prompt";
    /// <summary><see cref="Method"/> of a deep prompt.</summary>
    public const string MethodPrefix = "prefix";
    /// <summary>Key/value heads KV of a deep prompt's model.</summary>
    public const string NumKeyValueHeads = "num_key_value_heads";
    /// <summary>Head size hs of a deep prompt's model.</summary>
    public const string HeadDim = "head_dim";
    /// <summary>How a deep prompt was trained when not directly: "mlp H" for prefix tuning's reparameterisation MLP
    /// (<see cref="PrefixProjection"/>), whose output the file holds folded into a plain deep prompt. Provenance only.</summary>
    public const string Reparameterisation = "reparameterisation";
    /// <summary>What the file holds: absent for a prompt, "gradient", or "prompt_bank".</summary>
    public const string Content = "content";

    /// <summary>The description of <paramref name="model"/> every prompt file carries: fingerprint, width,
    /// name or path, architecture, layers, heads, vocabulary size.</summary>
    public static Dictionary<string, string> ForModel(ModelFolder model)
    {
        ArgumentNullException.ThrowIfNull(model);
        var c = model.Config;
        return new Dictionary<string, string>(StringComparer.Ordinal)
        {
            [BaseModelFingerprint] = ModelFingerprint.Compute(model),
            [BaseModelWidth] = Invariant(c.HiddenSize),
            [BaseModelNameOrPath] = NameOrPath(model),
            [Architecture] = c.Architecture,
            [NumLayers] = Invariant(c.NumLayers),
            [NumAttentionHeads] = Invariant(c.NumHeads),
            [VocabSize] = Invariant(c.VocabSize),
        };
    }

    /// <summary>The model's name as a Hugging Face user would record it, never a path of this machine (the
    /// name travels with prompts and adapters): config.json's <c>_name_or_path</c> when it is a hub id such as
    /// "acme/tiny-llama"; when transformers recorded a local path there, or there is none, the last component
    /// of that path or of the model folder.</summary>
    public static string NameOrPath(ModelFolder model) => ModelName(model).Name;

    /// <summary><see cref="NameOrPath"/>, and whether it is a hub id recorded by transformers (so that PEFT,
    /// which resolves such names with <c>from_pretrained</c>, can find the model's tokenizer by it) rather
    /// than a folder's name.</summary>
    public static (string Name, bool IsHubId) ModelName(ModelFolder model)
    {
        ArgumentNullException.ThrowIfNull(model);
        try
        {
            using var document = JsonDocument.Parse(File.ReadAllText(System.IO.Path.Combine(model.Path, "config.json")),
                new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
            if (document.RootElement.ValueKind == JsonValueKind.Object
                && document.RootElement.TryGetProperty("_name_or_path", out var name)
                && name.ValueKind == JsonValueKind.String && !string.IsNullOrWhiteSpace(name.GetString()))
            {
                var recorded = name.GetString()!.Trim();
                if (IsHubId(recorded)) return (recorded, true);
                var last = LastComponent(recorded);
                if (last.Length > 0) return (last, false);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or JsonException)
        {
            // The folder was opened, so config.json was readable moments ago; fall back to the folder's name.
        }
        var folderName = LastComponent(System.IO.Path.GetFullPath(model.Path));
        return (folderName.Length > 0 ? folderName : "model", false);
    }

    /// <summary>A Hugging Face hub id: "name" or "owner/name" of letters, digits, '-', '_' and '.', not a
    /// relative or absolute path ("./x", "../x", "/x", "C:\x").</summary>
    internal static bool IsHubId(string name) =>
        System.Text.RegularExpressions.Regex.IsMatch(name, @"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
        && !name.Contains("..", StringComparison.Ordinal);

    static string LastComponent(string path) =>
        path.Replace('\\', '/').TrimEnd('/').Split('/').LastOrDefault(part => part.Length > 0 && part != "." && part != "..") ?? "";

    internal static string Invariant(int value) => value.ToString(CultureInfo.InvariantCulture);
}
