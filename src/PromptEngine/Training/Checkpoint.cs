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
        if (Field("format") != "promptengine-checkpoint-v1")
            throw new PromptEngineException($"{path}: checkpoint format '{Field("format")}' is not supported (expected promptengine-checkpoint-v1)");
        var prompt = file.GetTensor("prompt");
        if (prompt.Shape.Length != 2) throw new PromptEngineException($"{path}: checkpoint tensor 'prompt' must be 2-D");
        foreach (var name in new[] { "adam_m", "adam_v" })
            if (!file.GetTensor(name).Shape.SequenceEqual(prompt.Shape))
                throw new PromptEngineException($"{path}: checkpoint tensor '{name}' does not have the prompt's shape [{string.Join(", ", prompt.Shape)}]");
        var best = Field("best_metric");
        double? bestMetric = best.Length == 0 ? null
            : double.TryParse(best, NumberStyles.Float, CultureInfo.InvariantCulture, out var b) && double.IsFinite(b) ? b
            : throw new PromptEngineException($"{path}: checkpoint metadata 'best_metric' is not a number: '{best}'");
        int step = Int("step"), optimizerStep = Int("optimizer_step");
        if (step < 0) throw new PromptEngineException($"{path}: checkpoint metadata 'step' is negative: {step}");
        if (optimizerStep < 0) throw new PromptEngineException($"{path}: checkpoint metadata 'optimizer_step' is negative: {optimizerStep}");
        float[] values = Finite("prompt"), adamM = Finite("adam_m"), adamV = Finite("adam_v");
        for (var i = 0; i < adamV.Length; i++)
            if (adamV[i] < 0) throw new PromptEngineException($"{path}: checkpoint tensor 'adam_v' holds a negative second moment ({adamV[i]}) at element {i}; AdamW's second moments are never negative");
        var state = new CheckpointState(step, values, adamM, adamV, optimizerStep,
            Field("data_state"), bestMetric, Int("best_step"), Int("evals_without_improvement"), (int)prompt.Shape[0], (int)prompt.Shape[1],
            Field("run_fingerprint"));
        if (!file.TryGetTensor(HeadTensor, out var headInfo)) return state;
        foreach (var name in new[] { HeadTensor + "_adam_m", HeadTensor + "_adam_v" })
            if (!file.TryGetTensor(name, out var moment) || !moment.Shape.SequenceEqual(headInfo.Shape))
                throw new PromptEngineException($"{path}: checkpoint tensor '{name}' is missing or does not have the shape of '{HeadTensor}' [{string.Join(", ", headInfo.Shape)}]");
        var headV = Finite(HeadTensor + "_adam_v");
        for (var i = 0; i < headV.Length; i++)
            if (headV[i] < 0) throw new PromptEngineException($"{path}: checkpoint tensor '{HeadTensor}_adam_v' holds a negative second moment ({headV[i]}) at element {i}; AdamW's second moments are never negative");
        int headStep = Int("head_optimizer_step");
        if (headStep < 0) throw new PromptEngineException($"{path}: checkpoint metadata 'head_optimizer_step' is negative: {headStep}");
        return state with { Head = Finite(HeadTensor), HeadM = Finite(HeadTensor + "_adam_m"), HeadV = headV, HeadOptimizerStep = headStep };

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
