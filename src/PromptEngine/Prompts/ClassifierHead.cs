using System.Text.Json;
using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Safetensors;
using PromptEngine.Training;

namespace PromptEngine.Prompts;

/// <summary>
/// The optional lightweight head of prompt tuning: a linear classifier <c>logits = W·h + b</c> on the final normed hidden
/// state h (C) at the answer position, W (R, C), b (R), one row per class label. It replaces the LM head's verbalizer rows
/// in the engine's loss and logits (<see cref="TransformerEngine.AttachHead"/>) and is trained jointly with the prompt.
/// Like <see cref="PrefixProjection"/> it is a small trainable module, so its weight gradient is computed; the model's
/// frozen weights still never get one.
/// </summary>
/// <remarks>
/// <para>One arena, planned once: W and b, each a <see cref="TrainableParameter"/> with its gradient and AdamW moments
/// (<see cref="Trainables"/>, one <see cref="ParameterGroup.Head"/> group: clipped as one vector, at its own learning
/// rate). The engine ADDS the gradient of each batch (<see cref="CrossEntropy.HeadGradient"/>); <see cref="ZeroGradient"/>
/// clears it at the start of a step.</para>
/// <para><see cref="FromLabelWords"/> starts W at the LM head's rows of the verbalizer's words and b at 0, so the head's
/// logits at step 0 are exactly the zero-shot verbalizer's and the prompt's first gradients are those it gets without a
/// head. A zero start would put every example at log R with dLoss/dHidden = dLogits·W = 0: the prompt would get no
/// gradient until the head had moved, and the head would start from nothing the model already knows.</para>
/// </remarks>
public sealed class ClassifierHead : IDisposable
{
    readonly KernelContext kernels;
    readonly Arena<float> arena = new("classifier head");
    readonly TrainableParameter weight, bias; // W (R, C), b (R)

    /// <summary>Plans and allocates the head for <paramref name="labels"/>.Count classes on width <paramref name="width"/>,
    /// with W and b zero (set them with <see cref="SetParameters"/>).</summary>
    /// <exception cref="ArgumentException">Fewer than two labels, or a non-positive width.</exception>
    public ClassifierHead(KernelContext kernels, int width, IReadOnlyList<string> labels)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        ArgumentNullException.ThrowIfNull(labels);
        if (labels.Count < 2) throw new ArgumentException($"classifier head: {labels.Count} label(s); a classifier needs at least two", nameof(labels));
        if (width <= 0) throw new ArgumentOutOfRangeException(nameof(width), width, "classifier head: the width must be positive");
        this.kernels = kernels;
        Classes = labels.Count;
        Width = width;
        Labels = labels.ToArray();
        var w = PlannedParameter.Reserve(arena, "W (R, C)", ParameterGroup.Head, (long)Classes * width);
        var b = PlannedParameter.Reserve(arena, "b (R)", ParameterGroup.Head, Classes);
        arena.Allocate(kernels.Accelerator);
        try
        {
            (weight, bias) = (w.Bind(arena), b.Bind(arena));
            Trainables = [weight, bias];
            weight.Values.MemSetToZero();
            bias.Values.MemSetToZero();
            Trainables.ResetOptimizer();
        }
        catch
        {
            arena.Dispose();
            throw;
        }
    }

    /// <summary>A head whose rows are the LM head's rows of <paramref name="labelTokenIds"/> (the verbalizer's scored tokens,
    /// in label order) and whose bias is 0: at step 0 it computes the zero-shot verbalizer's logits.</summary>
    /// <exception cref="ArgumentException">The ids and labels differ in count, or an id is outside the vocabulary.</exception>
    public static ClassifierHead FromLabelWords(TransformerEngine engine, IReadOnlyList<string> labels, IReadOnlyList<int> labelTokenIds)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(labelTokenIds);
        if (labelTokenIds.Count != labels.Count)
            throw new ArgumentException($"classifier head: {labels.Count} labels but {labelTokenIds.Count} label-word tokens", nameof(labelTokenIds));
        var head = new ClassifierHead(engine.Kernels, engine.Config.HiddenSize, labels);
        try
        {
            head.SetParameters([.. engine.LmHeadRows(labelTokenIds), .. new float[labels.Count]]);
            return head;
        }
        catch
        {
            head.Dispose();
            throw;
        }
    }

    /// <summary>R, the number of classes (rows of W).</summary>
    public int Classes { get; }

    /// <summary>C, the hidden width the head reads.</summary>
    public int Width { get; }

    /// <summary>The class labels, in row order.</summary>
    public IReadOnlyList<string> Labels { get; }

    /// <summary>Trainable parameters R·C + R.</summary>
    public long Parameters => (long)Classes * Width + Classes;

    /// <summary>The kernel context the head lives on (the engine's).</summary>
    internal KernelContext Kernels => kernels;

    /// <summary>What the optimizer moves: W then b, one <see cref="ParameterGroup.Head"/> group.</summary>
    public IReadOnlyList<TrainableParameter> Trainables { get; }

    internal ArrayView<float> WeightView => weight.Values;
    internal ArrayView<float> BiasView => bias.Values;
    internal ArrayView<float> WeightGradientView => weight.Gradient;
    internal ArrayView<float> BiasGradientView => bias.Gradient;

    /// <summary>W (R, C) row-major then b (R), copied to the host.</summary>
    public float[] GetParameters() => Trainables.GetValues();

    /// <summary>The head as plain weights (to save).</summary>
    public ClassifierHeadWeights GetWeights()
    {
        var values = GetParameters();
        return new ClassifierHeadWeights(values[..(Classes * Width)], values[(Classes * Width)..], Labels.ToArray());
    }

    /// <summary>Replaces W and b (layout of <see cref="GetParameters"/>) and resets the gradient and AdamW state.</summary>
    /// <exception cref="ArgumentException">Wrong count or a non-finite value.</exception>
    public void SetParameters(ReadOnlySpan<float> values)
    {
        if (values.Length != Parameters)
            throw new ArgumentException($"classifier head: {values.Length} values given, W (R, C) and b (R) hold {Parameters} (R {Classes}, C {Width})");
        foreach (var value in values)
            if (!float.IsFinite(value)) throw new ArgumentException("classifier head: a non-finite value");
        Trainables.SetValues(values);
    }

    /// <summary>dLoss/d(W, b) accumulated since the last <see cref="ZeroGradient"/> (layout of <see cref="GetParameters"/>).</summary>
    public float[] GetGradient() => Trainables.GetGradient();

    /// <summary>Clears the gradient (start of a step; the engine adds each batch's).</summary>
    public void ZeroGradient() => Trainables.ZeroGradient();

    /// <summary>The AdamW state: moments (layout of <see cref="GetParameters"/>) and the number of steps taken.</summary>
    public (float[] M, float[] V, int Step) GetOptimizerState() => Trainables.GetOptimizerState();

    /// <inheritdoc/>
    public void Dispose() => arena.Dispose();
}

