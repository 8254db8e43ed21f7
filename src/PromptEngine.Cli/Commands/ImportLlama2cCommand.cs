using System.CommandLine;
using PromptEngine.Import;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine import-llama2c MODEL.bin TOKENIZER.bin --out DIR</c>: converts a llama2.c
/// checkpoint and tokenizer into a standard Hugging Face Llama folder.</summary>
internal static class ImportLlama2cCommand
{
    public static Command Create()
    {
        var model = new Argument<string>("model") { Description = "llama2.c model.bin (legacy fp32 format)." };
        var tokenizer = new Argument<string>("tokenizer") { Description = "llama2.c tokenizer.bin." };
        var output = new Option<string>("--out") { Description = "Folder to write (config.json, model.safetensors, tokenizer.model, tokenizer_config.json).", Required = true };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace a non-empty output folder." };
        var command = new Command("import-llama2c", "Convert a llama2.c model.bin and tokenizer.bin into a Hugging Face Llama folder (with the RoPE row permutation).");
        command.Arguments.Add(model);
        command.Arguments.Add(tokenizer);
        command.Options.Add(output);
        command.Options.Add(overwrite);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var target = parse.GetValue(output)!;
            PathChecks.OutputFolder("--out", target);
            PathChecks.InputFile("<model>", parse.GetValue(model)!);
            PathChecks.InputFile("<tokenizer>", parse.GetValue(tokenizer)!);
            if (Directory.Exists(target) && Directory.EnumerateFileSystemEntries(target).Any())
            {
                if (!parse.GetValue(overwrite)) throw new UsageException($"--out {target} is not empty; add --overwrite to replace it, or choose another folder");
                // Replacing the folder removes what is in it, inputs included.
                var real = PathChecks.RealPath(target) + Path.DirectorySeparatorChar;
                foreach (var (name, input) in new[] { ("<model>", parse.GetValue(model)!), ("<tokenizer>", parse.GetValue(tokenizer)!) })
                    if (PathChecks.RealPath(input).StartsWith(real, StringComparison.Ordinal))
                        throw new UsageException($"--out {target} holds the input {name} {input}, which --overwrite would delete; choose another --out");
            }
            var result = Llama2cImporter.ImportModel(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(overwrite), parse.GetValue(tokenizer)!);
            var c = result.Config;
            CliRunner.Out.MarkupLineInterpolated($"wrote [bold]{result.OutDir}[/]: {result.TensorCount} tensors, {result.ParameterCount:N0} parameters (dim {c.Dim}, hidden {c.HiddenDim}, {c.NLayers} layers, {c.NHeads} heads, {c.NKvHeads} kv heads, vocab {c.VocabSize}, context {c.SeqLen})");
            return 0;
        }));
        return command;
    }
}
