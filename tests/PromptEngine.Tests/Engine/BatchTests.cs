using PromptEngine.Engine;

namespace PromptEngine.Tests.Engine;

public class BatchTests
{
    [Test]
    public void LanguageModelRowScoresTargetsAcrossEachPlacement()
    {
        int[] input = [1, 10, 11], target = [20, 21];
        var prefix = BatchBuilder.LanguageModelRow(input, target, [0, 1], PromptPlacement.Prefix);
        Assert.That(prefix.Select(s => s.Source), Is.EqualTo(new[] { -1, -2, 1, 10, 11, 20, 21 }));
        Assert.That(prefix.Select(s => s.Target), Is.EqualTo(new[] { -1, -1, -1, -1, 20, 21, -1 }));

        var suffix = BatchBuilder.LanguageModelRow(input, target, [0, 1], PromptPlacement.Suffix);
        Assert.That(suffix.Select(s => s.Source), Is.EqualTo(new[] { 1, 10, 11, -1, -2, 20, 21 }));
        // The last prompt row predicts the first target token; the input's last token predicts nothing (a prompt row follows).
        Assert.That(suffix.Select(s => s.Target), Is.EqualTo(new[] { -1, -1, -1, -1, 20, 21, -1 }));

        var wholeText = BatchBuilder.LanguageModelRow(input, [], [], PromptPlacement.Prefix);
        Assert.That(wholeText.Select(s => s.Target), Is.EqualTo(new[] { 10, 11, -1 }));
    }

    [Test]
    public void BuildPadsRightAndNumbersPositionsPerRow()
    {
        var batch = BatchBuilder.Build([[Slot.Prompt(0), Slot.Token(5, 6), Slot.Token(6)], [Slot.Token(7, 8)]]);
        Assert.That((batch.Rows, batch.Length), Is.EqualTo((2, 3)));
        Assert.That(batch.SourceMap, Is.EqualTo(new[] { -1, 5, 6, 7, 0, 0 }));
        Assert.That(batch.KeyMask, Is.EqualTo(new[] { 1, 1, 1, 1, 0, 0 }));
        Assert.That(batch.PositionIds, Is.EqualTo(new[] { 0, 1, 2, 0, 1, 2 }));
        Assert.That(batch.LossPositions, Is.EqualTo(new[] { 1, 3 }));
        Assert.That(batch.Targets, Is.EqualTo(new[] { 6, 8 }));
    }

    [Test]
    public void ValidateNamesWhatIsWrong()
    {
        var good = BatchBuilder.Build([[Slot.Prompt(0), Slot.Token(5, 6), Slot.Token(6)]]);
        Assert.DoesNotThrow(() => good.Validate(vocabSize: 10, promptTableRows: 1, maxPositions: 8));
        Assert.That(Assert.Throws<ArgumentException>(() => good.Validate(10, 0, 8))!.Message, Does.Contain("prompt row 0"));
        Assert.That(Assert.Throws<ArgumentException>(() => good.Validate(6, 1, 8))!.Message, Does.Contain("token 6"));
        Assert.That(Assert.Throws<ArgumentException>(() => good.Validate(10, 1, 2))!.Message, Does.Contain("position id 2"));
        var twins = good with { Verbalizer = [6, 6] };
        Assert.That(Assert.Throws<ArgumentException>(() => twins.Validate(10, 1, 8))!.Message, Does.Contain("not distinct"));
        var outside = good with { Verbalizer = [3, 4] };
        Assert.That(Assert.Throws<ArgumentException>(() => outside.Validate(10, 1, 8))!.Message, Does.Contain("not one of the verbalizer"));
        var padded = BatchBuilder.Build([[Slot.Token(1, 2)], [Slot.Token(1, 2), Slot.Token(2)]]);
        var scoredPadding = padded with { LossPositions = [1], Targets = [2] };
        Assert.That(Assert.Throws<ArgumentException>(() => scoredPadding.Validate(10, 0, 8))!.Message, Does.Contain("padding"));
    }
}
