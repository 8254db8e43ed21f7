using PromptEngine.Engine;

namespace PromptEngine.Generation;

/// <summary>One row of a generation call: prompt-bank rows placed before the tokens (prefix), then the tokens.</summary>
/// <param name="Tokens">Tokens to continue, at least one (e.g. BOS).</param>
/// <param name="PromptTableRows">Rows of the engine's prompt bank to place first (e.g. 0..19), or empty for no prompt.
/// Rows of one call may use different prompts of the bank, or none.</param>
public sealed record GenerationRequest(IReadOnlyList<int> Tokens, IReadOnlyList<int> PromptTableRows);

/// <summary>Why a row stopped.</summary>
public enum StopReason
{
    /// <summary>It emitted <see cref="SamplingOptions.StopAtEos"/>.</summary>
    Eos,
    /// <summary>It reached <see cref="SamplingOptions.MaxNewTokens"/>.</summary>
    MaxNewTokens,
    /// <summary>Its sequence filled the engine's <see cref="EngineOptions.MaxLength"/> positions.</summary>
    LengthLimit,
}

/// <summary>The new tokens of one row (the EOS token included when it stopped on it) and why it stopped.</summary>
public sealed record GeneratedRow(IReadOnlyList<int> Tokens, StopReason Stop);

/// <summary>Autoregressive generation with a KV cache, several rows at once, and the recompute-everything path
/// kept as an oracle.</summary>
/// <remarks>
/// Cached generation (<see cref="Generate(TransformerEngine, IReadOnlyList{GenerationRequest}, SamplingOptions)"/>):
/// one <see cref="TransformerEngine.Prefill"/> over every row's prompt rows and tokens, then one
/// <see cref="TransformerEngine.DecodeStep"/> per new token for all rows together. A row that stops (EOS, its
/// token budget, or a full cache) goes idle while the others continue. A row whose sequence already fills the
/// engine still gets the one token its last position predicts.
/// </remarks>
public static class Generator
{
    /// <summary>Generates for every request at once with the KV cache; returns each row's new tokens, in request order.</summary>
    /// <param name="engine">Sized for at least <c>requests.Count</c> rows and the longest prompt + tokens; its
    /// <see cref="EngineOptions.MaxLength"/> bounds how long a row can grow.</param>
    /// <param name="requests">One per row (1 ≤ count ≤ the engine's MaxRows).</param>
    /// <param name="options">Sampling settings; row r samples with its own stream (<see cref="TokenSampler"/>).</param>
    /// <exception cref="ArgumentException">No requests, too many, an empty row, a row longer than the engine, or a
    /// token or prompt row out of range; the message names the row.</exception>
    public static IReadOnlyList<GeneratedRow> Generate(TransformerEngine engine, IReadOnlyList<GenerationRequest> requests, SamplingOptions options)
    {
        options.Validate();
        var batch = PrefillBatch(engine, requests);
        var rows = requests.Count;
        var outputs = Enumerable.Range(0, rows).Select(_ => new List<int>()).ToArray();
        var stops = new StopReason[rows];
        if (options.MaxNewTokens == 0)
            return outputs.Select(o => new GeneratedRow(o, StopReason.MaxNewTokens)).ToArray();
        var samplers = Enumerable.Range(0, rows).Select(r => new TokenSampler(options, r)).ToArray();
        var logits = engine.Prefill(batch);
        int vocab = engine.Config.VocabSize, capacity = engine.Options.MaxLength;
        var next = new int[rows];
        var done = new bool[rows];
        while (true)
        {
            for (var r = 0; r < rows; r++)
            {
                next[r] = -1;
                if (done[r]) continue;
                var token = samplers[r].Sample(logits.AsSpan(r * vocab, vocab));
                outputs[r].Add(token);
                if (token == options.StopAtEos) (done[r], stops[r]) = (true, StopReason.Eos);
                else if (outputs[r].Count == options.MaxNewTokens) (done[r], stops[r]) = (true, StopReason.MaxNewTokens);
                else if (engine.CacheLengths[r] >= capacity) (done[r], stops[r]) = (true, StopReason.LengthLimit);
                else next[r] = token;
            }
            if (done.All(d => d)) break;
            logits = engine.DecodeStep(next);
        }
        return outputs.Select((o, r) => new GeneratedRow(o, stops[r])).ToArray();
    }

