using PromptEngine.Prompts;
using PromptEngine.Safetensors;
using PromptEngine.Training;

namespace PromptEngine.Tests.Training;

/// <summary>Checkpoints and prompt files carry a SHA-256 of their tensor data; a damaged file is refused at load with the
/// file named, files from other tools (no hash) still load, and values no run can continue from are refused.</summary>
public class CheckpointIntegrityTests
{
    string folder = "";

    [SetUp]
    public void Setup() => folder = Directory.CreateTempSubdirectory("pe-integrity-").FullName;

    [TearDown]
    public void Cleanup() => Directory.Delete(folder, recursive: true);

    static CheckpointState State(float[]? prompt = null, float[]? m = null, float[]? v = null, int step = 3) =>
        new(step, [new CheckpointTrainables("prompt", [2, 3], prompt ?? [0.1f, -0.2f, 0.3f, 0.4f, 0.5f, 0.6f], m ?? [0.01f, 0.02f, 0.03f, 0.04f, 0.05f, 0.06f],
            v ?? [1e-4f, 2e-4f, 3e-4f, 4e-4f, 5e-4f, 6e-4f], step)], "data", 0.5, 2, 1, "run");

    /// <summary>Flips the lowest mantissa bit of the file's last float: still a finite, plausible value.</summary>
    static void FlipABitOfTheLastValue(string path)
    {
        var bytes = File.ReadAllBytes(path);
        bytes[^4] ^= 1;
        File.WriteAllBytes(path, bytes);
    }

    [Test]
    public void AFlippedBitInACheckpointIsRefused()
    {
        var path = Path.Combine(folder, "checkpoint.safetensors");
        Checkpoint.Save(path, State());
        Assert.That(Checkpoint.Load(path).Prompt, Is.EqualTo(State().Prompt));
        FlipABitOfTheLastValue(path);
        var e = Assert.Catch<PromptEngineException>(() => Checkpoint.Load(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("integrity"));
        Assert.That(e.Message.Split('\n'), Has.Length.EqualTo(1));
    }

    [Test]
    public void AFlippedBitInAPromptFileIsRefused()
    {
        var path = Path.Combine(folder, "prompt.safetensors");
        PromptFile.Save(path, [0.1f, 0.2f, 0.3f, 0.4f], 2, 2);
        using (var file = SafetensorsFile.Open(path)) Assert.That(file.VerifyIntegrity(), Is.True, "our files carry the hash");
        Assert.That(PromptFile.Load(path).Metadata.ContainsKey(SafetensorsFile.IntegrityKey), Is.False, "the hash belongs to the file, not to the prompt");
        FlipABitOfTheLastValue(path);
        var e = Assert.Catch<PromptEngineException>(() => PromptFile.Load(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("integrity"));
    }

    [Test]
    public void FilesWithoutAHashStillLoad()
    {
        // As PEFT or safetensors' own save_file writes them: no integrity hash in the metadata.
        var promptPath = Path.Combine(folder, "peft.safetensors");
        SafetensorsWriter.Write(promptPath, [TensorToWrite.F32("prompt_embeddings", [2, 2], [1f, 2f, 3f, 4f])], new Dictionary<string, string> { ["format"] = "pt" });
        Assert.That(PromptFile.Load(promptPath).Values, Is.EqualTo(new[] { 1f, 2f, 3f, 4f }));
        using (var file = SafetensorsFile.Open(promptPath)) Assert.That(file.VerifyIntegrity(), Is.False);

        var checkpointPath = Path.Combine(folder, "old-checkpoint.safetensors");
        Checkpoint.Save(checkpointPath, State());
        using (var file = SafetensorsFile.Open(checkpointPath))
        {
            var metadata = file.Metadata.Where(kv => kv.Key != SafetensorsFile.IntegrityKey).ToDictionary(kv => kv.Key, kv => kv.Value);
            var tensors = file.Tensors.Select(t => TensorToWrite.F32(t.Name, t.Shape, file.ReadF32(t.Name))).ToList();
            file.Dispose();
            SafetensorsWriter.Write(checkpointPath, tensors, metadata);
        }
        Assert.That(Checkpoint.Load(checkpointPath).Step, Is.EqualTo(3), "a checkpoint from before the hash");
    }

    [TestCase("prompt", float.NaN)]
    [TestCase("prompt", float.PositiveInfinity)]
    [TestCase("adam_m", float.NaN)]
    [TestCase("adam_v", float.NegativeInfinity)]
    [TestCase("adam_v", -1e-3f)]
    public void ValuesNoRunCanContinueFromAreRefused(string tensor, float bad)
    {
        float[] Values(float[] good) { var copy = (float[])good.Clone(); copy[4] = bad; return copy; }
        var s = State();
        var state = tensor switch
        {
            "prompt" => State(prompt: Values(s.Prompt)),
            "adam_m" => State(m: Values(s.AdamM)),
            _ => State(v: Values(s.AdamV)),
        };
        var path = Path.Combine(folder, "checkpoint.safetensors");
        Checkpoint.Save(path, state); // the hash matches: these values were written, not damaged
        var e = Assert.Catch<PromptEngineException>(() => Checkpoint.Load(path))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Message, Does.Contain(path).And.Contain($"'{tensor}'"));
    }

    [Test]
    public void AnEditedMetadataFieldIsRefused()
    {
        // The hash covers the metadata too: a checkpoint's step or sampler state edited by hand is not trained from.
        var path = Path.Combine(folder, "checkpoint.safetensors");
        Checkpoint.Save(path, State(step: 3));
        var bytes = File.ReadAllBytes(path);
        var text = System.Text.Encoding.Latin1.GetString(bytes);
        var at = text.IndexOf("\"step\":\"3\"", StringComparison.Ordinal);
        Assert.That(at, Is.GreaterThan(0));
        bytes[at + "\"step\":\"".Length] = (byte)'2';
        File.WriteAllBytes(path, bytes);
        var e = Assert.Catch<PromptEngineException>(() => Checkpoint.Load(path))!;
        Assert.That(e.Message, Does.Contain(path).And.Contain("integrity"));
    }
}

