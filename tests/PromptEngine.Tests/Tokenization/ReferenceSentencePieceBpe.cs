using System.Buffers.Binary;
using System.Text;

namespace PromptEngine.Tests.Tokenization;

/// <summary>SentencePiece BPE written as plainly as possible, straight from llama2.c's tokenizer.bin
/// (not through the converter or tokenizer.model): '▁' prefix, spaces to '▁', code points, then
/// scan every adjacent pair, merge the best score (strictly greater, so the leftmost wins ties),
/// repeat; leftovers become byte ids 3 + b. O(n²) and proud of it.</summary>
sealed class ReferenceSentencePieceBpe
{
    readonly Dictionary<string, (int Id, float Score)> vocab = new(StringComparer.Ordinal);

    public ReferenceSentencePieceBpe(string tokenizerBinPath)
    {
        var bytes = File.ReadAllBytes(tokenizerBinPath);
        int offset = 4;
        for (int id = 0; offset < bytes.Length; id++)
        {
            float score = BinaryPrimitives.ReadSingleLittleEndian(bytes.AsSpan(offset));
            int length = BinaryPrimitives.ReadInt32LittleEndian(bytes.AsSpan(offset + 4));
            string text = Encoding.UTF8.GetString(bytes, offset + 8, length);
            offset += 8 + length;
            if (id >= 259) vocab.Add(text.Replace(' ', '\u2581'), (id, score));
        }
    }

    public List<int> Encode(string text, bool addBos)
    {
        var ids = new List<int>();
        if (addBos) ids.Add(1);
        if (text.Length == 0) return ids;
        var symbols = ("\u2581" + text.Replace(' ', '\u2581')).EnumerateRunes().Select(r => r.ToString()).ToList();
        while (true)
        {
            int best = -1;
            float bestScore = float.NegativeInfinity;
            for (int i = 0; i + 1 < symbols.Count; i++)
                if (vocab.TryGetValue(symbols[i] + symbols[i + 1], out var hit) && hit.Score > bestScore)
                    (best, bestScore) = (i, hit.Score);
            if (best < 0) break;
            symbols[best] += symbols[best + 1];
            symbols.RemoveAt(best + 1);
        }
        foreach (var s in symbols)
        {
            if (vocab.TryGetValue(s, out var hit)) ids.Add(hit.Id);
            else foreach (byte b in Encoding.UTF8.GetBytes(s)) ids.Add(3 + b);
        }
        return ids;
    }
}
