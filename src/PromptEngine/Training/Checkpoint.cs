using System.Globalization;
using System.Text.Json;
using PromptEngine.Safetensors;

namespace PromptEngine.Training;

/// <summary>One group of trainable parameters as a checkpoint holds it (<see cref="ParameterGroup"/>): its values back to
/// back, AdamW's two moments in the same layout, and its optimizer step count.</summary>
/// <param name="Name">The group's tensor name ("prompt", "head").</param>
/// <param name="Shape">The tensor's shape, e.g. (P, C) for a plain prompt.</param>
/// <param name="Values">The values.</param>
/// <param name="AdamM">AdamW's first moment.</param>
/// <param name="AdamV">AdamW's second moment.</param>
/// <param name="OptimizerStep">AdamW steps taken.</param>
public sealed record CheckpointTrainables(string Name, long[] Shape, float[] Values, float[] AdamM, float[] AdamV, int OptimizerStep);

/// <summary>Everything a run needs to continue exactly where it stopped: every trainable group's values, AdamW moments and
/// step count (the tuned prompt's first, then a classifier head's), the training step, the data sampler's position and RNG
/// state, and the early-stopping bookkeeping.</summary>
public sealed record CheckpointState(
    int Step,
    IReadOnlyList<CheckpointTrainables> Trainables,
    string DataState,
    double? BestMetric,
    int BestStep,
    int EvalsWithoutImprovement,
    string RunFingerprint)
{
    /// <summary>The group saved under <paramref name="name"/>, or null.</summary>
    public CheckpointTrainables? Find(string name) => Trainables.FirstOrDefault(t => t.Name == name);

    CheckpointTrainables TunedPrompt => Find(ParameterGroup.Prompt.Name) ?? throw new InvalidOperationException("checkpoint: no prompt");

    /// <summary>The tuned prompt's values (a plain prompt, a deep prefix, both, or a prefix projection's parameters).</summary>
    public float[] Prompt => TunedPrompt.Values;
    /// <summary>The tuned prompt's AdamW first moment.</summary>
    public float[] AdamM => TunedPrompt.AdamM;
    /// <summary>The tuned prompt's AdamW second moment.</summary>
    public float[] AdamV => TunedPrompt.AdamV;
    /// <summary>The tuned prompt's AdamW step count.</summary>
    public int OptimizerStep => TunedPrompt.OptimizerStep;
    /// <summary>A classifier head's W then b (<see cref="Prompts.ClassifierHead.GetParameters"/>), or null for a run without one.</summary>
    public float[]? Head => Find(ParameterGroup.Head.Name)?.Values;
    /// <summary>The head's AdamW step count (0 without a head).</summary>
    public int HeadOptimizerStep => Find(ParameterGroup.Head.Name)?.OptimizerStep ?? 0;
}

/// <summary>Checkpoint files: safetensors with each trainable group's values and two AdamW moments as tensors and the
/// scalar state in the metadata. Writes are atomic (temporary file, flush, rename), so a crash or Ctrl-C
/// mid-write leaves the previous checkpoint intact.</summary>
/// <remarks>A group named X is stored as the tensors X, X_adam_m, X_adam_v and the metadata X_optimizer_step, except the
/// tuned prompt's, stored as prompt, adam_m, adam_v and optimizer_step: the names of the first checkpoints, which held
/// nothing else, and which still load.</remarks>
public static class Checkpoint
{
    /// <summary>Name of the classifier head's tensor (W then b, flat); its moments add "_adam_m" and "_adam_v".</summary>
    public const string HeadTensor = "head";

    const string Format = "promptengine-checkpoint-v1";

    static string MomentName(string group, string moment) => group == ParameterGroup.Prompt.Name ? moment : $"{group}_{moment}";

    static string StepKey(string group) => MomentName(group, "optimizer_step");

    /// <summary>Writes <paramref name="state"/> to <paramref name="path"/> atomically.</summary>
    /// <exception cref="ArgumentException">A group's moments or shape do not match its values, or no prompt group.</exception>
    public static void Save(string path, CheckpointState state)
    {
        if (state.Find(ParameterGroup.Prompt.Name) is null) throw new ArgumentException("checkpoint: no prompt group", nameof(state));
        var metadata = new Dictionary<string, string>
        {
            ["format"] = Format,
            ["step"] = state.Step.ToString(CultureInfo.InvariantCulture),
            ["data_state"] = state.DataState,
            ["best_metric"] = state.BestMetric?.ToString("R", CultureInfo.InvariantCulture) ?? "",
            ["best_step"] = state.BestStep.ToString(CultureInfo.InvariantCulture),
            ["evals_without_improvement"] = state.EvalsWithoutImprovement.ToString(CultureInfo.InvariantCulture),
            ["run_fingerprint"] = state.RunFingerprint,
        };
        List<TensorToWrite> tensors = [];
        foreach (var group in state.Trainables)
        {
            if (group.AdamM.Length != group.Values.Length || group.AdamV.Length != group.Values.Length || group.Shape.Aggregate(1L, (a, b) => a * b) != group.Values.Length)
                throw new ArgumentException($"checkpoint: the moments and shape of '{group.Name}' must match its {group.Values.Length} values", nameof(state));
            tensors.Add(TensorToWrite.F32(group.Name, group.Shape, group.Values));
            tensors.Add(TensorToWrite.F32(MomentName(group.Name, "adam_m"), group.Shape, group.AdamM));
            tensors.Add(TensorToWrite.F32(MomentName(group.Name, "adam_v"), group.Shape, group.AdamV));
            metadata[StepKey(group.Name)] = group.OptimizerStep.ToString(CultureInfo.InvariantCulture);
        }
        SafetensorsWriter.Write(path, tensors, metadata, integrityHash: true);
    }

