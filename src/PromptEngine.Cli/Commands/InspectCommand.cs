using System.CommandLine;
using PromptEngine.Models;
using PromptEngine.Safetensors;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine inspect PATH</c>: the tensors of a .safetensors file, or of a model
/// folder together with its config summary, weight check and parameter count.</summary>
internal static class InspectCommand
{
    public static Command Create()
    {
        var path = new Argument<string>("path") { Description = "A .safetensors file or a Hugging Face model folder." };
        var command = new Command("inspect", """
            Show the tensors (name, dtype, shape, bytes), config and parameter count of a model file or folder.
            Example: promptengine inspect ~/.cache/promptengine/models/stories15M-v1
            """);
        command.Arguments.Add(path);
        command.SetAction(parse => CliRunner.Run(() => Inspect(parse.GetValue(path)!)));
        return command;
    }

    public static int Inspect(string path)
    {
        var console = CliRunner.Out;
        if (Directory.Exists(path))
        {
            using var folder = ModelFolder.Open(path);
            WriteTensors(console, folder.Tensors.Tensors, folder.Tensors.FileOf);
            var c = folder.Config;
            var summary = new Table().AddColumns("config", "value").HideHeaders();
            void Row(string key, string value) => summary.AddRow(new Text(key), new Text(value));
            Row("architecture", $"{c.Architecture} ({c.Family} family)");
            Row("width / MLP", $"{c.HiddenSize} / {c.IntermediateSize}");
            Row("layers / heads / kv heads / head dim", $"{c.NumLayers} / {c.NumHeads} / {c.NumKvHeads} / {c.HeadDim}");
            Row("vocabulary / context", $"{c.VocabSize} / {c.MaxPositions}");
            Row("norm eps", c.NormEps.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            if (c.Family == ModelFamily.Llama) Row("rope theta", c.RopeTheta.ToString("R", System.Globalization.CultureInfo.InvariantCulture));
            Row("tied embeddings", c.TieWordEmbeddings ? "yes" : "no");
            Row("parameters", folder.ParameterCount.ToString("N0", System.Globalization.CultureInfo.InvariantCulture));
            var tokenizer = folder.Tokenizer;
            Row("tokenizer", $"{tokenizer.GetType().Name}, vocabulary {tokenizer.VocabSize}, BOS {tokenizer.BosId}, EOS {tokenizer.EosId}");
            Row("weights check", $"all {folder.Weights.Weights.Count} tensors present with the shapes the config implies");
            console.Write(summary);
            return 0;
        }
        if (!File.Exists(path)) throw new PromptEngineException($"{path}: no such file or folder");
        using var file = SafetensorsFile.Open(path);
        WriteTensors(console, file.Tensors, _ => file.Path);
        if (file.Metadata.Count > 0)
        {
            var meta = new Table().AddColumns("metadata", "value");
            foreach (var (k, v) in file.Metadata) meta.AddRow(new Text(k), new Text(v));
            console.Write(meta);
        }
        return 0;
    }

    static void WriteTensors(IAnsiConsole console, IReadOnlyList<TensorInfo> tensors, Func<string, string> fileOf)
    {
        var shards = tensors.Select(t => fileOf(t.Name)).Distinct().Count();
        var table = new Table().AddColumns("tensor", "dtype", "shape", "bytes");
        if (shards > 1) table.AddColumn("file");
        foreach (var t in tensors)
        {
            var row = new List<string> { t.Name, t.DType.ToString(), $"[{string.Join(", ", t.Shape)}]", t.ByteLength.ToString("N0", System.Globalization.CultureInfo.InvariantCulture) };
            if (shards > 1) row.Add(Path.GetFileName(fileOf(t.Name)));
            table.AddRow(row.Select(cell => new Text(cell)).ToArray());
        }
        var elements = tensors.Sum(t => t.ElementCount);
        var bytes = tensors.Sum(t => t.ByteLength);
        table.Caption(Markup.Escape($"{tensors.Count} tensors, {elements.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} elements, {bytes.ToString("N0", System.Globalization.CultureInfo.InvariantCulture)} bytes"));
        console.Write(table);
    }
}
