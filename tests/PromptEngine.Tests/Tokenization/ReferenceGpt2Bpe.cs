using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace PromptEngine.Tests.Tokenization;

/// <summary>GPT-2's encoder.py transcribed plainly: split off "&lt;|endoftext|&gt;", pre-tokenize with
/// GPT-2's regex, map bytes to printable characters, then repeatedly merge every occurrence of the
/// lowest-ranked pair.</summary>
sealed class ReferenceGpt2Bpe
{
    readonly Dictionary<string, int> encoder;
    readonly Dictionary<(string, string), int> ranks = new();
    readonly char[] byteToChar = new char[256];
    static readonly Regex Pattern = new(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+");

    public ReferenceGpt2Bpe(string encoderJson, string vocabBpe)
    {
        encoder = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(encoderJson))!;
        var lines = File.ReadAllLines(vocabBpe);
        int rank = 0;
        foreach (var line in lines.Skip(1))
        {
            if (line.Length == 0) continue;
            var parts = line.Split(' ');
            ranks[(parts[0], parts[1])] = rank++;
        }
        var printable = new List<int>();
        for (int b = '!'; b <= '~'; b++) printable.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) printable.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) printable.Add(b);
        int extra = 0;
        for (int b = 0; b < 256; b++) byteToChar[b] = printable.Contains(b) ? (char)b : (char)(256 + extra++);
    }

    public List<int> Encode(string text)
    {
        var ids = new List<int>();
        var parts = text.Split("<|endoftext|>");
        for (int p = 0; p < parts.Length; p++)
        {
            if (p > 0) ids.Add(encoder["<|endoftext|>"]);
            foreach (Match m in Pattern.Matches(parts[p]))
            {
                var word = Encoding.UTF8.GetBytes(m.Value).Select(b => byteToChar[b].ToString()).ToList();
                foreach (var token in Bpe(word)) ids.Add(encoder[token]);
            }
        }
        return ids;
    }

    List<string> Bpe(List<string> word)
    {
        while (word.Count > 1)
        {
            (string, string)? best = null;
            int bestRank = int.MaxValue;
            for (int i = 0; i + 1 < word.Count; i++)
                if (ranks.TryGetValue((word[i], word[i + 1]), out int r) && r < bestRank) (best, bestRank) = ((word[i], word[i + 1]), r);
            if (best is null) break;
            var merged = new List<string>();
            for (int i = 0; i < word.Count;)
            {
                if (i + 1 < word.Count && word[i] == best.Value.Item1 && word[i + 1] == best.Value.Item2)
                {
                    merged.Add(word[i] + word[i + 1]);
                    i += 2;
                }
                else merged.Add(word[i++]);
            }
            word = merged;
        }
        return word;
    }
}
