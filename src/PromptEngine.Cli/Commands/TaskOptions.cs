using System.CommandLine;
using PromptEngine.Models;
using PromptEngine.Training.Data;

namespace PromptEngine.Cli.Commands;

/// <summary>The options <c>train</c>, <c>eval</c> and <c>demo</c> share: the model, the data's fields,
/// the template, the labels and their words, and the length budget.</summary>
internal sealed class TaskOptions
{
    public const string DefaultTemplate = "{prompt}Review: {text} Sentiment:{answer}";
    public const string DefaultGenerationTemplate = "{prompt}{input}{answer}";

    public readonly Option<string> Model = new("--model") { Description = "Hugging Face model folder.", Required = true };
    public readonly Option<DatasetKind> Task = new("--task") { Description = "Classification (text → label word) or Generation (input → output, loss on the output tokens only).", DefaultValueFactory = _ => DatasetKind.Classification };
    public readonly Option<string?> TextField = new("--text-field") { Description = "JSONL field holding the text (default: text, or input for generation)." };
    public readonly Option<string?> LabelField = new("--label-field") { Description = "JSONL field holding the label (default: label, or output for generation)." };
    public readonly Option<string?> Template = new("--template") { Description = $"Row template with {{prompt}}, {{text}} and a final {{answer}} (default: \"{DefaultTemplate}\", or \"{DefaultGenerationTemplate}\" for generation)." };
    public readonly Option<string[]> Labels = new("--labels") { Description = "Labels in verbalizer order, comma- or space-separated: --labels negative,positive or --labels negative positive (default: the data's labels, sorted).", AllowMultipleArgumentsPerToken = true };
    public readonly Option<string[]> LabelWords = new("--label-words") { Description = "Word per label, same order as --labels (default: \" \" + label).", AllowMultipleArgumentsPerToken = true };
    public readonly Option<int> MaxLength = new("--max-length") { Description = "Positions per row, prompt included; longer texts are truncated. At most the model's context (the default 128 is lowered to it).", DefaultValueFactory = _ => 128 };
    public readonly Option<TruncationSide> Truncation = new("--truncation") { Description = "Which end of an over-long text to keep.", DefaultValueFactory = _ => TruncationSide.KeepBeginning };
    public readonly Option<bool> SkipMalformed = new("--skip-malformed") { Description = "Skip and count malformed JSONL lines instead of stopping at the first." };

    public void AddTo(Command command)
    {
        foreach (var option in new Option[] { Model, Task, TextField, LabelField, Template, Labels, LabelWords, MaxLength, Truncation, SkipMalformed })
            command.Options.Add(option);
        OptionChecks.Require(MaxLength, v => v >= 8, "must be at least 8");
    }

    public bool IsGeneration(ParseResult parse) => parse.GetValue(Task) == DatasetKind.Generation;

    public string TemplateText(ParseResult parse) => parse.GetValue(Template) ?? (IsGeneration(parse) ? DefaultGenerationTemplate : DefaultTemplate);

    /// <summary>Loads a JSONL file of the task's kind with the field names given; a file with no examples is refused
    /// naming it (<paramref name="flag"/> says which option gave it).</summary>
    public JsonlDataset Load(ParseResult parse, string path, string flag)
    {
        PathChecks.InputFile(flag, path);
        var fields = IsGeneration(parse)
            ? JsonlFieldNames.Generation(parse.GetValue(TextField) ?? "input", parse.GetValue(LabelField) ?? "output")
            : JsonlFieldNames.Classification(parse.GetValue(TextField) ?? "text", parse.GetValue(LabelField) ?? "label");
        var data = JsonlDataset.Load(path, fields, parse.GetValue(SkipMalformed));
        if (data.Examples.Count == 0)
            throw new PromptEngineException(data.Report.Malformed > 0
                ? $"{path} ({flag}): every one of its {data.Report.Malformed} line(s) is malformed, so there are no examples"
                : $"{path} ({flag}): no examples (the file is empty)");
        return data;
    }

    /// <summary>The labels in verbalizer order as given, each value split at commas; null when none are given.</summary>
    public string[]? GivenLabels(ParseResult parse)
    {
        if (parse.GetValue(Labels) is not { Length: > 0 } given) return null;
        var labels = given.SelectMany(l => l.Split(',', StringSplitOptions.TrimEntries)).ToArray();
        if (labels.Any(l => l.Length == 0)) throw new UsageException($"--labels {OptionChecks.Cut(string.Join(" ", given))} holds an empty label");
        return labels;
    }

