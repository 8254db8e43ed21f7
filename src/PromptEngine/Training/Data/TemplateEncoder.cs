using PromptEngine.Data;
using PromptEngine.Engine;
using PromptEngine.Tokenization;

namespace PromptEngine.Training.Data;

/// <summary>Which part of an over-long text survives truncation.</summary>
public enum TruncationSide
{
    /// <summary>Keep the beginning, drop tokens from the end (the default: a review's opening states its
    /// subject, and it is what a reader sees first).</summary>
    KeepBeginning,
    /// <summary>Keep the end, drop tokens from the beginning (a review's verdict is often at its end).</summary>
    KeepEnd,
    /// <summary>Keep a quarter of the room from the beginning and three quarters from the end, dropping the middle
    /// (head + tail truncation, Sun et al. 2019, "How to Fine-Tune BERT for Text Classification?": the opening
    /// says what is reviewed, the close gives the verdict).</summary>
    KeepBothEnds,
}

/// <summary>How rows are laid out.</summary>
/// <param name="MaxLength">Most positions per row, everything counted: BOS, literals, text, prompt
/// slots and (generation) output tokens; at most the engine's <see cref="EngineOptions.MaxLength"/>.</param>
/// <param name="VirtualTokens">Virtual tokens n the <c>{prompt}</c> marker expands to (0 for none); with several
/// markers they are shared out in order, the first markers taking one more when n does not divide evenly.</param>
/// <param name="FirstPromptRow">Prompt-bank row of the first virtual token (rows FirstPromptRow … +n−1).</param>
/// <param name="Truncation">Which end of an over-long text is kept.</param>
/// <param name="AppendEos">Generation: also score the end-of-sequence token after the output, so the
/// prompt learns where to stop (needs a tokenizer with EOS).</param>
public sealed record EncoderOptions(int MaxLength, int VirtualTokens, int FirstPromptRow = 0,
    TruncationSide Truncation = TruncationSide.KeepBeginning, bool AppendEos = false);

/// <summary>One example as engine slots.</summary>
/// <param name="Source">The row it came from.</param>
/// <param name="Slots">The row: tokens and prompt slots; the scored slots carry targets.</param>
/// <param name="PrefixLength">Slots before the answer: all of them for classification; for
/// generation the part to feed a generator (the output starts right after).</param>
/// <param name="Label">Classification: the label's column in the verbalizer; -1 for generation.</param>
/// <param name="DroppedTextTokens">Tokens cut from the text to fit (0 when it fit), counted in the
/// text's own tokenisation.</param>
public sealed record EncodedExample(Example Source, Slot[] Slots, int PrefixLength, int Label, int DroppedTextTokens)
{
    /// <summary>Positions the row takes.</summary>
    public int Length => Slots.Length;
}

/// <summary>What encoding a dataset did.</summary>
/// <param name="Encoded">Examples encoded.</param>
/// <param name="Truncated">Examples whose text was cut to fit.</param>
/// <param name="DroppedTextTokens">Text tokens cut, over all examples.</param>
/// <param name="LongestRow">Positions of the longest row.</param>
public sealed record EncodingReport(int Encoded, int Truncated, long DroppedTextTokens, int LongestRow);

