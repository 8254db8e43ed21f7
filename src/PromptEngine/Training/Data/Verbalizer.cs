using PromptEngine.Tokenization;

namespace PromptEngine.Training.Data;

/// <summary>
/// Maps each class label to a label word and the word to the token the model must predict: the
/// word's first token as it is tokenised right after the template's <see cref="PromptTemplate.AnswerContext"/>.
/// The softmax of a classification batch is restricted to these tokens (<see cref="TokenIds"/>, in
/// label order, is <see cref="Engine.Batch.Verbalizer"/>), so the engine's (S, R) logits have one
/// column per label, in this order.
/// </summary>
/// <remarks>
/// Why tokenise in context: SentencePiece adds a dummy-prefix '▁' to every string it encodes, so
/// " positive" alone encodes as ['▁', '▁positive'] and both labels would start with '▁'; GPT-2's BPE
/// folds the space into 'Ġpositive'. Encoding <c>context + word</c> and taking what follows the
/// tokens of <c>context</c> gives the token the model reads in "… Sentiment: positive" for both.
/// The default word of a label is the label after one space (" positive"), so a template ends with
/// its literal right before <c>{answer}</c> ("Sentiment:{answer}").
/// </remarks>
public sealed class Verbalizer
{
    /// <summary>Class labels, in column order.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>The label word of each label.</summary>
    public IReadOnlyList<string> Words { get; }

    /// <summary>All tokens of each word in context; only the first is scored.</summary>
    public IReadOnlyList<IReadOnlyList<int>> WordTokens { get; }

    /// <summary>(R) the scored token of each label: the first token of its word; pairwise distinct.</summary>
    public int[] TokenIds { get; }

    readonly Dictionary<string, int> indexByLabel;

    Verbalizer(IReadOnlyList<string> labels, IReadOnlyList<string> words, IReadOnlyList<IReadOnlyList<int>> wordTokens)
    {
        Labels = labels;
        Words = words;
        WordTokens = wordTokens;
        TokenIds = wordTokens.Select(t => t[0]).ToArray();
        indexByLabel = labels.Select((label, i) => (label, i)).ToDictionary(p => p.label, p => p.i, StringComparer.Ordinal);
    }

    /// <summary>Tokenises the label words after <paramref name="template"/>'s answer context.</summary>
    /// <param name="tokenizer">The model's tokenizer.</param>
    /// <param name="template">Supplies the context the words follow.</param>
    /// <param name="labels">Class labels, in the order of the logit columns.</param>
    /// <param name="words">The word of each label, or null for " " + label.</param>
    /// <exception cref="PromptTemplateException">No labels, repeated labels, an empty word, a word that
    /// merges with the context's last token, or two words whose first tokens coincide.</exception>
    public static Verbalizer Create(ITextTokenizer tokenizer, PromptTemplate template, IReadOnlyList<string> labels, IReadOnlyList<string>? words = null)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        ArgumentNullException.ThrowIfNull(template);
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.Count < 2) throw new PromptTemplateException($"verbalizer: {labels.Count} label(s); a classifier needs at least two");
        if (words is not null && words.Count != labels.Count)
            throw new PromptTemplateException($"verbalizer: {labels.Count} labels but {words.Count} label words");
        var duplicate = labels.GroupBy(l => l, StringComparer.Ordinal).FirstOrDefault(g => g.Count() > 1);
        if (duplicate is not null) throw new PromptTemplateException($"verbalizer: label \"{duplicate.Key}\" is given twice");
        var wordList = words?.ToArray() ?? labels.Select(l => " " + l).ToArray();
        var context = template.AnswerContext;
        var tokens = new IReadOnlyList<int>[labels.Count];
        for (var i = 0; i < labels.Count; i++)
        {
            if (string.IsNullOrWhiteSpace(wordList[i])) throw new PromptTemplateException($"verbalizer: label \"{labels[i]}\" has an empty word");
            tokens[i] = Continuation(tokenizer, context, wordList[i])
                ?? throw new PromptTemplateException($"verbalizer: label word \"{wordList[i]}\" merges with the end of the template's context \"{context}\" " +
                    $"(template \"{template.Source}\"): the tokens of the context alone are not a prefix of the tokens of context + word; move spaces from the template into the word");
        }
        for (var i = 0; i < labels.Count; i++)
            for (var j = 0; j < i; j++)
                if (tokens[i][0] == tokens[j][0])
                    throw new PromptTemplateException($"verbalizer: label words \"{wordList[j]}\" ({labels[j]}) and \"{wordList[i]}\" ({labels[i]}) both start with token {tokens[i][0]} " +
                        $"\"{tokenizer.Decode([tokens[i][0]])}\" after \"{context}\" (template \"{template.Source}\"); the scored first tokens must differ");
        return new Verbalizer(labels.ToArray(), wordList, tokens);
    }

    /// <summary>Column of <paramref name="label"/>, or -1 when it is not one of <see cref="Labels"/>.</summary>
    public int IndexOf(string label) => indexByLabel.GetValueOrDefault(label, -1);

    /// <summary>The tokens <paramref name="text"/> adds after <paramref name="context"/>: the tokens of
    /// context + text after the tokens of context (no BOS); null when the tokens of context are not a
    /// prefix of those of context + text (a merge across the boundary), or text adds nothing.</summary>
    internal static int[]? Continuation(ITextTokenizer tokenizer, string context, string text)
    {
        var whole = tokenizer.Encode(context + text, addBos: false);
        if (context.Length == 0) return whole.Count > 0 ? whole.ToArray() : null;
        var prefix = tokenizer.Encode(context, addBos: false);
        if (whole.Count <= prefix.Count) return null;
        for (var i = 0; i < prefix.Count; i++)
            if (whole[i] != prefix[i]) return null;
        return whole.Skip(prefix.Count).ToArray();
    }
}
