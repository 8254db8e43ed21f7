using PromptEngine.Engine;
using PromptEngine.Training.Data;
using PromptEngine.Training.Metrics;

namespace PromptEngine.Training;

/// <summary>Training batches drawn by a resumable <see cref="BatchSampler"/> from encoded examples.</summary>
public sealed class SampledBatches : ITrainingBatches
{
    readonly IReadOnlyList<EncodedExample> examples;
    readonly int[] lengths;
    readonly Verbalizer? verbalizer;
    BatchSampler sampler;

    /// <summary>Batches of <paramref name="examples"/> (classification when a verbalizer is given).</summary>
    public SampledBatches(IReadOnlyList<EncodedExample> examples, BatchSamplerOptions options, Verbalizer? verbalizer)
    {
        if (examples.Count == 0) throw new PromptEngineException("no training examples");
        this.examples = examples;
        this.verbalizer = verbalizer;
        lengths = examples.Select(e => e.Length).ToArray();
        sampler = new BatchSampler(lengths, options);
    }

    /// <inheritdoc/>
    public Batch Next() => TemplateEncoder.BuildBatch(examples, sampler.Next(), verbalizer);

    /// <inheritdoc/>
    public string SaveState() => sampler.State.ToJson();

    /// <inheritdoc/>
    public void RestoreState(string state) => sampler = BatchSampler.Resume(lengths, BatchSamplerState.FromJson(state, "checkpoint data_state"));
}

/// <summary>Classification accuracy of the engine's current prompt on a fixed set of examples: one
/// forward per batch, logits over the verbalizer's words at the answer position, argmax.</summary>
public sealed class ClassificationEvaluator : IEvaluator
{
    readonly IReadOnlyList<EncodedExample> examples;
    readonly Verbalizer verbalizer;
    readonly int batchSize;
    readonly Action<int>? rowsDone;

    /// <summary>The last evaluation's full metrics (per-class precision/recall, confusion matrix).</summary>
    public ClassificationMetrics? LastMetrics { get; private set; }

    /// <summary>The last evaluation's predicted label index per example, in the examples' order (for paired tests).</summary>
    public IReadOnlyList<int>? LastPredictions { get; private set; }

    /// <summary>Evaluates on <paramref name="examples"/> in batches of <paramref name="batchSize"/>, telling
    /// <paramref name="rowsDone"/> how many rows each finished batch held (for a progress display).</summary>
    public ClassificationEvaluator(IReadOnlyList<EncodedExample> examples, Verbalizer verbalizer, int batchSize, Action<int>? rowsDone = null)
    {
        if (examples.Count == 0) throw new PromptEngineException("no evaluation examples");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize));
        this.examples = examples;
        this.verbalizer = verbalizer;
        this.batchSize = batchSize;
        this.rowsDone = rowsDone;
    }

    /// <inheritdoc/>
    public EvalReport Evaluate(TransformerEngine engine)
    {
        var R = verbalizer.TokenIds.Length;
        var gold = examples.Select(e => e.Label).ToArray();
        var predicted = new int[examples.Count];
        double lossSum = 0;
        // Batches of similar lengths (a stable sort, so the batches do not depend on anything but the examples): a batch is
        // as long as its longest row, and every row pays for it.
        var byLength = Enumerable.Range(0, examples.Count).OrderBy(i => examples[i].Length).ToArray();
        for (var start = 0; start < examples.Count; start += batchSize)
        {
            var indices = byLength.AsSpan(start, Math.Min(batchSize, examples.Count - start)).ToArray();
            var logits = engine.Logits(TemplateEncoder.BuildBatch(examples, indices, verbalizer));
            for (var s = 0; s < indices.Length; s++)
            {
                var row = logits.AsSpan(s * R, R);
                var label = examples[indices[s]].Label;
                predicted[indices[s]] = ClassificationMetrics.Predict(row, R)[0];
                // Cross-entropy over the verbalizer, as training computes it.
                double max = double.NegativeInfinity, sum = 0;
                foreach (var l in row) max = Math.Max(max, l);
                foreach (var l in row) sum += Math.Exp(l - max);
                lossSum += max + Math.Log(sum) - row[label];
            }
            rowsDone?.Invoke(indices.Length);
        }
        LastMetrics = ClassificationMetrics.FromIndices(verbalizer.Labels, gold, predicted);
        LastPredictions = predicted;
        var details = new Dictionary<string, double> { ["macro_f1"] = LastMetrics.MacroF1 };
        foreach (var c in LastMetrics.PerClass)
        {
            details[$"precision_{c.Label}"] = c.Precision;
            details[$"recall_{c.Label}"] = c.Recall;
        }
        return new EvalReport(LastMetrics.Accuracy, "accuracy", lossSum / examples.Count, details);
    }
}

/// <summary>Generation targets: the mean loss of the output tokens (given the input and the prompt) on a
/// fixed set of examples. The metric is the negated loss, so "higher is better" holds for early stopping.</summary>
public sealed class LossEvaluator : IEvaluator
{
    readonly IReadOnlyList<EncodedExample> examples;
    readonly int batchSize;

    /// <summary>Evaluates on <paramref name="examples"/> in batches of <paramref name="batchSize"/>.</summary>
    public LossEvaluator(IReadOnlyList<EncodedExample> examples, int batchSize)
    {
        if (examples.Count == 0) throw new PromptEngineException("no evaluation examples");
        if (batchSize <= 0) throw new ArgumentOutOfRangeException(nameof(batchSize));
        this.examples = examples;
        this.batchSize = batchSize;
    }

    /// <inheritdoc/>
    public EvalReport Evaluate(TransformerEngine engine)
    {
        double weighted = 0;
        long tokens = 0;
        for (var start = 0; start < examples.Count; start += batchSize)
        {
            var indices = Enumerable.Range(start, Math.Min(batchSize, examples.Count - start)).ToArray();
            var batch = TemplateEncoder.BuildBatch(examples, indices);
            // The engine's loss is the mean over the batch's scored tokens; weight it back to a per-token mean.
            weighted += engine.Loss(batch) * (double)batch.LossPositions.Length;
            tokens += batch.LossPositions.Length;
        }
        var loss = weighted / Math.Max(1, tokens);
        return new EvalReport(-loss, "neg_loss", loss, new Dictionary<string, double> { ["perplexity"] = Math.Exp(loss), ["scored_tokens"] = tokens });
    }
}
