using System.Globalization;
using System.Text.Json;
using PromptEngine.Safetensors;

namespace PromptEngine.Training;

/// <summary>Everything a run needs to continue exactly where it stopped: the prompt, AdamW's moments and
/// step count, the training step, the data sampler's position and RNG state, and the early-stopping
/// bookkeeping; with a classifier head, its parameters, moments and step count too.</summary>
public sealed record CheckpointState(
    int Step,
    float[] Prompt,
    float[] AdamM,
    float[] AdamV,
    int OptimizerStep,
    string DataState,
    double? BestMetric,
    int BestStep,
    int EvalsWithoutImprovement,
    int PromptRows,
    int Width,
    string RunFingerprint)
{
    /// <summary>A classifier head's W then b (<see cref="Prompts.ClassifierHead.GetParameters"/>), or null for a run without one.</summary>
    public float[]? Head { get; init; }
    /// <summary>The head's AdamW first moment (layout of <see cref="Head"/>).</summary>
    public float[]? HeadM { get; init; }
    /// <summary>The head's AdamW second moment.</summary>
    public float[]? HeadV { get; init; }
    /// <summary>The head's AdamW step count.</summary>
    public int HeadOptimizerStep { get; init; }
}

/// <summary>Checkpoint files: safetensors with the prompt and the two AdamW moments as tensors and the
/// scalar state in the metadata. Writes are atomic (temporary file, flush, rename), so a crash or Ctrl-C
/// mid-write leaves the previous checkpoint intact.</summary>
public static class Checkpoint
{
    /// <summary>Name of the classifier head's tensor (W then b, flat); its moments add "_adam_m" and "_adam_v".</summary>
    public const string HeadTensor = "head";

    /// <summary>Writes <paramref name="state"/> to <paramref name="path"/> atomically.</summary>
    public static void Save(string path, CheckpointState state)
    {
        long[] shape = [state.PromptRows, state.Width];
        var metadata = new Dictionary<string, string>
        {
            ["format"] = "promptengine-checkpoint-v1",
            ["step"] = state.Step.ToString(CultureInfo.InvariantCulture),
            ["optimizer_step"] = state.OptimizerStep.ToString(CultureInfo.InvariantCulture),
            ["data_state"] = state.DataState,
            ["best_metric"] = state.BestMetric?.ToString("R", CultureInfo.InvariantCulture) ?? "",
            ["best_step"] = state.BestStep.ToString(CultureInfo.InvariantCulture),
            ["evals_without_improvement"] = state.EvalsWithoutImprovement.ToString(CultureInfo.InvariantCulture),
            ["run_fingerprint"] = state.RunFingerprint,
        };
        List<TensorToWrite> tensors =
        [
            TensorToWrite.F32("prompt", shape, state.Prompt),
            TensorToWrite.F32("adam_m", shape, state.AdamM),
            TensorToWrite.F32("adam_v", shape, state.AdamV),
        ];
        if (state.Head is { } head)
        {
            if (state.HeadM?.Length != head.Length || state.HeadV?.Length != head.Length)
                throw new ArgumentException("checkpoint: the head's moments must have the head's length", nameof(state));
            tensors.Add(TensorToWrite.F32(HeadTensor, [head.Length], head));
            tensors.Add(TensorToWrite.F32(HeadTensor + "_adam_m", [head.Length], state.HeadM));
            tensors.Add(TensorToWrite.F32(HeadTensor + "_adam_v", [head.Length], state.HeadV));
            metadata["head_optimizer_step"] = state.HeadOptimizerStep.ToString(CultureInfo.InvariantCulture);
        }
        SafetensorsWriter.Write(path, tensors, metadata);
    }

    /// <summary>Reads a checkpoint written by <see cref="Save"/>.</summary>
    /// <exception cref="PromptEngineException">Not a checkpoint, or a field is missing or malformed (named).</exception>
    public static CheckpointState Load(string path)
    {
        using var file = SafetensorsFile.Open(path);
        string Field(string name) => file.Metadata.TryGetValue(name, out var value) ? value
            : throw new PromptEngineException($"{path}: not a PromptEngine checkpoint (metadata '{name}' is missing)");
        int Int(string name) => int.TryParse(Field(name), NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v
            : throw new PromptEngineException($"{path}: checkpoint metadata '{name}' is not an integer: '{Field(name)}'");
        if (Field("format") != "promptengine-checkpoint-v1")
            throw new PromptEngineException($"{path}: checkpoint format '{Field("format")}' is not supported (expected promptengine-checkpoint-v1)");
        var prompt = file.GetTensor("prompt");
        if (prompt.Shape.Length != 2) throw new PromptEngineException($"{path}: checkpoint tensor 'prompt' must be 2-D");
        foreach (var name in new[] { "adam_m", "adam_v" })
            if (!file.GetTensor(name).Shape.SequenceEqual(prompt.Shape))
                throw new PromptEngineException($"{path}: checkpoint tensor '{name}' does not have the prompt's shape [{string.Join(", ", prompt.Shape)}]");
        var best = Field("best_metric");
        double? bestMetric = best.Length == 0 ? null
            : double.TryParse(best, NumberStyles.Float, CultureInfo.InvariantCulture, out var b) ? b
            : throw new PromptEngineException($"{path}: checkpoint metadata 'best_metric' is not a number: '{best}'");
        var state = new CheckpointState(Int("step"), file.ReadF32("prompt"), file.ReadF32("adam_m"), file.ReadF32("adam_v"), Int("optimizer_step"),
            Field("data_state"), bestMetric, Int("best_step"), Int("evals_without_improvement"), (int)prompt.Shape[0], (int)prompt.Shape[1],
            Field("run_fingerprint"));
        if (!file.TryGetTensor(HeadTensor, out var headInfo)) return state;
        foreach (var name in new[] { HeadTensor + "_adam_m", HeadTensor + "_adam_v" })
            if (!file.TryGetTensor(name, out var moment) || !moment.Shape.SequenceEqual(headInfo.Shape))
                throw new PromptEngineException($"{path}: checkpoint tensor '{name}' is missing or does not have the shape of '{HeadTensor}' [{string.Join(", ", headInfo.Shape)}]");
        return state with
        {
            Head = file.ReadF32(HeadTensor), HeadM = file.ReadF32(HeadTensor + "_adam_m"), HeadV = file.ReadF32(HeadTensor + "_adam_v"),
            HeadOptimizerStep = Int("head_optimizer_step"),
        };
    }

    /// <summary>A stable digest of the settings that must not change across a resume (so a resumed run is the same run).</summary>
    public static string Fingerprint(object settings)
    {
        var json = JsonSerializer.Serialize(settings);
        return Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(json)))[..16].ToLowerInvariant();
    }
}
