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
    /// file itself. Throws <see cref="TokenizerException"/> naming the folder and what is missing,
    /// or the file and field that is wrong.</summary>
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
            var gpt2 = Gpt2BpeTokenizer.Load(vocabJson, merges);
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
        return (bos ?? defaultBos, eos ?? defaultEos);
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
