using PromptEngine.Tokenization;

namespace PromptEngine.Tests.Training;

/// <summary>A tokenizer whose tokens are space-separated words, so token counts in a test are word
/// counts: ids 0 (unused), 1 BOS, 2 EOS, then each new word gets the next id. Decode joins with spaces.</summary>
sealed class WordTokenizer(bool withBos = true) : ITextTokenizer
{
    readonly Dictionary<string, int> ids = new(StringComparer.Ordinal);
    readonly List<string> words = ["<pad>", "<s>", "</s>"];

    public int VocabSize => words.Count;
    public int BosId => withBos ? 1 : -1;
    public int EosId => 2;

    public IReadOnlyList<int> Encode(string text, bool addBos)
    {
        var result = new List<int>();
        if (addBos && withBos) result.Add(BosId);
        foreach (var word in text.Split(' ', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!ids.TryGetValue(word, out var id))
            {
                id = words.Count;
                words.Add(word);
                ids.Add(word, id);
            }
            result.Add(id);
        }
        return result;
    }

    public string Decode(IEnumerable<int> tokens) => string.Join(' ', tokens.Where(t => t > 2).Select(t => words[t]));

    public int Id(string word) => ids[word];
}
