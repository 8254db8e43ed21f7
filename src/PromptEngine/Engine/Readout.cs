using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;

namespace PromptEngine.Engine;

/// <summary>
/// What the engine reads out of the final norm's rows after a <see cref="BlockProgram.Forward"/>: the loss and its
/// backward down to the last block's output gradient, the logits and the hidden states at the scored positions, and the
/// generation logits; through a <see cref="ClassifierHead"/> when one is attached, else the LM head (restricted to a
/// batch's verbalizer).
/// </summary>
internal sealed class Readout(KernelContext kernels, TransformerConfig config, DeviceWeights weights, MemoryPlan m, BlockProgram program)
{
    /// <summary>The final norm's rows the loss reads (all B·T, or the S scored ones compacted) and, for each scored
    /// position, its row there.</summary>
    public (int Rows, ArrayView<int> Positions) LossRows()
    {
        int s = program.Loaded!.LossPositions.Length;
        return program.Pass.Scored > 0 ? (s, m.ScoredRows(s)) : (program.Loaded.Positions, m.LossPositions(s));
    }

    /// <summary>The mean loss over the scored positions of the last forward, through <paramref name="head"/> when one is
    /// attached, else the LM head (restricted to the batch's verbalizer); leaves the logits for <see cref="LossBackward"/>.</summary>
    public float LossForward(ClassifierHead? head)
    {
        var batch = program.Loaded!;
        int s = batch.LossPositions.Length, r = batch.Verbalizer?.Length ?? 0, C = config.HiddenSize;
        if (s == 0) throw new ArgumentException("batch has no scored positions: nothing to take a loss over");
        var (n, rows) = LossRows();
        if (head is not null)
        {
            // The head's rows are the classes: the same fused loss with W = head (R, C), V = R and class-index targets.
            m.HeadTargets(s).CopyFromCPU(HeadTargets(batch, head));
            kernels.CrossEntropy.Forward(m.Losses(s), m.MeanLoss, m.Logits(s, head.Classes), m.FinalNorm(n), rows, m.HeadTargets(s),
                head.WeightView, default, n, C, s, head.Classes, 0, head.BiasView);
            return m.MeanLoss.ToHost()[0];
        }
        kernels.CrossEntropy.Forward(m.Losses(s), m.MeanLoss, m.Logits(s, r > 0 ? r : config.VocabSize), m.FinalNorm(n), rows, m.Targets(s),
            weights.LmHead, m.Verbalizer(r), n, C, s, config.VocabSize, r);
        return m.MeanLoss.ToHost()[0]; // the one host read of a step
    }

    /// <summary>The loss reversed down to the last block's output gradient (dScored when compacted, else dResidual); a
    /// head's own gradient is ADDED into it (a small trainable module, the stated exception to data gradients only).</summary>
    public void LossBackward(ClassifierHead? head)
    {
        var batch = program.Loaded!;
        int s = batch.LossPositions.Length, r = batch.Verbalizer?.Length ?? 0, C = config.HiddenSize;
        var (n, rows) = LossRows();
        var dNorm = m.DLn(n);
        if (head is not null)
        {
            var dHeadLogits = m.Logits(s, head.Classes);
            kernels.CrossEntropy.Backward(dNorm, dHeadLogits, head.WeightView, rows, default, n, C, s, head.Classes, 0);
            kernels.CrossEntropy.HeadGradient(head.WeightGradientView, head.BiasGradientView, dHeadLogits, m.FinalNorm(n), rows, n, C, s, head.Classes);
        }
        else
            kernels.CrossEntropy.Backward(dNorm, m.Logits(s, r > 0 ? r : config.VocabSize), weights.LmHead, rows, m.Verbalizer(r), n, C, s, config.VocabSize, r);
        program.FinalNormBackward(program.Pass.Scored > 0 ? m.DScored(n) : m.DResidual(n), dNorm, n);
    }

