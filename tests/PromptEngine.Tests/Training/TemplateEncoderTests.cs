using PromptEngine.Data;
using PromptEngine.Engine;
using PromptEngine.Tokenization;
using PromptEngine.Training.Data;

namespace PromptEngine.Tests.Training;

public class TemplateEncoderTests
{
    static readonly Lazy<SentencePieceBpeTokenizer> stories = new(() => (SentencePieceBpeTokenizer)TokenizerLoader.Load(TestAssets.Stories15MFolder));
    static SentencePieceBpeTokenizer Stories => stories.Value;
    static readonly string[] ImdbLabels = ["positive", "negative"];

    static string[] Pieces(IEnumerable<int> ids) => ids.Select(Stories.IdToPiece).ToArray();

    /// <summary>What SentencePiece's pieces of <paramref name="text"/> must concatenate to: the dummy-prefix
    /// '▁' and the text with its spaces escaped (true for any split into pieces the vocabulary covers).</summary>
    static string Escaped(string text) => "\u2581" + text.Replace(' ', '\u2581');

    static int[] Sources(IEnumerable<Slot> slots) => slots.Select(s => s.Source).ToArray();

    [Test]
    public void PrefixPromptRowWithTheStoriesTokenizer()
    {
        var template = PromptTemplate.Parse("{prompt} Review: {text} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        Assert.That(Pieces(verbalizer.TokenIds), Is.EqualTo(new[] { "\u2581positive", "\u2581negative" }));

        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(MaxLength: 256, VirtualTokens: 4), verbalizer);
        var row = encoder.Encode(new Example("A fun movie.", "negative", 9));

        Assert.That(Sources(row.Slots.Take(4)), Is.EqualTo(new[] { -1, -2, -3, -4 }), "prompt rows 0..3 first (PEFT puts them before BOS)");
        Assert.That(row.Slots[4].Source, Is.EqualTo(Stories.BosId));
        var tokens = Sources(row.Slots.Skip(5));
        // The segment after the prompt is one string: one dummy prefix, the literal's own space kept.
        Assert.That(string.Concat(Pieces(tokens)), Is.EqualTo(Escaped(" Review: A fun movie. Sentiment:")));
        Assert.That(Pieces(tokens), Is.EqualTo(new[] { "\u2581", "\u2581Review", ":", "\u2581A", "\u2581fun", "\u2581movie", ".", "\u2581Sent", "iment", ":" }));
        Assert.That(Stories.Decode(tokens), Is.EqualTo(" Review: A fun movie. Sentiment:"));

        // Only the last position is scored, and it predicts " negative".
        Assert.That(row.Slots.Take(row.Length - 1).All(s => s.Target == -1));
        Assert.That(Stories.IdToPiece(row.Slots[^1].Target), Is.EqualTo("\u2581negative"));
        Assert.That((row.Label, row.PrefixLength, row.DroppedTextTokens), Is.EqualTo((1, row.Length, 0)));
    }

