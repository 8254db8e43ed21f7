using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace PromptEngine.Tokenization;

/// <summary>Turns llama2.c's <c>tokenizer.bin</c> into the files a Llama model folder carries:
/// <c>tokenizer.model</c> (a SentencePiece BPE ModelProto), <c>tokenizer_config.json</c> and
/// <c>special_tokens_map.json</c>.</summary>
/// <remarks>tokenizer.bin layout (little-endian): int32 max_token_length, then for each of the 32000
/// tokens float32 score, int32 byte length, that many bytes. llama2.c's export wrote the pieces as
/// text with '▁' (U+2581) replaced by ' ', ids 1 and 2 as "\n&lt;s&gt;\n" and "\n&lt;/s&gt;\n", and the
/// 256 byte-fallback pieces (ids 3..258) as the byte's Latin-1 character in UTF-8 (0x0A as "\n",
/// 0xFD as "ý") rather than "&lt;0x0A&gt;"; so the converter names those by id, not by text.</remarks>
public static class Llama2cTokenizerConverter
{
    /// <summary>Vocabulary size of every llama2.c (Llama 2) tokenizer.bin.</summary>
    public const int Llama2VocabSize = 32000;

    const int FirstByteId = 3;
    const int MaxPieceBytes = 1024;

    /// <summary>Reads <paramref name="tokenizerBinPath"/> and writes tokenizer.model,
    /// tokenizer_config.json and special_tokens_map.json into <paramref name="outDir"/> (created if
    /// missing). Throws <see cref="TokenizerException"/> naming the file and token index on a
    /// truncated file, an absurd length, invalid UTF-8, a misplaced byte piece, a duplicate piece or
    /// a token count other than <paramref name="vocabSize"/>.</summary>
    /// <param name="tokenizerBinPath">llama2.c tokenizer.bin.</param>
    /// <param name="outDir">Model folder to write into.</param>
    /// <param name="vocabSize">Expected token count: 32000 for the Llama 2 tokenizer; llama2.c's
    /// custom tokenizers (e.g. 4096) take the model's vocab_size.</param>
    /// <param name="modelMaxLength">Written as model_max_length (the model's context length; the
    /// tokenizer file does not know it, so the Llama 2 value is the default).</param>
    public static void WriteTokenizerFiles(string tokenizerBinPath, string outDir, int vocabSize = Llama2VocabSize, int modelMaxLength = 4096)
    {
        var model = ReadTokenizerBin(tokenizerBinPath, vocabSize);
        Directory.CreateDirectory(outDir);
        File.WriteAllBytes(Path.Combine(outDir, "tokenizer.model"), model.Serialize());
        WriteJson(Path.Combine(outDir, "tokenizer_config.json"), json =>
        {
            json.WriteBoolean("add_bos_token", true);
            json.WriteBoolean("add_eos_token", false);
            json.WriteString("bos_token", "<s>");
            json.WriteString("eos_token", "</s>");
            json.WriteString("unk_token", "<unk>");
            json.WriteBoolean("clean_up_tokenization_spaces", false);
            json.WriteBoolean("legacy", false);
            json.WriteNumber("model_max_length", modelMaxLength);
            json.WriteNull("pad_token");
            json.WriteString("tokenizer_class", "LlamaTokenizer");
        });
        WriteJson(Path.Combine(outDir, "special_tokens_map.json"), json =>
        {
            json.WriteString("bos_token", "<s>");
            json.WriteString("eos_token", "</s>");
            json.WriteString("unk_token", "<unk>");
        });
    }