    /// <summary>Each scored position's target as a class index (its column in the batch's verbalizer), −1 kept.</summary>
    /// <exception cref="ArgumentException">The batch's verbalizer is not one word per class of <paramref name="head"/>.</exception>
    public static int[] HeadTargets(Batch batch, ClassifierHead head)
    {
        if (batch.Verbalizer is not { } words || words.Length != head.Classes)
            throw new ArgumentException($"classifier head of {head.Classes} classes: the batch needs a verbalizer of {head.Classes} label words (has {batch.Verbalizer?.Length ?? 0})");
        return batch.Targets.Select(t => t < 0 ? -1 : Array.IndexOf(words, t)).ToArray();
    }

    /// <summary>See <see cref="TransformerEngine.ScoredHiddenStates"/> (after the forward).</summary>
    public float[] ScoredHiddenStates()
    {
        int s = program.Loaded!.LossPositions.Length, C = config.HiddenSize;
        if (s == 0) throw new ArgumentException("batch has no scored positions: no hidden states to return");
        var (n, rows) = LossRows();
        if (program.Pass.Scored > 0) return m.FinalNorm(s).ToHost(); // the forward kept only those rows, in order
        var gathered = m.ScoredInput(s);
        kernels.RowGather.Forward(gathered, m.FinalNorm(n), rows, n, s, C);
        return gathered.ToHost();
    }

    /// <summary>See <see cref="TransformerEngine.Logits"/> (after the forward).</summary>
    public float[] Logits(ClassifierHead? head)
    {
        var batch = program.Loaded!;
        var (s, r) = (batch.LossPositions.Length, batch.Verbalizer?.Length ?? 0);
        var (n, rows) = LossRows();
        if (head is not null)
        {
            HeadTargets(batch, head); // checks the batch against the head
            var headLogits = m.Logits(s, head.Classes);
            kernels.CrossEntropy.Logits(headLogits, m.FinalNorm(n), rows, head.WeightView, default, n, config.HiddenSize, s, head.Classes, 0, head.BiasView);
            return headLogits.ToHost();
        }
        var view = m.Logits(s, r > 0 ? r : config.VocabSize);
        kernels.CrossEntropy.Logits(view, m.FinalNorm(n), rows, weights.LmHead, m.Verbalizer(r), n, config.HiddenSize, s, config.VocabSize, r);
        return view.ToHost();
    }

    /// <summary>(B, V) logits of the final-norm rows listed in the step's logit rows (of <paramref name="n"/> rows),
    /// copied to the host.</summary>
    public float[] GenerationLogits(int n, int b)
    {
        var view = m.GenerationLogits(b);
        kernels.CrossEntropy.Logits(view, m.FinalNorm(n), m.StepIndices(4, b), weights.LmHead, default, n, config.HiddenSize, b, config.VocabSize, 0);
        return view.ToHost();
    }

    /// <summary>The LM head's rows of <paramref name="tokenIds"/> (count, C), copied to the host (a head's initial weight).</summary>
    /// <exception cref="ArgumentException">An id outside the vocabulary.</exception>
    public float[] LmHeadRows(IReadOnlyList<int> tokenIds)
    {
        int C = config.HiddenSize;
        var result = new float[(long)tokenIds.Count * C];
        for (var i = 0; i < tokenIds.Count; i++)
        {
            if (tokenIds[i] < 0 || tokenIds[i] >= config.VocabSize)
                throw new ArgumentException($"LM head rows: token {tokenIds[i]} is outside the vocabulary of {config.VocabSize}");
            weights.LmHead.SubView((long)tokenIds[i] * C, C).ToHost().CopyTo(result, (long)i * C);
        }
        return result;
    }

    /// <summary>Refuses a head that cannot read this engine's hidden states.</summary>
    /// <exception cref="ArgumentException">The head runs on another kernel context, reads another width or has more
    /// classes than the logits scratch has columns.</exception>
    public void CheckFits(ClassifierHead head)
    {
        if (!ReferenceEquals(head.Kernels, kernels))
            throw new ArgumentException("classifier head: it lives on another kernel context; build it on the engine's", nameof(head));
        if (head.Width != config.HiddenSize)
            throw new ArgumentException($"classifier head: it reads width {head.Width}, the model's hidden size is {config.HiddenSize}", nameof(head));
        if (head.Classes > config.VocabSize)
            throw new ArgumentException($"classifier head: {head.Classes} classes exceed the engine's logits scratch of {config.VocabSize} columns", nameof(head));
    }
}