    /// <summary>One row with the KV cache: generates after <paramref name="tokens"/>, with the prompt-bank rows
    /// <paramref name="promptTableRows"/> placed before them (prefix) when given. Returns the new tokens only.</summary>
    public static List<int> Generate(TransformerEngine engine, IReadOnlyList<int> tokens, IReadOnlyList<int> promptTableRows, SamplingOptions options) =>
        Generate(engine, [new GenerationRequest(tokens, promptTableRows)], options)[0].Tokens.ToList();

    /// <summary>The oracle: one row, no cache. Each new token re-runs <see cref="TransformerEngine.Logits"/> over the
    /// whole row and reads the last position; samples exactly as row 0 of the cached path does, so with the same
    /// seed both paths produce the same tokens. Stops under the same rules.</summary>
    public static List<int> GenerateUncached(TransformerEngine engine, IReadOnlyList<int> tokens, IReadOnlyList<int> promptTableRows, SamplingOptions options)
    {
        options.Validate();
        var request = new GenerationRequest(tokens, promptTableRows);
        PrefillBatch(engine, [request]); // the same checks as the cached path
        var sampler = new TokenSampler(options, row: 0);
        var generated = new List<int>();
        var context = tokens.ToList();
        var capacity = engine.Options.MaxLength;
        while (generated.Count < options.MaxNewTokens)
        {
            var row = Row(new GenerationRequest(context, promptTableRows));
            row[^1] = row[^1] with { Target = 0 }; // score the last position; the target only has to be a valid id
            var next = sampler.Sample(engine.Logits(BatchBuilder.Build([row])));
            generated.Add(next);
            if (next == options.StopAtEos || promptTableRows.Count + context.Count >= capacity) break;
            context.Add(next);
        }
        return generated;
    }

    /// <summary>The prefill batch of <paramref name="requests"/>: each row its prompt rows then its tokens, right-padded.</summary>
    /// <exception cref="ArgumentException">See <see cref="Generate(TransformerEngine, IReadOnlyList{GenerationRequest}, SamplingOptions)"/>.</exception>
    public static Batch PrefillBatch(TransformerEngine engine, IReadOnlyList<GenerationRequest> requests)
    {
        if (requests.Count == 0) throw new ArgumentException("generation: no requests");
        var options = engine.Options;
        if (requests.Count > options.MaxRows)
            throw new ArgumentException($"generation: {requests.Count} requests, but the engine was built for {options.MaxRows} rows (EngineOptions.MaxRows)");
        for (var r = 0; r < requests.Count; r++)
        {
            var request = requests[r];
            if (request.Tokens.Count == 0) throw new ArgumentException($"generation: request {r} has no tokens; it needs at least one to start from (e.g. BOS)");
            var length = request.PromptTableRows.Count + request.Tokens.Count;
            if (length > options.MaxLength)
                throw new ArgumentException($"generation: request {r} has {request.PromptTableRows.Count} prompt rows + {request.Tokens.Count} tokens = {length} positions, more than the engine's {options.MaxLength} (EngineOptions.MaxLength)");
            foreach (var p in request.PromptTableRows)
                if (p < 0 || p >= engine.PromptTableRows)
                    throw new ArgumentException($"generation: request {r} names prompt row {p}, but the prompt bank has {engine.PromptTableRows} rows");
            foreach (var t in request.Tokens)
                if (t < 0 || t >= engine.Config.VocabSize)
                    throw new ArgumentException($"generation: request {r} has token {t}, outside the vocabulary of {engine.Config.VocabSize}");
        }
        return BatchBuilder.Build(requests.Select(Row).ToArray());
    }

    static List<Slot> Row(GenerationRequest request) =>
        request.PromptTableRows.Select(Slot.Prompt).Concat(request.Tokens.Select(t => Slot.Token(t))).ToList();
}
