using System.Text.Json;

namespace PromptEngine.Tokenization;

/// <summary>Finds and loads the tokenizer of a model folder.</summary>
public static class TokenizerLoader
{
    /// <summary>Loads the tokenizer of <paramref name="modelFolder"/>: <c>tokenizer.model</c> as
    /// SentencePiece BPE, else <c>vocab.json</c> + <c>merges.txt</c> as GPT-2 byte-level BPE.
    /// BOS and EOS come from the first of tokenizer_config.json and special_tokens_map.json
    /// (bos_token / eos_token, a string or {"content": …}), config.json and generation_config.json
    /// (bos_token_id / eos_token_id, the first if a list) that names them, else from the tokenizer
    /// file itself. A tokenizer_config.json that sets <c>add_bos_token</c> false or <c>bos_token</c> null (Qwen2's) means
    /// no BOS is added (<see cref="ITextTokenizer.BosId"/> −1), whatever config.json says. For GPT-2 BPE, tokenizer.json,
    /// when present, gives the pre-tokenizer (Qwen2's regex splits digits one by one) and the added special tokens.
    /// Throws <see cref="TokenizerException"/> naming the folder and what is missing, or the file and field that is wrong.</summary>
    public static ITextTokenizer Load(string modelFolder)
    {
        if (!Directory.Exists(modelFolder)) throw new TokenizerException($"{modelFolder}: model folder not found");
        string spModel = Path.Combine(modelFolder, "tokenizer.model");
        string vocabJson = Path.Combine(modelFolder, "vocab.json");
        string merges = Path.Combine(modelFolder, "merges.txt");

        if (File.Exists(spModel))
        {
            var sp = SentencePieceBpeTokenizer.Load(spModel);
            var (bos, eos) = ResolveSpecialIds(modelFolder, sp.TryGetTokenId, sp.VocabSize, sp.BosId, sp.EosId);
            sp.SetSpecialIds(bos, eos);
            return sp;
        }
        if (File.Exists(vocabJson) || File.Exists(merges))
        {
            if (!File.Exists(vocabJson)) throw new TokenizerException($"{modelFolder}: has merges.txt but no vocab.json for GPT-2 BPE");
            if (!File.Exists(merges)) throw new TokenizerException($"{modelFolder}: has vocab.json but no merges.txt for GPT-2 BPE");
            var (pattern, added) = ReadTokenizerJson(Path.Combine(modelFolder, "tokenizer.json"));
            var gpt2 = Gpt2BpeTokenizer.Load(vocabJson, merges, pattern, added);
            var (bos, eos) = ResolveSpecialIds(modelFolder, gpt2.TryGetTokenId, gpt2.VocabSize, gpt2.BosId, gpt2.EosId);
            gpt2.SetSpecialIds(bos, eos);
            return gpt2;
        }
        string hint = File.Exists(Path.Combine(modelFolder, "tokenizer.json"))
            ? " (tokenizer.json alone is not supported)"
            : "";
        throw new TokenizerException($"{modelFolder}: no tokenizer found: neither tokenizer.model (SentencePiece) nor vocab.json + merges.txt (GPT-2 BPE){hint}");
    }

    delegate bool TokenLookup(string token, out int id);

    static (int Bos, int Eos) ResolveSpecialIds(string folder, TokenLookup lookup, int vocabSize, int defaultBos, int defaultEos)
    {
        int? bos = null, eos = null;
        bool noBos = false;
        if (ReadJson(Path.Combine(folder, "tokenizer_config.json")) is { } tokenizerConfig)
        {
            // transformers adds no BOS when add_bos_token is false, nor when there is no bos_token (Qwen2's "bos_token": null).
            if (tokenizerConfig.TryGetProperty("add_bos_token", out var add))
                noBos = add.ValueKind switch
                {
                    JsonValueKind.False => true,
                    JsonValueKind.True or JsonValueKind.Null => false,
                    _ => throw new TokenizerException($"{Path.Combine(folder, "tokenizer_config.json")}: add_bos_token is {add.GetRawText()}, expected true or false"),
                };
            if (tokenizerConfig.TryGetProperty("bos_token", out var bosToken) && bosToken.ValueKind == JsonValueKind.Null) noBos = true;
        }
        foreach (var file in new[] { "tokenizer_config.json", "special_tokens_map.json" })
        {
            var root = ReadJson(Path.Combine(folder, file));
            if (root is null) continue;
            bos ??= TokenField(root.Value, "bos_token", file, folder, lookup);
            eos ??= TokenField(root.Value, "eos_token", file, folder, lookup);
        }
        foreach (var file in new[] { "config.json", "generation_config.json" })
        {
            var root = ReadJson(Path.Combine(folder, file));
            if (root is null) continue;
            bos ??= IdField(root.Value, "bos_token_id", file, folder, vocabSize);
            eos ??= IdField(root.Value, "eos_token_id", file, folder, vocabSize);
        }
        return (noBos ? -1 : bos ?? defaultBos, eos ?? defaultEos);
    }