/// <summary>A linear classifier head's values, as saved: W (R, C) row-major, b (R), and the class label of each row.</summary>
/// <param name="Weight">(R·C) row-major.</param>
/// <param name="Bias">(R).</param>
/// <param name="Labels">(R) class labels, in row order.</param>
public sealed record ClassifierHeadWeights(float[] Weight, float[] Bias, IReadOnlyList<string> Labels)
{
    /// <summary>Tensor name of W in PromptEngine's prompt files.</summary>
    public const string WeightTensor = "head.weight";
    /// <summary>Tensor name of b in PromptEngine's prompt files.</summary>
    public const string BiasTensor = "head.bias";
    /// <summary>Tensor name of W in a PEFT SEQ_CLS adapter: a decoder's sequence-classification layer is <c>score</c>
    /// (transformers' Llama, Mistral, Qwen2 and GPT-2 *ForSequenceClassification), which PEFT wraps in modules_to_save and
    /// get_peft_model_state_dict saves as <c>{module path}.{key}</c> with the wrapper's "modules_to_save.default." removed
    /// (peft v0.20.0, src/peft/utils/save_and_load.py and ModulesToSaveWrapper.adapter_state_dict).</summary>
    public const string PeftWeightTensor = "base_model.score.weight";
    /// <summary>Tensor name of b in a PEFT SEQ_CLS adapter (see <see cref="PeftWeightTensor"/>).</summary>
    public const string PeftBiasTensor = "base_model.score.bias";
    /// <summary>Metadata key of the head's kind ("linear").</summary>
    public const string KindKey = "head";
    /// <summary>The only kind so far.</summary>
    public const string KindLinear = "linear";
    /// <summary>Metadata key of the class labels, a JSON array in row order.</summary>
    public const string LabelsKey = "head_labels";

    /// <summary>R.</summary>
    public int Classes => Labels.Count;

    /// <summary>C.</summary>
    public int Width => Classes == 0 ? 0 : Weight.Length / Classes;

    /// <summary>The two tensors under <paramref name="weightName"/> and <paramref name="biasName"/>.</summary>
    internal IEnumerable<TensorToWrite> Tensors(string weightName = WeightTensor, string biasName = BiasTensor) =>
    [
        TensorToWrite.F32(weightName, [Classes, Width], Weight),
        TensorToWrite.F32(biasName, [Classes], Bias),
    ];

    /// <summary>Adds the head's metadata (kind and labels) to <paramref name="metadata"/>.</summary>
    internal void AddMetadata(IDictionary<string, string> metadata)
    {
        metadata[KindKey] = KindLinear;
        metadata[LabelsKey] = JsonSerializer.Serialize(Labels);
    }

