namespace PromptEngine.Generation;

/// <summary>Sampling settings. Temperature 0 is greedy decoding; otherwise the logits are divided by the
/// temperature, cut to the <paramref name="TopK"/> most likely tokens, then to the nucleus of probability
/// <paramref name="TopP"/>, renormalised and sampled (the order Hugging Face's warpers apply).</summary>
/// <param name="MaxNewTokens">Tokens to add at most per row (0 adds none).</param>
/// <param name="Temperature">Softmax temperature; 0 picks the most likely token (the lowest id among ties).</param>
/// <param name="Seed">Seed of the samplers: row r of a call draws from its own stream, see <see cref="TokenSampler"/>.</param>
/// <param name="StopAtEos">A row stops after emitting this token id (which is kept in its output), if given.</param>
/// <param name="TopK">Keep only the k most likely tokens (k ≥ 1; null keeps all). Ties rank the lower id first.</param>
/// <param name="TopP">Keep the smallest set of most likely tokens whose probability reaches p, 0 &lt; p ≤ 1 (1 keeps all).</param>
public sealed record SamplingOptions(int MaxNewTokens, float Temperature = 0f, int Seed = 0, int? StopAtEos = null, int? TopK = null, float TopP = 1f)
{
    /// <summary>Checks every field; the message names the field and the allowed range.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A field is out of range.</exception>
    public void Validate()
    {
        if (MaxNewTokens < 0)
            throw new ArgumentOutOfRangeException(nameof(MaxNewTokens), MaxNewTokens, "sampling: MaxNewTokens must be ≥ 0");
        if (!(Temperature >= 0) || !float.IsFinite(Temperature))
            throw new ArgumentOutOfRangeException(nameof(Temperature), Temperature, "sampling: temperature must be a finite number ≥ 0");
        if (TopK is < 1)
            throw new ArgumentOutOfRangeException(nameof(TopK), TopK, "sampling: top-k must be ≥ 1 (or null for the whole vocabulary)");
        if (!(TopP > 0 && TopP <= 1))
            throw new ArgumentOutOfRangeException(nameof(TopP), TopP, "sampling: top-p must be in (0, 1]");
    }
}

/// <summary>Picks the next token of one row from its logits, with a private deterministic random stream.</summary>
/// <remarks>
/// <para>Randomness: row r of a generation call owns a SplitMix64 generator whose 64-bit state starts at
/// <c>Seed·0x9E3779B97F4A7C15 + (r + 1)·0xD1B54A32D192ED03</c> (unsigned, wrapping). Each sampled token takes
/// exactly one draw <c>u = (next() &gt;&gt; 11)·2⁻⁵³ ∈ [0, 1)</c>; greedy picks take none. So a row's tokens depend
/// only on the seed, its row index and its own logits, never on what the other rows do or how many there are, and
/// the same seed repeats a run exactly on any machine and .NET version (System.Random's seeded sequence is not
/// documented as stable).</para>
/// <para>Sampling walks the kept tokens in rank order (logit descending, lower id first among ties) and returns the
/// first whose cumulative weight exceeds u·total, in double precision.</para>
/// </remarks>
public sealed class TokenSampler
{
    readonly SamplingOptions options;
    ulong state;

    /// <summary>A sampler for row <paramref name="row"/> of a call made with <paramref name="options"/>.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The options are out of range.</exception>
    public TokenSampler(SamplingOptions options, int row)
    {
        options.Validate();
        this.options = options;
        state = unchecked((ulong)options.Seed * 0x9E3779B97F4A7C15UL + (ulong)(row + 1) * 0xD1B54A32D192ED03UL);
    }

    /// <summary>The next token for <paramref name="logits"/> (V): the arg max at temperature 0, a draw otherwise.</summary>
    public int Sample(ReadOnlySpan<float> logits)
    {
        if (options.Temperature == 0) return ArgMax(logits);
        var (order, weights, kept) = Kept(logits, options.Temperature, options.TopK, options.TopP);
        double total = 0;
        for (var i = 0; i < kept; i++) total += weights[i];
        var threshold = NextUniform() * total;
        double cumulative = 0;
        for (var i = 0; i < kept; i++)
        {
            cumulative += weights[i];
            if (cumulative > threshold) return order[i];
        }
        return order[kept - 1]; // u·total rounded up to the total: the last kept token
    }

    /// <summary>The most likely token, the lowest id among equal logits.</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        if (logits.IsEmpty) throw new ArgumentException("sampling: no logits");
        var best = 0;
        for (var i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
        return best;
    }

    /// <summary>The distribution <see cref="Sample"/> draws from (V), after temperature, top-k and top-p, renormalised;
    /// zero for every cut token.</summary>
    /// <param name="logits">(V) logits.</param>
    /// <param name="temperature">Greater than 0.</param>
    /// <param name="topK">Tokens kept by rank, or null for all.</param>
    /// <param name="topP">Nucleus mass in (0, 1].</param>
    public static double[] Distribution(ReadOnlySpan<float> logits, float temperature, int? topK, float topP)
    {
        if (!(temperature > 0)) throw new ArgumentOutOfRangeException(nameof(temperature), temperature, "sampling: the distribution needs a temperature > 0");
        new SamplingOptions(0, temperature, TopK: topK, TopP: topP).Validate();
        var (order, weights, kept) = Kept(logits, temperature, topK, topP);
        double total = 0;
        for (var i = 0; i < kept; i++) total += weights[i];
        var result = new double[logits.Length];
        for (var i = 0; i < kept; i++) result[order[i]] = weights[i] / total;
        return result;
    }

    /// <summary>Token ids by rank, their unnormalised weights exp((logit − max)/T) in the same order, and how many of
    /// the first ranks survive top-k and top-p (at least one).</summary>
    static (int[] Order, double[] Weights, int Kept) Kept(ReadOnlySpan<float> logits, float temperature, int? topK, float topP)
    {
        if (logits.IsEmpty) throw new ArgumentException("sampling: no logits");
        var values = logits.ToArray();
        var order = new int[values.Length];
        for (var i = 0; i < order.Length; i++) order[i] = i;
        Array.Sort(order, (a, b) => values[a] != values[b] ? values[b].CompareTo(values[a]) : a.CompareTo(b));
        var kept = Math.Min(topK ?? values.Length, values.Length);
        var weights = new double[kept];
        double max = values[order[0]], total = 0;
        for (var i = 0; i < kept; i++) total += weights[i] = Math.Exp((values[order[i]] - max) / temperature);
        if (topP < 1)
        {
            // Keep ranks while the probability before them is below p: the token that reaches p is kept too.
            double cumulative = 0;
            var nucleus = 0;
            while (nucleus < kept && cumulative < topP * total) cumulative += weights[nucleus++];
            kept = Math.Max(1, nucleus);
        }
        return (order, weights, kept);
    }

    /// <summary>One SplitMix64 step, as a double in [0, 1) with 53 random bits.</summary>
    double NextUniform()
    {
        ulong z = unchecked(state += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return (z >> 11) * (1.0 / (1UL << 53));
    }
}
