using System.Text;

namespace PromptEngine.Training.Data;

/// <summary>A template, a verbalizer or encoding options that cannot work: the message quotes the
/// template (and the column, marker or label at fault).</summary>
public sealed class PromptTemplateException : PromptEngineException
{
    /// <summary>Creates the exception with a message naming the template and the problem.</summary>
    public PromptTemplateException(string message, Exception? inner = null) : base(message, inner) { }
}

/// <summary>What one piece of a template is.</summary>
public enum TemplatePartKind
{
    /// <summary>Fixed text, tokenised with the text around it.</summary>
    Literal,
    /// <summary>The example's text (<c>{text}</c> or <c>{input}</c>).</summary>
    Text,
    /// <summary>The soft prompt's virtual tokens (<c>{prompt}</c>).</summary>
    Prompt,
    /// <summary>The answer (<c>{answer}</c>): the label word or the output, always last.</summary>
    Answer,
}

/// <summary>One piece of a template.</summary>
/// <param name="Kind">Literal or marker.</param>
/// <param name="Literal">The text of a literal; empty for a marker.</param>
public readonly record struct TemplatePart(TemplatePartKind Kind, string Literal = "");

/// <summary>
/// How an example becomes a sequence: literal text with the markers <c>{prompt}</c> (the soft prompt,
/// anywhere; written several times, the prompt's virtual tokens are shared out among the places in order,
/// which interleaves the prompt with the text), <c>{text}</c> or its synonym <c>{input}</c> (exactly once) and
/// <c>{answer}</c> (exactly once, last). <c>{{</c> and <c>}}</c> stand for literal braces.
/// Example: <c>"{prompt} Review: {text} Sentiment:{answer}"</c>.
/// </summary>
/// <remarks>The answer must be last because everything after the scored position would be read by
/// nothing: the model is causal, and the answer is what the preceding position predicts.</remarks>
public sealed class PromptTemplate
{
    /// <summary>The template as written.</summary>
    public string Source { get; }

    /// <summary>Literals and markers in order; adjacent literals merged, the last part is the answer.</summary>
    public IReadOnlyList<TemplatePart> Parts { get; }

    /// <summary>Whether the template places a soft prompt.</summary>
    public bool HasPrompt => PromptPlaces > 0;

    /// <summary>How many <c>{prompt}</c> markers the template has (0 for none).</summary>
    public int PromptPlaces => Parts.Count(p => p.Kind == TemplatePartKind.Prompt);

    /// <summary>The literal right before <c>{answer}</c> (e.g. " Sentiment:"), or empty when a marker
    /// precedes it: the context the answer's tokens continue (see <see cref="Verbalizer"/>).</summary>
    public string AnswerContext => Parts.Count >= 2 && Parts[^2].Kind == TemplatePartKind.Literal ? Parts[^2].Literal : "";

    PromptTemplate(string source, IReadOnlyList<TemplatePart> parts)
    {
        Source = source;
        Parts = parts;
    }

    /// <inheritdoc/>
    public override string ToString() => Source;

    /// <summary>Parses <paramref name="template"/>.</summary>
    /// <exception cref="PromptTemplateException">An unknown or unclosed marker, a lone '}', a missing,
    /// repeated or misplaced marker; the message quotes the template and gives the 1-based column.</exception>
    public static PromptTemplate Parse(string template)
    {
        ArgumentNullException.ThrowIfNull(template);
        var parts = new List<TemplatePart>();
        var literal = new StringBuilder();
        var literalStart = 0;
        void FlushLiteral()
        {
            if (literal.Length > 0) parts.Add(new TemplatePart(TemplatePartKind.Literal, literal.ToString()));
            literal.Clear();
        }
        PromptTemplateException Error(int index, string problem) =>
            new($"template \"{template}\", column {index + 1}: {problem}");

        int? textColumn = null, answerColumn = null;
        for (var i = 0; i < template.Length; i++)
        {
            var c = template[i];
            if (literal.Length == 0) literalStart = i;
            if (c == '{' && i + 1 < template.Length && template[i + 1] == '{') { literal.Append('{'); i++; continue; }
            if (c == '}' && i + 1 < template.Length && template[i + 1] == '}') { literal.Append('}'); i++; continue; }
            if (c == '}') throw Error(i, "'}' without a marker (write '}}' for a literal brace)");
            if (c != '{') { literal.Append(c); continue; }

            var close = template.IndexOf('}', i + 1);
            var nextOpen = template.IndexOf('{', i + 1);
            if (close < 0 || (nextOpen >= 0 && nextOpen < close)) throw Error(i, "'{' is not closed (write '{{' for a literal brace)");
            var name = template[(i + 1)..close];
            if (answerColumn is not null) throw Error(i, $"{{{name}}} after {{answer}}: the answer must be last");
            FlushLiteral();
            switch (name)
            {
                case "text" or "input":
                    if (textColumn is not null) throw Error(i, $"a second text marker {{{name}}} (the first is at column {textColumn + 1}); a template has one text");
                    textColumn = i;
                    parts.Add(new TemplatePart(TemplatePartKind.Text));
                    break;
                case "prompt":
                    if (parts.Count > 0 && parts[^1].Kind == TemplatePartKind.Prompt)
                        throw Error(i, "{prompt} right after {prompt}: write one marker (its virtual tokens are consecutive anyway)");
                    parts.Add(new TemplatePart(TemplatePartKind.Prompt));
                    break;
                case "answer":
                    answerColumn = i;
                    parts.Add(new TemplatePart(TemplatePartKind.Answer));
                    break;
                default:
                    throw Error(i, $"unknown marker {{{name}}}; the markers are {{prompt}}, {{text}} (or {{input}}) and {{answer}}");
            }
            i = close;
        }
        if (answerColumn is null) throw new PromptTemplateException($"template \"{template}\": no {{answer}} marker; it must end the template");
        if (literal.Length > 0)
            throw Error(literalStart, $"text \"{literal}\" after {{answer}}: the answer must be last");
        if (textColumn is null) throw new PromptTemplateException($"template \"{template}\": no {{text}} (or {{input}}) marker");
        return new PromptTemplate(template, parts);
    }
}