/// <summary>
/// Turns examples into engine rows through a <see cref="PromptTemplate"/>.
/// <para><b>Tokenisation.</b> The template is cut at <c>{prompt}</c> and <c>{answer}</c> into text
/// segments; each segment (its literals with the example's text in place of <c>{text}</c>) is
/// tokenised as one string, so a tokenizer sees "Review: " + text + " Sentiment:" as a whole and
/// SentencePiece adds its dummy-prefix '▁' once per segment rather than once per piece, and a word
/// split across literal and text is tokenised as it would be in running text. The first text segment
/// starts with BOS when the tokenizer has one. A <c>{prompt}</c> at the very start therefore
/// precedes BOS, as Hugging Face PEFT prepends its virtual tokens to the input embeddings.</para>
/// <para><b>Answer.</b> Classification: the slot before <c>{answer}</c> (the last token of the segment,
/// or the last prompt slot when <c>{prompt}</c> is right before it) predicts the label's verbalizer
/// token; the label itself takes no position. Generation: the output is tokenised with the segment
/// before it (segment + output as one string; the tokens past the segment's own are the output's;
/// should a merge cross the boundary, the merged token counts as output) and each output token is
/// predicted by the slot before it. The last output token predicts nothing (or EOS with
/// <see cref="EncoderOptions.AppendEos"/>), so it takes a position only when EOS is scored.</para>
/// <para><b>Truncation.</b> A row longer than <see cref="EncoderOptions.MaxLength"/> loses text tokens
/// only, from the end (or the beginning, per <see cref="EncoderOptions.Truncation"/>): the text is
/// tokenised alone, cut, decoded and put back, and the whitespace at the cut is trimmed; literals,
/// prompt and answer are never cut. When the row still does not fit with the text empty, that is an
/// error.</para>
/// </summary>
public sealed class TemplateEncoder
{
    readonly PromptTemplate template;
    readonly ITextTokenizer tokenizer;
    readonly EncoderOptions options;
    readonly Verbalizer? verbalizer;
    readonly DatasetKind kind;
    // The template cut at {prompt} and {answer}: each entry is a prompt (null) or a text segment's parts.
    readonly List<TemplatePart[]?> segments = new();
    int encoded, truncated, longest;
    long dropped;

    /// <summary>Options the rows are laid out with.</summary>
    public EncoderOptions Options => options;

    /// <summary>Counts since construction (safe to read while <see cref="EncodeAll"/> runs on several threads).</summary>
    public EncodingReport Report => new(encoded, truncated, dropped, longest);

    /// <summary>An encoder for classification (with a <paramref name="verbalizer"/>) or generation (without).</summary>
    /// <exception cref="PromptTemplateException">Options that cannot work with the template: a prompt
    /// with no <c>{prompt}</c> marker, EOS asked of a tokenizer without one, or a template that does
    /// not fit <see cref="EncoderOptions.MaxLength"/> even with an empty text.</exception>
    public TemplateEncoder(PromptTemplate template, ITextTokenizer tokenizer, EncoderOptions options, Verbalizer? verbalizer)
    {
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(options);
        this.template = template;
        this.tokenizer = tokenizer;
        this.options = options;
        this.verbalizer = verbalizer;
        kind = verbalizer is null ? DatasetKind.Generation : DatasetKind.Classification;
        if (options.MaxLength <= 0) throw new PromptTemplateException($"template \"{template.Source}\": max length {options.MaxLength} must be positive");
        if (options.VirtualTokens < 0 || options.FirstPromptRow < 0)
            throw new PromptTemplateException($"template \"{template.Source}\": prompt tokens {options.VirtualTokens} and first prompt row {options.FirstPromptRow} must not be negative");
        if (options.VirtualTokens > 0 && !template.HasPrompt)
            throw new PromptTemplateException($"template \"{template.Source}\" has no {{prompt}} marker, but {options.VirtualTokens} prompt tokens are to be placed");
        if (options.VirtualTokens > 0 && options.VirtualTokens < template.PromptPlaces)
            throw new PromptTemplateException($"template \"{template.Source}\" places the prompt {template.PromptPlaces} times, but it has only {options.VirtualTokens} virtual tokens");
        if (options.AppendEos && (verbalizer is not null || tokenizer.EosId < 0))
            throw new PromptTemplateException(verbalizer is not null
                ? "AppendEos applies to generation; a classification row ends at its label"
                : $"AppendEos: the tokenizer has no end-of-sequence token");

        var current = new List<TemplatePart>();
        foreach (var part in template.Parts)
        {
            if (part.Kind is TemplatePartKind.Literal or TemplatePartKind.Text) { current.Add(part); continue; }
            if (current.Count > 0) segments.Add(current.ToArray());
            current.Clear();
            if (part.Kind == TemplatePartKind.Prompt) segments.Add(null);
        }

        if (kind == DatasetKind.Classification)
        {
            var fixedLength = Build("", null, "", out _).Length;
            if (fixedLength > options.MaxLength)
                throw new PromptTemplateException($"template \"{template.Source}\" with {options.VirtualTokens} prompt tokens takes {fixedLength} positions with an empty text; max length is {options.MaxLength}");
        }
    }