    /// <summary>The pre-tokenizer regex and added tokens of a byte-level BPE tokenizer.json; (null, null) when there is no
    /// such file (GPT-2's pattern then). Only the pre-tokenizers byte-level BPE models use are accepted: ByteLevel with its
    /// own (GPT-2) regex, or a regex Split (Isolated) followed by ByteLevel without a regex (Qwen2); anything else would
    /// split text differently from the model's tokenizer and is refused.</summary>
    static (string? Pattern, Dictionary<string, int>? Added) ReadTokenizerJson(string path)
    {
        if (ReadJson(path) is not { } root) return (null, null);
        Dictionary<string, int>? added = null;
        if (root.TryGetProperty("added_tokens", out var tokens) && tokens.ValueKind == JsonValueKind.Array)
        {
            added = new Dictionary<string, int>(StringComparer.Ordinal);
            foreach (var token in tokens.EnumerateArray())
            {
                if (token.ValueKind != JsonValueKind.Object || !token.TryGetProperty("content", out var content) || content.ValueKind != JsonValueKind.String
                    || !token.TryGetProperty("id", out var id) || !id.TryGetInt32(out var tokenId) || tokenId < 0)
                    throw new TokenizerException($"{path}: added_tokens entry {Short(token)} is not {{\"id\": n, \"content\": \"...\"}}");
                // Only special tokens are matched whole before pre-tokenization, as the tokenizers library does.
                if (token.TryGetProperty("special", out var special) && special.ValueKind == JsonValueKind.False) continue;
                added[content.GetString()!] = tokenId;
            }
        }
        if (!root.TryGetProperty("pre_tokenizer", out var pre) || pre.ValueKind == JsonValueKind.Null)
            throw new TokenizerException($"{path}: no pre_tokenizer; only byte-level BPE pre-tokenizers (ByteLevel, or a regex Split then ByteLevel) are supported");
        string Type(JsonElement e) => e.ValueKind == JsonValueKind.Object && e.TryGetProperty("type", out var t) && t.ValueKind == JsonValueKind.String ? t.GetString()! : "?";
        bool UsesRegex(JsonElement byteLevel) => !byteLevel.TryGetProperty("use_regex", out var r) || r.ValueKind != JsonValueKind.False;
        void NoPrefixSpace(JsonElement byteLevel)
        {
            if (byteLevel.TryGetProperty("add_prefix_space", out var prefix) && prefix.ValueKind == JsonValueKind.True)
                throw new TokenizerException($"{path}: pre_tokenizer ByteLevel with add_prefix_space true is not supported");
        }
        if (Type(pre) == "ByteLevel") NoPrefixSpace(pre);
        if (Type(pre) == "Sequence" && pre.TryGetProperty("pretokenizers", out var parts) && parts.ValueKind == JsonValueKind.Array)
            foreach (var part in parts.EnumerateArray()) if (Type(part) == "ByteLevel") NoPrefixSpace(part);
        switch (Type(pre))
        {
            case "ByteLevel" when UsesRegex(pre):
                return (null, added);
            case "Sequence" when pre.TryGetProperty("pretokenizers", out var list) && list.ValueKind == JsonValueKind.Array
                && list.GetArrayLength() == 2 && Type(list[0]) == "Split" && Type(list[1]) == "ByteLevel" && !UsesRegex(list[1]):
            {
                var split = list[0];
                var isolated = split.TryGetProperty("behavior", out var behavior) && behavior.ValueKind == JsonValueKind.String && behavior.GetString() == "Isolated";
                var inverted = split.TryGetProperty("invert", out var invert) && invert.ValueKind == JsonValueKind.True;
                if (split.TryGetProperty("pattern", out var pattern) && pattern.ValueKind == JsonValueKind.Object
                    && pattern.TryGetProperty("Regex", out var regex) && regex.ValueKind == JsonValueKind.String && isolated && !inverted)
                    return (regex.GetString(), added);
                throw new TokenizerException($"{path}: pre_tokenizer Split {Short(split)} is not supported; only a Regex pattern with behavior Isolated is");
            }
            default:
                throw new TokenizerException($"{path}: pre_tokenizer {Short(pre)} is not supported; only byte-level BPE pre-tokenizers (ByteLevel, or a regex Split then ByteLevel without a regex) are");
        }
    }

    static string Short(JsonElement e)
    {
        var raw = e.GetRawText();
        return raw.Length > 80 ? raw[..80] + "..." : raw;
    }

    static JsonElement? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllBytes(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new TokenizerException($"{path}: expected a JSON object, found {doc.RootElement.ValueKind}");
            return doc.RootElement.Clone();
        }
        catch (JsonException e) { throw new TokenizerException($"{path}: invalid JSON: {e.Message}", e); }
        catch (IOException e) { throw new TokenizerException($"{path}: cannot read: {e.Message}", e); }
    }

    /// <summary>A token given by its text ("&lt;s&gt;" or {"content": "&lt;s&gt;", …}); null when absent.</summary>
    static int? TokenField(JsonElement root, string field, string file, string folder, TokenLookup lookup)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        string? token = value.ValueKind switch
        {
            JsonValueKind.String => value.GetString(),
            JsonValueKind.Object when value.TryGetProperty("content", out var content) && content.ValueKind == JsonValueKind.String => content.GetString(),
            _ => throw new TokenizerException($"{Path.Combine(folder, file)}: {field} is a {value.ValueKind}, expected a token string or {{\"content\": ...}}"),
        };
        if (string.IsNullOrEmpty(token)) return null;
        if (!lookup(token, out int id)) throw new TokenizerException($"{Path.Combine(folder, file)}: {field} '{token}' is not in the vocabulary");
        return id;
    }

    /// <summary>A token id (or the first of a list of ids); null when absent.</summary>
    static int? IdField(JsonElement root, string field, string file, string folder, int vocabSize)
    {
        if (!root.TryGetProperty(field, out var value) || value.ValueKind == JsonValueKind.Null) return null;
        if (value.ValueKind == JsonValueKind.Array)
        {
            if (value.GetArrayLength() == 0) return null;
            value = value[0];
        }
        if (value.ValueKind != JsonValueKind.Number || !value.TryGetInt32(out int id))
            throw new TokenizerException($"{Path.Combine(folder, file)}: {field} is {value.GetRawText()}, expected an integer token id");
        if (id < 0 || id >= vocabSize)
            throw new TokenizerException($"{Path.Combine(folder, file)}: {field} = {id} is outside the vocabulary of {vocabSize}");
        return id;
    }
}
