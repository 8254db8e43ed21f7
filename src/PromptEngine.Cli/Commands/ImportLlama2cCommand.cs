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
            var result = Llama2cImporter.ImportModel(parse.GetValue(model)!, parse.GetValue(output)!, parse.GetValue(overwrite), parse.GetValue(tokenizer)!);
            var c = result.Config;
            CliRunner.Out.MarkupLineInterpolated($"wrote [bold]{result.OutDir}[/]: {result.TensorCount} tensors, {result.ParameterCount:N0} parameters (dim {c.Dim}, hidden {c.HiddenDim}, {c.NLayers} layers, {c.NHeads} heads, {c.NKvHeads} kv heads, vocab {c.VocabSize}, context {c.SeqLen})");
            return 0;
        }));
        return command;
    }
}