    /// <summary>Reads a checkpoint written by <see cref="Save"/>, checking its integrity hash (when it has one, as every
    /// checkpoint written since the hash was introduced does) and that its values can be trained on.</summary>
    /// <exception cref="PromptEngineException">Not a checkpoint, a damaged file, a field missing or malformed, a NaN or
    /// infinite value in a tensor, or a negative second moment (each named with the file).</exception>
    public static CheckpointState Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        file.VerifyIntegrity();
        string Field(string name) => file.Metadata.TryGetValue(name, out var value) ? value
            : throw new PromptEngineException($"{path}: not a PromptEngine checkpoint (metadata '{name}' is missing)");
        int Int(string name) => int.TryParse(Field(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new PromptEngineException($"{path}: checkpoint metadata '{name}' is not an integer: '{Field(name)}'");
        int Count(string name)
        {
            var value = Int(name);
            return value >= 0 ? value : throw new PromptEngineException($"{path}: checkpoint metadata '{name}' is negative: {value}");
        }
        if (Field("format") != Format)
            throw new PromptEngineException($"{path}: checkpoint format '{Field("format")}' is not supported (expected {Format})");
        if (file.GetTensor(ParameterGroup.Prompt.Name).Shape.Length != 2)
            throw new PromptEngineException($"{path}: checkpoint tensor '{ParameterGroup.Prompt.Name}' must be 2-D");
        var best = Field("best_metric");
        double? bestMetric = best.Length == 0 ? null
            : double.TryParse(best, NumberStyles.Float, CultureInfo.InvariantCulture, out var b) && double.IsFinite(b) ? b
            : throw new PromptEngineException($"{path}: checkpoint metadata 'best_metric' is not a number: '{best}'");
        int step = Count("step");
        // The groups: the prompt first, then every other tensor that is not a moment.
        var names = file.Tensors.Select(t => t.Name)
            .Where(n => n != ParameterGroup.Prompt.Name && n != "adam_m" && n != "adam_v" && !n.EndsWith("_adam_m", StringComparison.Ordinal) && !n.EndsWith("_adam_v", StringComparison.Ordinal))
            .Order(StringComparer.Ordinal);
        var groups = new[] { ParameterGroup.Prompt.Name }.Concat(names).Select(Group).ToArray();
        return new CheckpointState(step, groups, Field("data_state"), bestMetric, Int("best_step"), Int("evals_without_improvement"), Field("run_fingerprint"));

        CheckpointTrainables Group(string name)
        {
            var shape = file.GetTensor(name).Shape;
            string m = MomentName(name, "adam_m"), v = MomentName(name, "adam_v");
            foreach (var moment in new[] { m, v })
                if (!file.TryGetTensor(moment, out var info) || !info.Shape.SequenceEqual(shape))
                    throw new PromptEngineException($"{path}: checkpoint tensor '{moment}' is missing or does not have the shape of '{name}' [{string.Join(", ", shape)}]");
            float[] values = Finite(name), adamM = Finite(m), adamV = Finite(v);
            for (var i = 0; i < adamV.Length; i++)
                if (adamV[i] < 0) throw new PromptEngineException($"{path}: checkpoint tensor '{v}' holds a negative second moment ({adamV[i]}) at element {i}; AdamW's second moments are never negative");
            return new CheckpointTrainables(name, shape.ToArray(), values, adamM, adamV, Count(StepKey(name)));
        }

        float[] Finite(string name)
        {
            var data = file.ReadF32(name);
            for (var i = 0; i < data.Length; i++)
                if (!float.IsFinite(data[i])) throw new PromptEngineException($"{path}: checkpoint tensor '{name}' holds {data[i]} at element {i}; a run cannot continue from non-finite values");
            return data;
        }
    }

    /// <summary>A stable digest of the settings that must not change across a resume (so a resumed run is the same run).</summary>
    public static string Fingerprint(object settings)
    {
        var json = JsonSerializer.Serialize(settings);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(json)))[..16].ToLowerInvariant();
    }
}
