using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.EndToEnd;

/// <summary>Tiny random-weight Llama folders that every CLI command accepts: stories15M's tokenizer (32,000 tokens) on a
/// 2-layer, 16-wide model with 64 positions, so that a command runs in well under a second. Made once per seed and
/// kind, deleted at the end of the run.</summary>
public static class CliTinyModels
{
    static readonly Dictionary<string, string> Made = [];

    /// <summary>Context of the tiny models.</summary>
    public const int Positions = 64;

    /// <summary>The tiny model of <paramref name="seed"/>; with <paramref name="nanWeights"/> its final norm holds a NaN,
    /// so every logit is NaN.</summary>
    public static string Llama(int seed = 1, bool nanWeights = false)
    {
        var key = $"{seed}-{nanWeights}";
        lock (Made)
        {
            if (Made.TryGetValue(key, out var existing)) return existing;
            var config = ModelReferenceTinyModels.LlamaConfig(hidden: 16, heads: 4, kvHeads: 2, layers: 2, vocab: 32000, intermediate: 24)
                .Replace("\"max_position_embeddings\": 64", $"\"max_position_embeddings\": {Positions}");
            var folder = ModelReferenceTinyModels.Write(config, w =>
            {
                var values = ModelReferenceTinyModels.RandomValues(w, seed);
                if (nanWeights && w.Role == WeightRole.FinalNorm) values[0] = float.NaN;
                return values;
            });
            foreach (var file in new[] { "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json" })
                File.Copy(Path.Combine(TestAssets.Stories15MFolder, file), Path.Combine(folder, file));
            Made[key] = folder;
            return folder;
        }
    }

    /// <summary>A small sentiment JSONL ({"text", "label"}) of <paramref name="rows"/> rows in <paramref name="folder"/>.</summary>
    public static string SentimentData(string folder, string name = "data.jsonl", int rows = 8)
    {
        var path = Path.Combine(folder, name);
        string[] texts = ["a great film", "a dull film", "I loved it", "I hated it", "wonderful acting", "boring plot", "fun and warm", "slow and flat"];
        File.WriteAllLines(path, Enumerable.Range(0, rows).Select(i =>
            $"{{\"text\": \"{texts[i % texts.Length]}\", \"label\": \"{(i % 2 == 0 ? "positive" : "negative")}\"}}"));
        return path;
    }

    public static void DeleteAll()
    {
        lock (Made)
        {
            foreach (var folder in Made.Values)
                if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
            Made.Clear();
        }
    }
}

[SetUpFixture]
public class CliTinyModelsCleanup
{
    [OneTimeTearDown]
    public void DeleteTinyModels() => CliTinyModels.DeleteAll();
}