    /// <summary>Positions per row: --max-length, refused when it exceeds the model's context; the default is lowered to it.</summary>
    public int RowLength(ParseResult parse, TransformerConfig config)
    {
        var length = parse.GetValue(MaxLength);
        if (length <= config.ContextLength) return length;
        if (parse.GetResult(MaxLength) is { Implicit: false })
            throw new UsageException($"--max-length {length} exceeds the model's context of {config.ContextLength} positions");
        return config.ContextLength;
    }

    /// <summary>The template, parsed; an error names --template and quotes at most the start of a long template.</summary>
    public PromptTemplate ParseTemplate(ParseResult parse)
    {
        var text = TemplateText(parse);
        try
        {
            return PromptTemplate.Parse(text);
        }
        catch (PromptTemplateException e)
        {
            throw new UsageException("--" + e.Message.Replace($"template \"{text}\"", $"template \"{OptionChecks.Cut(text)}\""));
        }
    }

    /// <summary>The template, the verbalizer and an encoder for <paramref name="virtualTokens"/> virtual tokens.</summary>
    public (PromptTemplate Template, Verbalizer Verbalizer, TemplateEncoder Encoder) Build(ParseResult parse, ModelFolder model, JsonlDataset data, int virtualTokens)
    {
        var (template, verbalizer, encoder) = BuildAny(parse, model, data, virtualTokens);
        return (template, verbalizer ?? throw new UsageException("this command needs --task Classification"), encoder);
    }

    /// <summary>The template, the verbalizer (classification only) and an encoder.</summary>
    public (PromptTemplate Template, Verbalizer? Verbalizer, TemplateEncoder Encoder) BuildAny(ParseResult parse, ModelFolder model, JsonlDataset data, int virtualTokens)
    {
        try
        {
            return BuildEncoder(parse, model, data, virtualTokens);
        }
        catch (PromptTemplateException e)
        {
            // The template and the length flags cannot make a row (the library quotes the whole template: cut it).
            var text = TemplateText(parse);
            throw new UsageException("--" + e.Message.Replace($"template \"{text}\"", $"template \"{OptionChecks.Cut(text)}\"")
                + (e.Message.Contains("max length", StringComparison.Ordinal) || e.Message.Contains("positions", StringComparison.Ordinal) ? " (see --max-length and --virtual-tokens)" : ""));
        }
    }

    (PromptTemplate Template, Verbalizer? Verbalizer, TemplateEncoder Encoder) BuildEncoder(ParseResult parse, ModelFolder model, JsonlDataset data, int virtualTokens)
    {
        var template = ParseTemplate(parse);
        if (virtualTokens > 0 && !template.HasPrompt)
            throw new UsageException($"--template '{OptionChecks.Cut(TemplateText(parse))}' has no {{prompt}} marker, so a {virtualTokens}-token prompt has nowhere to go");
        if (IsGeneration(parse))
            return (template, null, new TemplateEncoder(template, model.Tokenizer,
                new EncoderOptions(RowLength(parse, model.Config), template.HasPrompt ? virtualTokens : 0,
                    Truncation: parse.GetValue(Truncation), AppendEos: model.Tokenizer.EosId >= 0), null));
        IReadOnlyList<string> labels = GivenLabels(parse) is { } given ? given : data.Labels.OrderBy(l => l, StringComparer.Ordinal).ToArray();
        var words = parse.GetValue(LabelWords) is { Length: > 0 } w ? w : null;
        if (words is not null && words.Length != labels.Count) throw new UsageException($"--label-words gives {words.Length} words for {labels.Count} labels");
        var verbalizer = Verbalizer.Create(model.Tokenizer, template, labels, words);
        var encoder = new TemplateEncoder(template, model.Tokenizer,
            new EncoderOptions(RowLength(parse, model.Config), template.HasPrompt ? virtualTokens : 0,
                Truncation: parse.GetValue(Truncation)), verbalizer);
        return (template, verbalizer, encoder);
    }

    /// <summary>The first <paramref name="limit"/> examples (all when 0), encoded.</summary>
    public static IReadOnlyList<EncodedExample> Encode(TemplateEncoder encoder, JsonlDataset data, int limit)
    {
        var examples = limit > 0 ? data.Examples.Take(limit) : data.Examples;
        return examples.Select(e => encoder.Encode(e, data.Path)).ToList();
    }
}
