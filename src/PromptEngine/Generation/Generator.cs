using PromptEngine.Engine;

namespace PromptEngine.Generation;

/// <summary>Sampling settings. Temperature 0 is greedy decoding.</summary>
/// <param name="MaxNewTokens">Tokens to add at most.</param>
/// <param name="Temperature">Softmax temperature; 0 picks the most likely token.</param>
/// <param name="Seed">Seed of the sampler, so a run can be repeated exactly.</param>
/// <param name="StopAtEos">Stop after emitting this token id, if given.</param>
public sealed record SamplingOptions(int MaxNewTokens, float Temperature = 0f, int Seed = 0, int? StopAtEos = null);

/// <summary>Plain autoregressive generation: each new token re-runs the forward pass over the whole
/// row (no KV cache yet) and reads the logits of the last position only.</summary>
public static class Generator
{
    /// <summary>Generates after <paramref name="tokens"/>, with the prompt-bank rows <paramref name="promptRows"/>
    /// placed before them (prefix) when given. Returns the new tokens only.</summary>
    public static List<int> Generate(TransformerEngine engine, IReadOnlyList<int> tokens, IReadOnlyList<int> promptRows, SamplingOptions options)
    {
        if (tokens.Count == 0) throw new ArgumentException("generation needs at least one token to start from (e.g. BOS)");
        if (options.Temperature < 0 || !float.IsFinite(options.Temperature)) throw new ArgumentException($"temperature {options.Temperature} must be a finite number ≥ 0");
        var random = new Random(options.Seed);
        var generated = new List<int>();
        var context = tokens.ToList();
        var limit = engine.Config.MaxPositions - promptRows.Count;
        for (var step = 0; step < options.MaxNewTokens && context.Count < limit; step++)
        {
            var row = new List<Slot>();
            foreach (var p in promptRows) row.Add(Slot.Prompt(p));
            foreach (var t in context) row.Add(Slot.Token(t));
            // Score only the last position; its "target" is irrelevant for logits but must be a valid id.
            row[^1] = row[^1] with { Target = 0 };
            var logits = engine.Logits(BatchBuilder.Build([row]));
            var next = Sample(logits, options.Temperature, random);
            generated.Add(next);
            context.Add(next);
            if (next == options.StopAtEos) break;
        }
        return generated;
    }

    /// <summary>Greedy (temperature 0) or temperature sampling from one row of logits.</summary>
    public static int Sample(ReadOnlySpan<float> logits, float temperature, Random random)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        if (temperature == 0) return best;
        var weights = new double[logits.Length];
        double total = 0;
        for (var i = 0; i < logits.Length; i++) total += weights[i] = Math.Exp((logits[i] - logits[best]) / temperature);
        var u = random.NextDouble() * total;
        for (var i = 0; i < weights.Length; i++)
        {
            u -= weights[i];
            if (u <= 0) return i;
        }
        return best;
    }
}
