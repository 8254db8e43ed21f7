namespace PromptEngine.Engine;

/// <summary>One batch as the engine consumes it: B rows of T positions, each position either a token
/// or a row of the prompt bank, with the positions where a loss is taken.</summary>
/// <remarks>
/// The source map is the whole placement story: a value s ≥ 0 is token s, a value s &lt; 0 is prompt
/// row −1 − s. Prefix, suffix and interleaved prompts, and a different prompt per row drawn from a bank
/// (mixed tasks in one batch), are only different maps. Rows are right-padded: padding positions carry
/// token 0 and key mask 0, so no real position attends to them.
/// </remarks>
/// <param name="Rows">B.</param>
/// <param name="Length">T.</param>
/// <param name="SourceMap">(B·T) token id, or −1 − prompt row.</param>
/// <param name="KeyMask">(B·T) 1 for a real position, 0 for padding.</param>
/// <param name="PositionIds">(B·T) position of each slot (RoPE angle or learned-position row).</param>
/// <param name="LossPositions">(S) flattened positions b·T + t whose logits are scored, distinct.</param>
/// <param name="Targets">(S) the token each scored position should predict.</param>
/// <param name="Verbalizer">Vocabulary rows the softmax is restricted to (e.g. " positive", " negative"), or null for the whole vocabulary.</param>
/// <param name="DeepPromptOfRow">(B) which of an engine's deep prompts each row attends to (<see cref="EngineOptions.DeepPrompts"/>),
/// or null: the first (the only one, usually).</param>
public sealed record Batch(int Rows, int Length, int[] SourceMap, int[] KeyMask, int[] PositionIds,
    int[] LossPositions, int[] Targets, int[]? Verbalizer = null, int[]? DeepPromptOfRow = null)
{
    /// <summary>B·T.</summary>
    public int Positions => Rows * Length;

    /// <summary>Checks the batch against a model's vocabulary and a prompt bank; the message says what and where.</summary>
    public void Validate(int vocabSize, int promptTableRows, int maxPositions)
    {
        if (Rows <= 0 || Length <= 0) throw new ArgumentException($"batch: {Rows} rows of length {Length}");
        if (SourceMap.Length != Positions || KeyMask.Length != Positions || PositionIds.Length != Positions)
            throw new ArgumentException($"batch: source map, key mask and position ids must each have B·T = {Positions} entries (have {SourceMap.Length}, {KeyMask.Length}, {PositionIds.Length})");
        for (var i = 0; i < Positions; i++)
        {
            var s = SourceMap[i];
            if (s >= vocabSize) throw new ArgumentException($"batch: row {i / Length}, position {i % Length}: token {s} is outside the vocabulary of {vocabSize}");
            if (s < 0 && -1 - s >= promptTableRows) throw new ArgumentException($"batch: row {i / Length}, position {i % Length}: prompt row {-1 - s}, but the prompt bank has {promptTableRows} rows");
            if (KeyMask[i] is not (0 or 1)) throw new ArgumentException($"batch: key mask at {i} is {KeyMask[i]}, expected 0 or 1");
            if (PositionIds[i] < 0 || PositionIds[i] >= maxPositions) throw new ArgumentException($"batch: position id {PositionIds[i]} at {i} is outside the model's {maxPositions} positions");
        }
        if (Verbalizer is { } words)
        {
            if (words.Length == 0) throw new ArgumentException("batch: an empty verbalizer; pass null for the whole vocabulary");
            if (words.Distinct().Count() != words.Length)
                throw new ArgumentException($"batch: the verbalizer's token ids [{string.Join(", ", words)}] are not distinct; two labels would be indistinguishable");
            foreach (var w in words)
                if (w < 0 || w >= vocabSize) throw new ArgumentException($"batch: verbalizer token {w} is outside the vocabulary of {vocabSize}");
        }
        if (DeepPromptOfRow is { } chosen)
        {
            if (chosen.Length != Rows) throw new ArgumentException($"batch: {chosen.Length} deep-prompt choices for {Rows} rows");
            for (var b = 0; b < Rows; b++)
                if (chosen[b] < 0) throw new ArgumentException($"batch: row {b} chooses deep prompt {chosen[b]}");
        }
        if (Targets.Length != LossPositions.Length) throw new ArgumentException($"batch: {LossPositions.Length} loss positions but {Targets.Length} targets");
        var seen = new HashSet<int>();
        for (var i = 0; i < LossPositions.Length; i++)
        {
            var p = LossPositions[i];
            if (p < 0 || p >= Positions) throw new ArgumentException($"batch: loss position {p} is outside B·T = {Positions}");
            if (!seen.Add(p)) throw new ArgumentException($"batch: loss position {p} appears twice");
            if (KeyMask[p] == 0) throw new ArgumentException($"batch: loss position {p} is padding");
            var target = Targets[i];
            if (target < -1 || target >= vocabSize) throw new ArgumentException($"batch: target {target} at loss position {p} is outside the vocabulary of {vocabSize}");
            if (target >= 0 && Verbalizer is not null && Array.IndexOf(Verbalizer, target) < 0)
                throw new ArgumentException($"batch: target {target} at loss position {p} is not one of the verbalizer's tokens [{string.Join(", ", Verbalizer)}]");
        }
    }
}