    /// <summary>Encodes every example of <paramref name="dataset"/>, in order.</summary>
    /// <param name="dataset">The rows; its kind must match the encoder's (verbalizer or not).</param>
    /// <param name="threads">Rows encoded at once. Above 1 the tokenizer must be safe to call from several
    /// threads; both of PromptEngine's are (they keep no state between calls). The result, the report
    /// and the error raised (that of the earliest bad line) do not depend on it.</param>
    /// <exception cref="DataFormatException">A row that cannot be encoded (a label outside the verbalizer,
    /// an output too long to fit), naming the file and line.</exception>
    public IReadOnlyList<EncodedExample> EncodeAll(JsonlDataset dataset, int threads = 1)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        if (dataset.Fields.Kind != kind)
            throw new PromptTemplateException($"{dataset.Path}: a {dataset.Fields.Kind} dataset given to a {kind} encoder ({(kind == DatasetKind.Classification ? "with" : "without")} a verbalizer)");
        var examples = dataset.Examples;
        var rows = new EncodedExample[examples.Count];
        var errors = new Exception?[examples.Count];
        Parallel.For(0, examples.Count, new ParallelOptions { MaxDegreeOfParallelism = threads }, i =>
        {
            try { rows[i] = Encode(examples[i], dataset.Path); }
            catch (Exception e) when (e is PromptEngineException) { errors[i] = e; }
        });
        var first = Array.FindIndex(errors, e => e is not null);
        if (first >= 0) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(errors[first]!);
        return rows;
    }

    /// <summary>Encodes one example.</summary>
    /// <param name="example">The row.</param>
    /// <param name="sourceName">The file it came from, for error messages.</param>
    /// <exception cref="DataFormatException">A label outside the verbalizer, or a row that does not fit
    /// even with its text empty (a long output); names <paramref name="sourceName"/> and the line.</exception>
    public EncodedExample Encode(Example example, string sourceName = "example")
    {
        ArgumentNullException.ThrowIfNull(example);
        var label = -1;
        if (verbalizer is not null)
        {
            label = verbalizer.IndexOf(example.Answer);
            if (label < 0)
                throw new DataFormatException(sourceName, null, $"line {example.Line}: label \"{example.Answer}\" is not one of the verbalizer's [{string.Join(", ", verbalizer.Labels)}]");
        }
        var slots = Build(example.Text, example, sourceName, out var prefixLength);
        var droppedTokens = 0;
        if (slots.Length > options.MaxLength)
        {
            var textIds = tokenizer.Encode(example.Text, addBos: false);
            var keep = textIds.Count - (slots.Length - options.MaxLength);
            while (true)
            {
                keep = Math.Max(keep, 0);
                var kept = keep == 0 ? "" : KeptText(textIds, keep);
                slots = Build(kept, example, sourceName, out prefixLength);
                if (slots.Length <= options.MaxLength) break;
                if (keep == 0)
                    throw new DataFormatException(sourceName, null, $"line {example.Line}: {slots.Length} positions with the text emptied " +
                        $"(template \"{template.Source}\", {options.VirtualTokens} prompt tokens{(kind == DatasetKind.Generation ? ", and the output" : "")}); max length is {options.MaxLength}");
                // Decoding and re-encoding at the cut can shift a token or two; cut again by the overshoot.
                keep -= slots.Length - options.MaxLength;
            }
            droppedTokens = textIds.Count - keep;
            Interlocked.Increment(ref truncated);
            Interlocked.Add(ref dropped, droppedTokens);
        }
        Interlocked.Increment(ref encoded);
        for (var seen = Volatile.Read(ref longest); slots.Length > seen; seen = Volatile.Read(ref longest))
            if (Interlocked.CompareExchange(ref longest, slots.Length, seen) == seen) break;
        return new EncodedExample(example, slots, prefixLength, label, droppedTokens);
    }

    string KeptText(IReadOnlyList<int> textIds, int keep)
    {
        // A cut inside a character's UTF-8 byte pieces decodes to U+FFFD; drop it rather than teach it.
        string Beginning(int count) => tokenizer.Decode(textIds.Take(count)).TrimEnd().TrimEnd('\uFFFD').TrimEnd();
        string End(int count) => tokenizer.Decode(textIds.Skip(textIds.Count - count)).TrimStart().TrimStart('\uFFFD').TrimStart();
        return options.Truncation switch
        {
            TruncationSide.KeepBeginning => Beginning(keep),
            TruncationSide.KeepEnd => End(keep),
            _ => keep < 4 ? End(keep) : Beginning(keep / 4) + " " + End(keep - keep / 4),
        };
    }

    /// <summary>The row for <paramref name="text"/>; <paramref name="example"/> supplies the answer
    /// (null: the template-only length check, no target).</summary>
    Slot[] Build(string text, Example? example, string sourceName, out int prefixLength)
    {
        var sources = new List<int>();
        var bos = tokenizer.BosId >= 0;
        int[] outputTokens = [];
        int places = template.PromptPlaces, place = 0, nextPromptRow = options.FirstPromptRow;
        for (var s = 0; s < segments.Count; s++)
        {
            var segment = segments[s];
            if (segment is null)
            {
                var here = options.VirtualTokens / places + (place < options.VirtualTokens % places ? 1 : 0);
                for (var i = 0; i < here; i++) sources.Add(-1 - nextPromptRow++);
                place++;
                continue;
            }
            var segmentText = string.Concat(segment.Select(p => p.Kind == TemplatePartKind.Text ? text : p.Literal));
            var isLast = s == segments.Count - 1;
            if (isLast && kind == DatasetKind.Generation && example is not null)
            {
                var whole = tokenizer.Encode(segmentText + example.Answer, addBos: bos);
                var alone = tokenizer.Encode(segmentText, addBos: bos);
                var common = 0;
                while (common < alone.Count && common < whole.Count && whole[common] == alone[common]) common++;
                sources.AddRange(whole.Take(common));
                outputTokens = whole.Skip(common).ToArray();
            }
            else sources.AddRange(tokenizer.Encode(segmentText, addBos: bos));
            bos = false;
        }
        if (kind == DatasetKind.Generation && example is not null && segments[^1] is null)
            outputTokens = tokenizer.Encode(example.Answer, addBos: false).ToArray();

        prefixLength = sources.Count;
        if (example is not null && prefixLength == 0)
            throw new DataFormatException(sourceName, null, $"line {example.Line}: nothing precedes {{answer}} in template \"{template.Source}\" for this text, so no position can predict the answer");
        if (kind == DatasetKind.Generation && example is not null && outputTokens.Length == 0)
            throw new DataFormatException(sourceName, null, $"line {example.Line}: the output \"{example.Answer}\" tokenises to nothing");

        var slots = new List<Slot>(sources.Count + outputTokens.Length);
        foreach (var source in sources) slots.Add(new Slot(source));
        if (example is null) return slots.ToArray();
        if (kind == DatasetKind.Classification)
        {
            slots[^1] = slots[^1] with { Target = verbalizer!.TokenIds[verbalizer.IndexOf(example.Answer)] };
            return slots.ToArray();
        }
        slots[^1] = slots[^1] with { Target = outputTokens[0] };
        for (var i = 0; i < outputTokens.Length - 1; i++) slots.Add(Slot.Token(outputTokens[i], outputTokens[i + 1]));
        if (options.AppendEos) slots.Add(Slot.Token(outputTokens[^1], tokenizer.EosId));
        return slots.ToArray();
    }

    /// <summary>A padded batch of <paramref name="examples"/> at <paramref name="indices"/> (right padding,
    /// key mask 0 on padding, see <see cref="BatchBuilder.Build"/>). For classification each row has one
    /// scored slot, so row s of the engine's (S, R) logits is example <c>indices[s]</c>.</summary>
    /// <param name="examples">Encoded examples.</param>
    /// <param name="indices">Which examples, in row order.</param>
    /// <param name="verbalizer">The verbalizer of a classification batch (restricts the softmax), or null.</param>
    public static Batch BuildBatch(IReadOnlyList<EncodedExample> examples, IReadOnlyList<int> indices, Verbalizer? verbalizer = null)
    {
        ArgumentNullException.ThrowIfNull(examples);
        ArgumentNullException.ThrowIfNull(indices);
        var rows = new IReadOnlyList<Slot>[indices.Count];
        for (var i = 0; i < indices.Count; i++)
        {
            if ((uint)indices[i] >= (uint)examples.Count)
                throw new ArgumentOutOfRangeException(nameof(indices), indices[i], $"example index outside the {examples.Count} examples");
            rows[i] = examples[indices[i]].Slots;
        }
        return BatchBuilder.Build(rows, verbalizer?.TokenIds);
    }
}