    /// <summary>Parses tokenizer.bin into a SentencePiece BPE model with Llama 2's settings.</summary>
    internal static SentencePieceModelProto ReadTokenizerBin(string path, int vocabSize = Llama2VocabSize)
    {
        if (vocabSize < FirstByteId + 256) throw new ArgumentOutOfRangeException(nameof(vocabSize), vocabSize, "a llama2.c vocabulary holds at least <unk>, <s>, </s> and 256 byte pieces");
        byte[] bytes;
        try { bytes = File.ReadAllBytes(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new TokenizerException($"{path}: cannot read llama2.c tokenizer: {e.Message}", e);
        }
        if (bytes.Length < 4) throw new TokenizerException($"{path}: {bytes.Length} bytes, too short for the max_token_length header");
        int maxTokenLength = BinaryPrimitives.ReadInt32LittleEndian(bytes);
        if (maxTokenLength is <= 0 or > MaxPieceBytes)
            throw new TokenizerException($"{path}: max_token_length {maxTokenLength} is outside 1..{MaxPieceBytes}");

        var model = new SentencePieceModelProto
        {
            ModelType = SentencePieceModelProto.ModelTypeBpe,
            VocabSizeField = vocabSize,
            ByteFallback = true,
            UnkId = 0,
            BosId = 1,
            EosId = 2,
            PadId = -1,
            NormalizerName = "identity",
            AddDummyPrefix = true,
            RemoveExtraWhitespaces = false,
            EscapeWhitespaces = true,
        };
        var strict = new UTF8Encoding(false, throwOnInvalidBytes: true);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        int offset = 4;
        for (int id = 0; offset < bytes.Length; id++)
        {
            if (id >= vocabSize)
                throw new TokenizerException($"{path}: more than {vocabSize} tokens (extra data at byte {offset}, token index {id})");
            if (offset + 8 > bytes.Length)
                throw new TokenizerException($"{path}: truncated at token index {id} (byte {offset}): score and length need 8 bytes, {bytes.Length - offset} left");
            float score = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(offset));
            int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(offset + 4));
            offset += 8;
            if (length <= 0 || length > maxTokenLength)
                throw new TokenizerException($"{path}: token index {id} has length {length}, outside 1..max_token_length ({maxTokenLength})");
            if (offset + length > bytes.Length)
                throw new TokenizerException($"{path}: truncated at token index {id}: {length} bytes of text announced, {bytes.Length - offset} left");
            if (!float.IsFinite(score))
                throw new TokenizerException($"{path}: token index {id} has a non-finite score {score}");
            string text;
            try { text = strict.GetString(bytes, offset, length); }
            catch (DecoderFallbackException e) { throw new TokenizerException($"{path}: token index {id} is not valid UTF-8", e); }
            offset += length;

            var entry = ToPiece(id, text, score);
            if (entry.Type == SentencePieceType.Byte && text != ((char)(id - FirstByteId)).ToString() && text != entry.Piece)
                throw new TokenizerException($"{path}: token index {id} should be the byte piece {entry.Piece} but is '{text}'");
            if (!seen.Add(entry.Piece))
                throw new TokenizerException($"{path}: token index {id} repeats the piece '{entry.Piece}'");
            model.Pieces.Add(entry);
        }
        if (model.Pieces.Count != vocabSize)
            throw new TokenizerException($"{path}: {model.Pieces.Count} tokens, expected {vocabSize}");
        return model;
    }

    static SentencePieceEntry ToPiece(int id, string text, float score)
    {
        switch (id)
        {
            case 0: return new SentencePieceEntry("<unk>", score, SentencePieceType.Unknown);
            case 1: return new SentencePieceEntry("<s>", score, SentencePieceType.Control);
            case 2: return new SentencePieceEntry("</s>", score, SentencePieceType.Control);
        }
        if (id < FirstByteId + 256)
            return new SentencePieceEntry($"<0x{id - FirstByteId:X2}>", score, SentencePieceType.Byte);
        return new SentencePieceEntry(text.Replace(' ', SentencePieceBpeTokenizer.SpaceSymbol), score, SentencePieceType.Normal);
    }

    static void WriteJson(string path, Action<Utf8JsonWriter> body)
    {
        using var stream = File.Create(path);
        using var json = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
        json.WriteStartObject();
        body(json);
        json.WriteEndObject();
    }
}
