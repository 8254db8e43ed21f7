using System.CommandLine;
using PromptEngine.Models;
using PromptEngine.Prompts;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine prompt inspect|export|import</c>: look at a prompt file, bank or PEFT adapter,
/// and convert between the project's prompt files and Hugging Face PEFT adapter folders.</summary>
internal static class PromptCommand
{
    public static Command Create()
    {
        var command = new Command("prompt", "Inspect soft prompts and convert them to and from Hugging Face PEFT adapters.");
        command.Subcommands.Add(Inspect());
        command.Subcommands.Add(Export());
        command.Subcommands.Add(Import());
        return command;
    }

    static Command Inspect()
    {
        var path = new Argument<string>("path") { Description = "Prompt file, prompt bank, or PEFT adapter folder." };
        var command = new Command("inspect", "Show a prompt's shape, statistics and metadata (model fingerprint, init method), or a bank's prompts.\nExample: promptengine prompt inspect runs/imdb/best_prompt.safetensors");
        command.Arguments.Add(path);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var target = parse.GetValue(path)!;
            var console = CliRunner.Out;
            if (File.Exists(target) && IsBank(target))
            {
                var bank = PromptBank.Load(target);
                var table = new Table().AddColumns("prompt", "virtual tokens", "width");
                foreach (var name in bank.Names) table.AddRow(new Text(name), new Text(bank.Get(name).VirtualTokens.ToString()), new Text(bank.Width?.ToString() ?? ""));
                console.Write(table);
                return 0;
            }
            PathChecks.PromptInput("prompt", target);
            var prompt = TunedPrompt.Load(target, null);
            var values = prompt.Values;
            double mean = values.Average(), std = Math.Sqrt(values.Select(v => (v - mean) * (v - mean)).Average());
            var summary = new Table().AddColumns("field", "value").HideHeaders();
            summary.AddRow(new Text("shape"), new Text($"({prompt.VirtualTokens}, {prompt.Width}) = {values.Length} numbers"));
            summary.AddRow(new Text("mean / std / max |x|"), new Text($"{mean:G4} / {std:G4} / {values.Max(Math.Abs):G4}"));
            if (File.Exists(target)) summary.AddRow(new Text("file size"), new Text($"{new FileInfo(target).Length:N0} bytes"));
            foreach (var (key, value) in prompt.Metadata.OrderBy(p => p.Key, StringComparer.Ordinal))
                summary.AddRow(new Text(key), new Text(value.Length > 120 ? value[..120] + "…" : value));
            console.Write(summary);
            return 0;
        }));
        return command;
    }

    static bool IsBank(string path)
    {
        using var file = Safetensors.SafetensorsFile.Open(path);
        return file.Metadata.TryGetValue("content", out var content) && content == "prompt_bank";
    }

    static Command Export()
    {
        var path = new Argument<string>("prompt") { Description = "Prompt file, deep-prompt file (or bank.safetensors#name); a head trained with it goes along." };
        var model = new Option<string>("--model") { Description = "The base model folder the prompt was trained for.", Required = true };
        var output = new Option<string>("--peft") { Description = "Adapter folder to write (adapter_model.safetensors + adapter_config.json).", Required = true };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Export even if the prompt's fingerprint names another model." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an adapter already in the --peft folder." };
        var command = new Command("export", "Write a prompt as a Hugging Face PEFT adapter (PROMPT_TUNING, or PREFIX_TUNING for a deep prompt; SEQ_CLS with a head).\nExample: promptengine prompt export best_prompt.safetensors --model stories15M --peft adapter/");
        command.Arguments.Add(path);
        foreach (var option in new Option[] { model, output, allow, overwrite }) command.Options.Add(option);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var target = parse.GetValue(output)!;
            PathChecks.OutputFolder("--peft", target);
            var written = new[] { PeftAdapter.WeightsFileName, PeftAdapter.ConfigFileName }.Select(f => Path.Combine(target, f)).ToList();
            PathChecks.NotOverInputs("--peft", written, ("prompt", parse.GetValue(path)!.Split('#')[0]), ("--model", parse.GetValue(model)));
            if (!parse.GetValue(overwrite) && written.FirstOrDefault(File.Exists) is { } existing)
                throw new UsageException($"--peft {target} already holds an adapter ({Path.GetFileName(existing)}); add --overwrite to replace it, or choose another folder");
            using var folder = ModelFolder.Open(parse.GetValue(model)!);
            PathChecks.PromptInput("prompt", parse.GetValue(path)!);
            var prompt = TunedPrompt.Load(parse.GetValue(path)!, folder.Config);
            var check = prompt.CheckCompatibility(folder, parse.GetValue(allow));
            if (check.Warning is { } warning) CliRunner.Error.WriteLine($"warning: {warning}");
            prompt.ExportPeft(parse.GetValue(output)!, folder);
            CliRunner.Out.Write(new Text($"wrote {parse.GetValue(output)} ({prompt.VirtualTokens} virtual tokens × {prompt.Width})" + Environment.NewLine));
            return 0;
        }));
        return command;
    }

    static Command Import()
    {
        var path = new Argument<string>("adapter") { Description = "PEFT adapter folder (PROMPT_TUNING, or PREFIX_TUNING with --model)." };
        var output = new Option<string>("--out") { Description = "Prompt file to write.", Required = true };
        var model = new Option<string?>("--model") { Description = "Base model folder; records its fingerprint in the prompt and checks the width." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace an existing --out file." };
        var command = new Command("import", "Read a Hugging Face PEFT prompt-tuning or prefix-tuning adapter into a prompt file.\nExample: promptengine prompt import adapter/ --out prompt.safetensors --model stories15M");
        command.Arguments.Add(path);
        foreach (var option in new Option[] { output, model, overwrite }) command.Options.Add(option);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            var target = parse.GetValue(output)!;
            PathChecks.OutputFile("--out", target);
            PathChecks.NotOverInputs("--out", [target], ("adapter", parse.GetValue(path)), ("--model", parse.GetValue(model)));
            if (File.Exists(target) && !parse.GetValue(overwrite))
                throw new UsageException($"--out {target} already exists; add --overwrite to replace it, or choose another file");
            using var folder = parse.GetValue(model) is { } m ? ModelFolder.Open(m) : null;
            var prompt = TunedPrompt.ImportPeft(parse.GetValue(path)!, folder?.Config);
            prompt.Save(parse.GetValue(output)!, folder);
            CliRunner.Out.Write(new Text($"wrote {parse.GetValue(output)} ({prompt.VirtualTokens} virtual tokens × {prompt.Width})" + Environment.NewLine));
            return 0;
        }));
        return command;
    }
}
