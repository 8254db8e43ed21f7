using PromptEngine.Training.Data;

namespace PromptEngine.Tests.Training;

public class PromptTemplateTests
{
    static TemplatePart L(string text) => new(TemplatePartKind.Literal, text);
    static readonly TemplatePart Text = new(TemplatePartKind.Text);
    static readonly TemplatePart Prompt = new(TemplatePartKind.Prompt);
    static readonly TemplatePart Answer = new(TemplatePartKind.Answer);

    [Test]
    public void ParsesPromptAnywhereAndTheAnswerLast()
    {
        Assert.That(PromptTemplate.Parse("{prompt} Review: {text} Sentiment:{answer}").Parts,
            Is.EqualTo(new[] { Prompt, L(" Review: "), Text, L(" Sentiment:"), Answer }));
        Assert.That(PromptTemplate.Parse("Review: {text}{prompt} Sentiment:{answer}").Parts,
            Is.EqualTo(new[] { L("Review: "), Text, Prompt, L(" Sentiment:"), Answer }));
        Assert.That(PromptTemplate.Parse("Q: {input}\nA:{prompt}{answer}").Parts,
            Is.EqualTo(new[] { L("Q: "), Text, L("\nA:"), Prompt, Answer }));
        Assert.That(PromptTemplate.Parse("{text}{answer}").Parts, Is.EqualTo(new[] { Text, Answer }));
    }

    [Test]
    public void DoubledBracesAreLiteralBraces()
    {
        var template = PromptTemplate.Parse("{{json}} {text} }}{{{answer}");
        Assert.That(template.Parts, Is.EqualTo(new[] { L("{json} "), Text, L(" }{"), Answer }));
        Assert.That(template.AnswerContext, Is.EqualTo(" }{"));
    }

    [Test]
    public void AnswerContextIsTheLiteralRightBeforeTheAnswer()
    {
        Assert.That(PromptTemplate.Parse("{prompt} Review: {text} Sentiment:{answer}").AnswerContext, Is.EqualTo(" Sentiment:"));
        Assert.That(PromptTemplate.Parse("Review: {text} Sentiment:{prompt}{answer}").AnswerContext, Is.Empty);
        Assert.That(PromptTemplate.Parse("{text}{answer}").AnswerContext, Is.Empty);
        Assert.That(PromptTemplate.Parse("{text}{answer}").HasPrompt, Is.False);
        Assert.That(PromptTemplate.Parse("{prompt}{text}{answer}").HasPrompt, Is.True);
    }

    [TestCase("Review: {text} Sentiment:", "no {answer} marker")]
    [TestCase("{answer} {text}", "column 10: {text} after {answer}")]
    [TestCase("{text}: {answer}.", "column 17: text \".\" after {answer}")]
    [TestCase("{text}{answer} ", "column 15: text \" \" after {answer}")]
    [TestCase("{text} {label}{answer}", "column 8: unknown marker {label}")]
    [TestCase("{Text}{answer}", "column 1: unknown marker {Text}")]
    [TestCase("{text} {answer", "column 8: '{' is not closed")]
    [TestCase("{text {answer}", "column 1: '{' is not closed")]
    [TestCase("{text} } {answer}", "column 8: '}' without a marker")]
    [TestCase("{prompt} Sentiment:{answer}", "no {text} (or {input}) marker")]
    [TestCase("{text} {input}{answer}", "column 8: a second text marker {input} (the first is at column 1)")]
    [TestCase("{prompt}{prompt}{text}{answer}", "column 9: {prompt} right after {prompt}")]
    [TestCase("{text}{answer}{answer}", "column 15: {answer} after {answer}")]
    public void RejectsBadTemplatesNamingTheColumn(string template, string expected)
    {
        var e = Assert.Throws<PromptTemplateException>(() => PromptTemplate.Parse(template))!;
        Assert.That(e.Message, Does.StartWith($"template \"{template}\""));
        Assert.That(e.Message, Does.Contain(expected));
    }
}