    [Test]
    public void TheScoredTokenIsTheOneTheModelReadsInRunningText()
    {
        var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(256, 3), verbalizer);
        foreach (var (label, column) in new[] { ("positive", 0), ("negative", 1) })
        {
            var row = encoder.Encode(new Example("I laughed a lot.", label, 1));
            var running = Stories.Encode($"Review: I laughed a lot. Sentiment: {label}", addBos: true);
            // The row is the running text's tokens up to the label word, and it scores the word's token.
            Assert.That(Sources(row.Slots.Skip(3)), Is.EqualTo(running.Take(running.Count - 1)));
            Assert.That(row.Slots[^1].Target, Is.EqualTo(running[^1]));
            Assert.That(row.Slots[^1].Target, Is.EqualTo(verbalizer.TokenIds[column]));
        }
    }

    [Test]
    public void SuffixPromptPredictsTheAnswerFromItsLastRow()
    {
        var template = PromptTemplate.Parse("Review: {text} Sentiment:{prompt}{answer}");
        // Nothing literal precedes the answer, so " positive" would be encoded alone: SentencePiece's
        // dummy prefix makes both words start with '▁'.
        var e = Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, template, ImdbLabels))!;
        Assert.That(e.Message, Does.Contain("\" positive\" (positive) and \" negative\" (negative) both start with token 29871"));

        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels, ["positive", "negative"]);
        Assert.That(Pieces(verbalizer.TokenIds), Is.EqualTo(new[] { "\u2581positive", "\u2581negative" }));
        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(256, 3, FirstPromptRow: 5), verbalizer);
        var row = encoder.Encode(new Example("Boring.", "positive", 1));
        Assert.That(Sources(row.Slots), Is.EqualTo(Stories.Encode("Review: Boring. Sentiment:", addBos: true).Concat([-6, -7, -8])));
        Assert.That(row.Slots[^1], Is.EqualTo(new Slot(-8, verbalizer.TokenIds[0])));
        Assert.That(row.Slots.Count(s => s.Target >= 0), Is.EqualTo(1));
    }

    [Test]
    public void MiddlePromptSplitsTheTextIntoTwoSegmentsWithOneBos()
    {
        var template = PromptTemplate.Parse("Review: {text}{prompt} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        var row = new TemplateEncoder(template, Stories, new EncoderOptions(256, 2), verbalizer).Encode(new Example("Boring.", "positive", 1));
        var expected = Stories.Encode("Review: Boring.", addBos: true).Concat([-1, -2]).Concat(Stories.Encode(" Sentiment:", addBos: false));
        Assert.That(Sources(row.Slots), Is.EqualTo(expected));
        Assert.That(row.Slots.Count(s => s.Source == Stories.BosId), Is.EqualTo(1));
    }

    [Test]
    public void SeveralPromptMarkersShareTheVirtualTokensOutInOrder()
    {
        // Interleaved placement: 5 virtual tokens over 3 places are 2 + 2 + 1, bank rows 3.. in reading order.
        var template = PromptTemplate.Parse("{prompt}Review: {prompt}{text}{prompt} Sentiment:{answer}");
        Assert.That(template.PromptPlaces, Is.EqualTo(3));
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        var row = new TemplateEncoder(template, Stories, new EncoderOptions(256, 5, FirstPromptRow: 3), verbalizer).Encode(new Example("Boring.", "positive", 1));
        var expected = new[] { -4, -5 }.Concat(Stories.Encode("Review: ", addBos: true)).Concat([-6, -7])
            .Concat(Stories.Encode("Boring.", addBos: false)).Concat([-8]).Concat(Stories.Encode(" Sentiment:", addBos: false));
        Assert.That(Sources(row.Slots), Is.EqualTo(expected));
        Assert.That(Stories.IdToPiece(row.Slots[^1].Target), Is.EqualTo("\u2581positive"));

        var e = Assert.Throws<PromptTemplateException>(() => new TemplateEncoder(template, Stories, new EncoderOptions(256, 2), verbalizer))!;
        Assert.That(e.Message, Does.Contain("places the prompt 3 times, but it has only 2 virtual tokens"));
    }

    [Test]
    public void LabelWordsMustStartWithDistinctTokensAndNotMergeWithTheContext()
    {
        var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
        var e = Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, template, ["good", "better"], [" good", " goodness"]))!;
        Assert.That(e.Message, Does.Contain("\" good\" (good) and \" goodness\" (better) both start with token 1781 \"good\""));

        // "Sentiment: " ends in a '▁' token that "positive" would absorb.
        var spaced = PromptTemplate.Parse("{text} Sentiment: {answer}");
        e = Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, spaced, ImdbLabels, ["positive", "negative"]))!;
        Assert.That(e.Message, Does.Contain("label word \"positive\" merges with the end of the template's context \" Sentiment: \""));

        Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, template, ["positive"]));
        Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, template, ["a", "a"]));
        Assert.Throws<PromptTemplateException>(() => Verbalizer.Create(Stories, template, ImdbLabels, [" yes", " "]));

        // Multi-token words are allowed; only the first token is scored.
        var words = Verbalizer.Create(Stories, template, ["pos", "neg"], [" goodness", " badness"]);
        Assert.That(words.WordTokens[0].Count, Is.GreaterThan(1));
        Assert.That(words.TokenIds[0], Is.EqualTo(words.WordTokens[0][0]));
    }

    [Test]
    public void SpamLabelWordsAreOneTokenEachWhileTheLabelSpamIsNot()
    {
        var template = PromptTemplate.Parse(SpamAssassinPreparer.Template);
        var verbalizer = Verbalizer.Create(Stories, template, SpamAssassinPreparer.Labels, SpamAssassinPreparer.LabelWords);
        Assert.That(verbalizer.WordTokens.Select(t => t.Count), Is.EqualTo(new[] { 1, 1 }));
        Assert.That(Pieces(verbalizer.TokenIds), Is.EqualTo(new[] { "\u2581no", "\u2581yes" }));

        // The labels' own names as words: " ham" is one token, " spam" is not, so it would be scored by a fragment.
        var byName = Verbalizer.Create(Stories, template, SpamAssassinPreparer.Labels);
        Assert.That(Pieces(byName.WordTokens[0]), Is.EqualTo(new[] { "\u2581ham" }));
        Assert.That(Pieces(byName.WordTokens[1]), Is.EqualTo(new[] { "\u2581sp", "am" }));
    }

    [Test]
    public void ALabelOutsideTheVerbalizerNamesFileAndLine()
    {
        var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(256, 2), Verbalizer.Create(Stories, template, ImdbLabels));
        var e = Assert.Throws<DataFormatException>(() => encoder.Encode(new Example("Fine.", "neutral", 12), "/data/x.jsonl"))!;
        Assert.That(e.Message, Does.StartWith("/data/x.jsonl: line 12: label \"neutral\" is not one of the verbalizer's [positive, negative]"));
    }

    [Test]
    public void GenerationRowsMatchTheEngineLanguageModelRowWithoutItsUnusedLastSlot()
    {
        var template = PromptTemplate.Parse("{prompt}Question: {input}\nAnswer:{answer}");
        var example = new Example("Who sat on the mat?", " The cat sat.", 3);
        var row = new TemplateEncoder(template, Stories, new EncoderOptions(256, 4), null).Encode(example);

        var input = Stories.Encode("Question: Who sat on the mat?\nAnswer:", addBos: true);
        var output = Stories.Encode("Question: Who sat on the mat?\nAnswer: The cat sat.", addBos: true).Skip(input.Count).ToArray();
        Assert.That(Pieces(output), Is.EqualTo(new[] { "\u2581The", "\u2581cat", "\u2581sat", "." }));
        var reference = BatchBuilder.LanguageModelRow(input, output, [0, 1, 2, 3], PromptPlacement.Prefix);
        // The last output token predicts nothing, so it takes no position.
        Assert.That(row.Slots, Is.EqualTo(reference.Take(reference.Count - 1)));
        Assert.That(row.PrefixLength, Is.EqualTo(4 + input.Count));
        Assert.That(row.Slots.Where(s => s.Target >= 0).Select(s => s.Target), Is.EqualTo(output));
        Assert.That(row.Label, Is.EqualTo(-1));

        var withEos = new TemplateEncoder(template, Stories, new EncoderOptions(256, 4, AppendEos: true), null).Encode(example);
        Assert.That(withEos.Slots.Take(reference.Count - 1), Is.EqualTo(reference.Take(reference.Count - 1)));
        Assert.That(withEos.Slots[^1], Is.EqualTo(Slot.Token(output[^1], Stories.EosId)));
        Assert.That(withEos.Length, Is.EqualTo(reference.Count));
    }

    [Test]
    public void OptionsThatCannotWorkAreRejected()
    {
        var noPrompt = PromptTemplate.Parse("Review: {text} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, noPrompt, ImdbLabels);
        var e = Assert.Throws<PromptTemplateException>(() => new TemplateEncoder(noPrompt, Stories, new EncoderOptions(256, 8), verbalizer))!;
        Assert.That(e.Message, Does.Contain("has no {prompt} marker, but 8 prompt tokens"));
        // No prompt marker and no prompt tokens: the baseline row.
        Assert.That(new TemplateEncoder(noPrompt, Stories, new EncoderOptions(256, 0), verbalizer).Encode(new Example("x", "positive", 1)).Length, Is.GreaterThan(0));
        Assert.Throws<PromptTemplateException>(() => new TemplateEncoder(noPrompt, Stories, new EncoderOptions(256, 0, AppendEos: true), verbalizer));
        Assert.Throws<PromptTemplateException>(() => new TemplateEncoder(noPrompt, new WordTokenizer(), new EncoderOptions(0, 0), null));
    }

    #region Truncation

    static readonly PromptTemplate WordTemplate = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
    static readonly string TwentyWords = string.Join(' ', Enumerable.Range(0, 20).Select(i => $"w{i}"));

    [TestCase(TruncationSide.KeepBeginning, "w0 w1 w2 w3 w4 w5 w6")]
    [TestCase(TruncationSide.KeepEnd, "w13 w14 w15 w16 w17 w18 w19")]
    [TestCase(TruncationSide.KeepBothEnds, "w0 w14 w15 w16 w17 w18 w19")]
    public void TruncationCutsOnlyTheTextFromTheChosenEnd(TruncationSide side, string kept)
    {
        var tokenizer = new WordTokenizer();
        var verbalizer = Verbalizer.Create(tokenizer, WordTemplate, ImdbLabels);
        // Untruncated: 5 prompt + BOS + "Review:" + 20 words + "Sentiment:" = 28 positions.
        var encoder = new TemplateEncoder(WordTemplate, tokenizer, new EncoderOptions(15, 5, Truncation: side), verbalizer);
        var row = encoder.Encode(new Example(TwentyWords, "positive", 1));
        Assert.That(row.Length, Is.EqualTo(15));
        Assert.That(Sources(row.Slots.Take(5)), Is.EqualTo(new[] { -1, -2, -3, -4, -5 }));
        Assert.That(tokenizer.Decode(Sources(row.Slots.Skip(5))), Is.EqualTo($"Review: {kept} Sentiment:"));
        Assert.That(row.Slots[^1].Target, Is.EqualTo(tokenizer.Id("positive")));
        Assert.That(row.DroppedTextTokens, Is.EqualTo(13));

        var fits = encoder.Encode(new Example("w1 w2", "negative", 2));
        Assert.That(fits.DroppedTextTokens, Is.Zero);
        Assert.That(encoder.Report, Is.EqualTo(new EncodingReport(Encoded: 2, Truncated: 1, DroppedTextTokens: 13, LongestRow: 15)));
    }

    [Test]
    public void ARowThatDoesNotFitWithAnEmptyTextIsAnError()
    {
        var tokenizer = new WordTokenizer();
        var verbalizer = Verbalizer.Create(tokenizer, WordTemplate, ImdbLabels);
        // 5 prompt + BOS + "Review:" + "Sentiment:" = 8 positions before any text.
        Assert.That(new TemplateEncoder(WordTemplate, tokenizer, new EncoderOptions(8, 5), verbalizer).Encode(new Example("a b c", "positive", 1)).Length, Is.EqualTo(8));
        var e = Assert.Throws<PromptTemplateException>(() => new TemplateEncoder(WordTemplate, tokenizer, new EncoderOptions(7, 5), verbalizer))!;
        Assert.That(e.Message, Does.Contain("takes 8 positions with an empty text; max length is 7"));

        // Generation: the output is never cut, so a long output is the row's error.
        var generation = PromptTemplate.Parse("{prompt}Q: {input} A:{answer}");
        var encoder = new TemplateEncoder(generation, tokenizer, new EncoderOptions(10, 2), null);
        var shortOutput = encoder.Encode(new Example("a b c d e f g h", " x y z", 1));
        // 2 prompt + BOS + "Q:" + 3 kept words + "A:" + 2 of the 3 output tokens (the last predicts nothing) = 10.
        Assert.That(shortOutput.Length, Is.EqualTo(10));
        Assert.That(tokenizer.Decode(Sources(shortOutput.Slots)), Is.EqualTo("Q: a b c A: x y"));
        Assert.That(shortOutput.Slots.Where(s => s.Target >= 0).Select(s => tokenizer.Decode([s.Target])), Is.EqualTo(new[] { "x", "y", "z" }));
        var ex = Assert.Throws<DataFormatException>(() => encoder.Encode(new Example("a", " o1 o2 o3 o4 o5 o6 o7", 41), "gen.jsonl"))!;
        Assert.That(ex.Message, Does.StartWith("gen.jsonl: line 41: 11 positions with the text emptied").And.Contain("max length is 10"));
    }

    [TestCase(TruncationSide.KeepBeginning)]
    [TestCase(TruncationSide.KeepEnd)]
    [TestCase(TruncationSide.KeepBothEnds)]
    public void RealReviewsAreCutToFitAndKeepTheirChosenEnd(TruncationSide side)
    {
        var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        var data = JsonlDataset.Load(Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl"), JsonlFieldNames.Classification());
        var sample = data.Examples.Take(200).ToArray();
        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(96, 8, Truncation: side), verbalizer);
        var unlimited = new TemplateEncoder(template, Stories, new EncoderOptions(1 << 20, 8), verbalizer);
        var expectedTruncated = 0;
        foreach (var example in sample)
        {
            var full = unlimited.Encode(example);
            var row = encoder.Encode(example);
            Assert.That(row.Length, Is.LessThanOrEqualTo(96));
            Assert.That(Sources(row.Slots.Take(9)), Is.EqualTo(new[] { -1, -2, -3, -4, -5, -6, -7, -8, Stories.BosId }));
            Assert.That(row.Slots[^1].Target, Is.EqualTo(verbalizer.TokenIds[verbalizer.IndexOf(example.Answer)]));
            if (full.Length <= 96)
            {
                Assert.That(row.Slots, Is.EqualTo(full.Slots));
                continue;
            }
            expectedTruncated++;
            Assert.That(row.Length, Is.GreaterThanOrEqualTo(92), "the cut should land within a few tokens of the limit");
            var decoded = Stories.Decode(Sources(row.Slots.Skip(9)));
            Assert.That(decoded, Does.StartWith("Review: ").And.EndWith(" Sentiment:"));
            var kept = decoded["Review: ".Length..^" Sentiment:".Length];
            Assert.That(kept.Length, Is.GreaterThan(50));
            if (side == TruncationSide.KeepBeginning) Assert.That(example.Text, Does.StartWith(kept));
            else if (side == TruncationSide.KeepEnd) Assert.That(example.Text, Does.EndWith(kept));
            else
            {
                // A quarter of the room from the opening, the rest from the close, the middle gone.
                Assert.That(example.Text, Does.StartWith(kept[..10]).And.EndWith(kept[^40..]));
                Assert.That(example.Text, Does.Not.Contain(kept));
            }
        }
        Assert.That(expectedTruncated, Is.GreaterThan(100), "most IMDB reviews exceed 96 tokens");
        Assert.That(encoder.Report.Truncated, Is.EqualTo(expectedTruncated));
        Assert.That(encoder.Report.Encoded, Is.EqualTo(sample.Length));
    }

    #endregion

    [Test]
    public void BatchesArePaddedOnTheRightWithOneScoredRowPerClassificationExample()
    {
        var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
        var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
        var encoder = new TemplateEncoder(template, Stories, new EncoderOptions(256, 4), verbalizer);
        var examples = new[]
        {
            encoder.Encode(new Example("Short.", "positive", 1)),
            encoder.Encode(new Example("A much longer review that goes on and on.", "negative", 2)),
            encoder.Encode(new Example("Middling film, I suppose.", "positive", 3)),
        };
        var batch = TemplateEncoder.BuildBatch(examples, [0, 2, 1], verbalizer);
        batch.Validate(Stories.VocabSize, promptTableRows: 4, maxPositions: 256);
        var t = examples[1].Length;
        Assert.That((batch.Rows, batch.Length), Is.EqualTo((3, t)));
        Assert.That(batch.Verbalizer, Is.EqualTo(verbalizer.TokenIds));
        int[] rowOrder = [0, 2, 1];
        for (var b = 0; b < 3; b++)
        {
            var length = examples[rowOrder[b]].Length;
            Assert.That(batch.KeyMask.Skip(b * t).Take(t), Is.EqualTo(Enumerable.Repeat(1, length).Concat(Enumerable.Repeat(0, t - length))));
            Assert.That(batch.LossPositions[b], Is.EqualTo(b * t + length - 1), "row s of the logits is example indices[s]");
            Assert.That(batch.Targets[b], Is.EqualTo(verbalizer.TokenIds[examples[rowOrder[b]].Label]));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => TemplateEncoder.BuildBatch(examples, [3]));
    }

    [Test]
    public void EncodeAllOnSeveralThreadsGivesTheSameRowsAndTheEarliestError()
    {
        var dir = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-enc-{Guid.NewGuid():N}")).FullName;
        try
        {
            var lines = File.ReadLines(Path.Combine(TestAssets.ImdbSplitFolder, "validation.jsonl")).Take(300).ToArray();
            var good = Path.Combine(dir, "good.jsonl");
            File.WriteAllLines(good, lines);
            var template = PromptTemplate.Parse("{prompt}Review: {text} Sentiment:{answer}");
            var verbalizer = Verbalizer.Create(Stories, template, ImdbLabels);
            var options = new EncoderOptions(128, 10);
            var data = JsonlDataset.Load(good, JsonlFieldNames.Classification());
            var serial = new TemplateEncoder(template, Stories, options, verbalizer);
            var parallel = new TemplateEncoder(template, Stories, options, verbalizer);
            var one = serial.EncodeAll(data);
            var four = parallel.EncodeAll(data, threads: 4);
            Assert.That(four.Select(r => r.Slots), Is.EqualTo(one.Select(r => r.Slots)));
            Assert.That(four.Select(r => (r.Source, r.Label, r.DroppedTextTokens)), Is.EqualTo(one.Select(r => (r.Source, r.Label, r.DroppedTextTokens))));
            Assert.That(parallel.Report, Is.EqualTo(serial.Report));
            Assert.That(serial.Report.Encoded, Is.EqualTo(300));

            lines[249] = "{\"text\": \"meh\", \"label\": \"neutral\"}";
            lines[119] = "{\"text\": \"so-so\", \"label\": \"mixed\"}";
            var bad = Path.Combine(dir, "bad.jsonl");
            File.WriteAllLines(bad, lines);
            var e = Assert.Throws<DataFormatException>(() => parallel.EncodeAll(JsonlDataset.Load(bad, JsonlFieldNames.Classification()), threads: 4))!;
            Assert.That(e.Message, Does.Contain("line 120: label \"mixed\""));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }

    [Test]
    public void EncodeAllChecksTheDatasetKind()
    {
        var dir = Directory.CreateDirectory(Path.Combine(Path.GetTempPath(), $"pe-enc-{Guid.NewGuid():N}")).FullName;
        try
        {
            var path = Path.Combine(dir, "gen.jsonl");
            File.WriteAllText(path, "{\"input\": \"a b\", \"output\": \"c\"}\n{\"input\": \"d\", \"output\": \"e f\"}\n");
            var data = JsonlDataset.Load(path, JsonlFieldNames.Generation());
            var tokenizer = new WordTokenizer();
            var template = PromptTemplate.Parse("{input} = {answer}");
            var rows = new TemplateEncoder(template, tokenizer, new EncoderOptions(16, 0), null).EncodeAll(data);
            Assert.That(rows.Select(r => tokenizer.Decode(Sources(r.Slots))), Is.EqualTo(new[] { "a b =", "d = e" }));
            Assert.That(rows.Select(r => tokenizer.Decode(r.Slots.Where(s => s.Target >= 0).Select(s => s.Target))), Is.EqualTo(new[] { "c", "e f" }));

            // Without the space the output's first word fuses with the literal ("=c"): the fused token
            // is scored as output, predicted from the text's last token.
            var fused = new TemplateEncoder(PromptTemplate.Parse("{input} ={answer}"), tokenizer, new EncoderOptions(16, 0), null).EncodeAll(data)[0];
            Assert.That(tokenizer.Decode(Sources(fused.Slots)), Is.EqualTo("a b"));
            Assert.That(tokenizer.Decode([fused.Slots[^1].Target]), Is.EqualTo("=c"));
            var classifier = new TemplateEncoder(template, tokenizer, new EncoderOptions(16, 0), Verbalizer.Create(tokenizer, template, ["c", "e"]));
            Assert.Throws<PromptTemplateException>(() => classifier.EncodeAll(data));
        }
        finally { Directory.Delete(dir, recursive: true); }
    }
}