/// <summary>What a position of a sequence is, before batching.</summary>
public readonly record struct Slot(int Source, int Target = -1)
{
    /// <summary>A token; <paramref name="target"/> is the token this position should predict, or -1.</summary>
    public static Slot Token(int id, int target = -1) => new(id, target);
    /// <summary>Row <paramref name="row"/> of the prompt bank.</summary>
    public static Slot Prompt(int row) => new(-1 - row);
}

/// <summary>Builds batches from sequences of slots: right-pads to the longest row, numbers positions
/// from 0 in each row (prompt slots included, as Hugging Face PEFT does), and collects the scored positions.</summary>
public static class BatchBuilder
{
    /// <summary>A batch of the given rows (padding with token 0 and key mask 0).</summary>
    public static Batch Build(IReadOnlyList<IReadOnlyList<Slot>> rows, int[]? verbalizer = null, int? length = null)
    {
        if (rows.Count == 0) throw new ArgumentException("a batch needs at least one row");
        var t = length ?? rows.Max(r => r.Count);
        if (rows.Any(r => r.Count > t)) throw new ArgumentException($"a row is longer than the batch length {t}");
        var n = rows.Count * t;
        var source = new int[n];
        var mask = new int[n];
        var positions = new int[n];
        var lossPositions = new List<int>();
        var targets = new List<int>();
        for (var b = 0; b < rows.Count; b++)
        {
            for (var i = 0; i < t; i++) positions[b * t + i] = i;
            for (var i = 0; i < rows[b].Count; i++)
            {
                var slot = rows[b][i];
                source[b * t + i] = slot.Source;
                mask[b * t + i] = 1;
                if (slot.Target >= 0)
                {
                    lossPositions.Add(b * t + i);
                    targets.Add(slot.Target);
                }
            }
        }
        return new Batch(rows.Count, t, source, mask, positions, lossPositions.ToArray(), targets.ToArray(), verbalizer);
    }

    /// <summary>A language-modelling row: the prompt at <paramref name="placement"/> and the tokens
    /// <paramref name="input"/> followed by <paramref name="target"/>. Each position predicts the slot after
    /// it when that slot is a scored token: every target token, or, with no target, every input token after
    /// the first. Prompt slots are never predicted (PEFT labels them -100).</summary>
    /// <param name="input">Input tokens, BOS included if the model wants one.</param>
    /// <param name="target">Tokens to score, or empty to score the whole input.</param>
    /// <param name="promptTableRows">Prompt-bank rows to place (e.g. 0..n−1), or empty for no prompt.</param>
    /// <param name="placement">Prefix (before everything) or suffix (after the input, before the target).</param>
    public static List<Slot> LanguageModelRow(IReadOnlyList<int> input, IReadOnlyList<int> target, IReadOnlyList<int> promptTableRows, PromptPlacement placement)
    {
        var firstScored = target.Count > 0 ? input.Count : 1;
        // (source, scored) in sequence order.
        var sequence = new List<(int Source, bool Scored)>();
        void AddPrompt() { foreach (var p in promptTableRows) sequence.Add((-1 - p, false)); }
        if (placement == PromptPlacement.Prefix) AddPrompt();
        for (var i = 0; i < input.Count; i++) sequence.Add((input[i], i >= firstScored));
        if (placement == PromptPlacement.Suffix) AddPrompt();
        for (var i = 0; i < target.Count; i++) sequence.Add((target[i], true));
        var row = new List<Slot>(sequence.Count);
        for (var j = 0; j < sequence.Count; j++)
        {
            var next = j + 1 < sequence.Count && sequence[j + 1].Scored ? sequence[j + 1].Source : -1;
            row.Add(new Slot(sequence[j].Source, next));
        }
        return row;
    }
}

/// <summary>Where a prompt sits relative to the text.</summary>
public enum PromptPlacement
{
    /// <summary>Before every token (Lester et al.; Hugging Face PEFT's layout).</summary>
    Prefix,
    /// <summary>After the input, before the target (the prompt reads the input; its last row predicts the answer).</summary>
    Suffix,
}