    /// <summary>Checks the shapes and that every value is finite.</summary>
    /// <exception cref="PromptFormatException">A shape that does not make (R, C) and (R), or a non-finite value.</exception>
    public void Validate(string where)
    {
        if (Classes < 2 || Weight.Length == 0 || Weight.Length % Classes != 0)
            throw new PromptFormatException(where, WeightTensor, $"{Weight.Length} values for {Classes} labels do not make (R, C)");
        if (Bias.Length != Classes) throw new PromptFormatException(where, BiasTensor, $"{Bias.Length} values for {Classes} labels");
        if (Weight.Any(v => !float.IsFinite(v))) throw new PromptFormatException(where, WeightTensor, "a non-finite value");
        if (Bias.Any(v => !float.IsFinite(v))) throw new PromptFormatException(where, BiasTensor, "a non-finite value");
    }

    /// <summary>Reads a head from an open prompt file or adapter weights file, or null when it holds none (no weight tensor).
    /// The head must read the model's width and carry one row per label, labels in the same order.</summary>
    /// <param name="file">The open safetensors file.</param>
    /// <param name="path">Its path, for messages.</param>
    /// <param name="expectedWidth">The model's hidden size C.</param>
    /// <param name="expectedLabels">The task's labels, when known: another count or order is refused.</param>
    /// <param name="weightName">Tensor name of W.</param>
    /// <param name="biasName">Tensor name of b.</param>
    /// <exception cref="PromptFormatException">A malformed head (wrong rank, missing bias or labels, non-finite values); names the tensor.</exception>
    /// <exception cref="PromptCompatibilityException">A head of another width or label set; names the file and the tensor.</exception>
    public static ClassifierHeadWeights? Read(SafetensorsFile file, string path, int expectedWidth, IReadOnlyList<string>? expectedLabels,
        string weightName = WeightTensor, string biasName = BiasTensor)
    {
        ArgumentNullException.ThrowIfNull(file);
        if (!file.TryGetTensor(weightName, out var weightInfo)) return null;
        if (weightInfo.Shape.Length != 2 || weightInfo.Shape[0] < 2 || weightInfo.Shape[1] < 1 || weightInfo.ElementCount > Array.MaxLength)
            throw new PromptFormatException(path, weightName, $"shape {weightInfo.ShapeText}, expected (classes, hidden) with at least two classes");
        if (weightInfo.DType is not (DType.F32 or DType.F16 or DType.BF16))
            throw new PromptFormatException(path, weightName, $"dtype {weightInfo.DType}; a head must be F32, F16 or BF16");
        int classes = (int)weightInfo.Shape[0], width = (int)weightInfo.Shape[1];
        if (width != expectedWidth)
            throw new PromptCompatibilityException(path, $"'{weightName}': shape {weightInfo.ShapeText} reads width {width}, the model's hidden size is {expectedWidth}");
        if (!file.TryGetTensor(biasName, out var biasInfo))
            throw new PromptFormatException(path, biasName, $"missing; a linear head has '{weightName}' and '{biasName}'");
        if (biasInfo.Shape.Length != 1 || biasInfo.Shape[0] != classes || biasInfo.DType is not (DType.F32 or DType.F16 or DType.BF16))
            throw new PromptFormatException(path, biasName, $"shape {biasInfo.ShapeText} {biasInfo.DType}, expected ({classes}) floats for the {classes} rows of '{weightName}'");
        if (!file.Metadata.TryGetValue(LabelsKey, out var labelsJson))
            throw new PromptFormatException(path, LabelsKey, $"missing from the metadata; a head names the label of each of its {classes} rows");
        string[] labels;
        try { labels = JsonSerializer.Deserialize<string[]>(labelsJson) ?? []; }
        catch (JsonException) { throw new PromptFormatException(path, LabelsKey, $"'{labelsJson}' is not a JSON array of strings"); }
        if (labels.Length != classes)
            throw new PromptFormatException(path, LabelsKey, $"{labels.Length} labels for the {classes} rows of '{weightName}'");
        if (expectedLabels is not null && !labels.SequenceEqual(expectedLabels, StringComparer.Ordinal))
            throw new PromptCompatibilityException(path, $"'{weightName}': shape {weightInfo.ShapeText} classifies [{string.Join(", ", labels)}], the task's labels are [{string.Join(", ", expectedLabels)}]");
        var head = new ClassifierHeadWeights(file.ReadF32(weightName), file.ReadF32(biasName), labels);
        head.Validate(path);
        return head;
    }

    /// <summary>Reads the head of a PromptEngine prompt file (or null when it has none); see <see cref="Read(SafetensorsFile, string, int, IReadOnlyList{string}?, string, string)"/>.</summary>
    public static ClassifierHeadWeights? Read(string path, int expectedWidth, IReadOnlyList<string>? expectedLabels)
    {
        using var file = SafetensorsFile.Open(path);
        return Read(file, path, expectedWidth, expectedLabels);
    }
}
