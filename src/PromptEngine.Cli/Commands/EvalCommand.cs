using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Prompts;
using PromptEngine.Training;
using Spectre.Console;

namespace PromptEngine.Cli.Commands;

/// <summary><c>promptengine eval</c>: classification accuracy, per-class precision/recall and the
/// confusion matrix of a model with (or without) a soft prompt.</summary>
internal static class EvalCommand
{
    public static Command Create()
    {
        var task = new TaskOptions();
        var data = new Option<string>("--data") { Description = "JSONL to evaluate on.", Required = true };
        var prompt = new Option<string?>("--prompt") { Description = "Prompt file, bank#name or PEFT adapter folder; without it the template's {prompt} is empty (zero-shot)." };
        var examples = new Option<int>("--examples") { Description = "Evaluate the first N examples (0: all).", DefaultValueFactory = _ => 0 };
        var batch = new Option<int>("--batch-size") { Description = "Examples per forward pass (at most the examples evaluated).", DefaultValueFactory = _ => 8 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object." };
        var allow = new Option<bool>("--allow-model-mismatch") { Description = "Use a prompt whose fingerprint names another model of the same width." };
        var methodOption = MethodOption.Create();
        var command = new Command("eval", """
            Evaluate classification accuracy with a verbalizer, with or without a soft prompt.
            Example: promptengine eval --model stories15M --data imdb/test.jsonl --prompt runs/imdb/best_prompt.safetensors --examples 1000
            """);
        task.AddTo(command);
        foreach (var option in new Option[] { data, prompt, examples, batch, json, allow, methodOption }) command.Options.Add(option);
        OptionChecks.NonNegative(examples);
        OptionChecks.Positive(batch);
        command.SetAction(parse => CliRunner.Run(() =>
        {
            using var model = ModelFolder.Open(parse.GetValue(task.Model)!);
            var tuned = MethodOption.Load(parse, prompt, methodOption, model, parse.GetValue(allow));
            var dataset = task.Load(parse, parse.GetValue(data)!, "--data");
            var (_, verbalizer, encoder) = task.Build(parse, model, dataset, tuned?.PromptTableRows ?? 0);
            var encoded = TaskOptions.Encode(encoder, dataset, parse.GetValue(examples));
            // A prompt trained with --head linear carries its classifier, which then scores the answer instead of the verbalizer.
            tuned?.CheckHeadLabels(verbalizer.Labels);
            if (tuned is not null && encoded.Count > 0 && tuned.DeepVirtualTokens + encoded.Max(e => e.Length) > model.Config.MaxPositions)
                throw new UsageException($"the deep prompt's {tuned.DeepVirtualTokens} positions + rows of up to {encoded.Max(e => e.Length)} positions exceed the model's {model.Config.MaxPositions}; lower --max-length");
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var report = Evaluate(model, tuned, verbalizer, encoded, parse.GetValue(batch), out var metrics);
            if (parse.GetValue(json))
            {
                CliRunner.Out.Profile.Width = int.MaxValue;
                CliRunner.Out.Write(new Text(JsonSerializer.Serialize(new
                {
                    accuracy = report.Metric, loss = report.Loss, examples = encoded.Count, prompt_tokens = tuned?.VirtualTokens ?? 0,
                    method = MethodOption.Name(tuned?.Method ?? PromptMethod.Prompt), head = tuned?.Head is null ? HeadOption.None : HeadOption.Linear, details = report.Details,
                    labels = metrics.Labels,
                    confusion = Enumerable.Range(0, metrics.Labels.Count).Select(g => Enumerable.Range(0, metrics.Labels.Count).Select(p => metrics.Confusion[g, p]).ToArray()).ToArray(),
                    seconds = clock.Elapsed.TotalSeconds,
                }) + Environment.NewLine));
            }
            else
            {
                CliRunner.Out.Write(new Text(string.Create(CultureInfo.InvariantCulture,
                    $"{encoded.Count} examples, {MethodOption.Noun(tuned?.Method ?? PromptMethod.Prompt)} {tuned?.VirtualTokens ?? 0} virtual tokens{(tuned?.Head is null ? "" : ", linear head")}, loss {report.Loss:F4}, {clock.Elapsed.TotalSeconds:F1} s") + Environment.NewLine));
                CliRunner.Out.Write(new Text(metrics.ToTable() + Environment.NewLine));
            }
            return 0;
        }));
        return command;
    }

    /// <summary>Builds an inference engine sized for the examples and evaluates them under <paramref name="prompt"/> (and its
    /// head), or zero-shot without one.</summary>
    public static EvalReport Evaluate(ModelFolder model, TunedPrompt? prompt, Training.Data.Verbalizer verbalizer,
        IReadOnlyList<Training.Data.EncodedExample> examples, int batchSize, out Training.Metrics.ClassificationMetrics metrics) =>
        Evaluate(model, prompt, verbalizer, examples, batchSize, out metrics, out _);

    /// <summary>As above, also giving each example's predicted label index (in the examples' order) and reporting the rows
    /// of each finished batch to <paramref name="rowsDone"/>.</summary>
    public static EvalReport Evaluate(ModelFolder model, TunedPrompt? prompt, Training.Data.Verbalizer verbalizer,
        IReadOnlyList<Training.Data.EncodedExample> examples, int batchSize, out Training.Metrics.ClassificationMetrics metrics,
        out IReadOnlyList<int> predictions, Action<int>? rowsDone = null)
    {
        if (examples.Count == 0) throw new PromptEngineException("no examples to evaluate");
        // No batch holds more rows than there are examples, so the engine is sized by the examples, not by the flag.
        batchSize = Math.Min(batchSize, examples.Count);
        using var kernels = KernelContext.Create(KernelBackend.Auto);
        using var engine = EngineFactory.ForInference(kernels, model, prompt, batchSize, examples.Max(e => e.Length), Math.Max(16, verbalizer.TokenIds.Length));
        using var classifier = prompt?.ApplyTo(engine);
        // Weights (or a prompt) holding NaN or infinities give logits no label can be read from: say so before evaluating.
        var probe = engine.Logits(Training.Data.TemplateEncoder.BuildBatch(examples, [0], verbalizer));
        if (!probe.All(float.IsFinite))
            throw new PromptEngineException($"{model.Path}: the model{(prompt is null ? "" : " with this prompt")} gives non-finite logits (NaN or infinity) on the first example; its weights or the prompt's values are not finite");
        var evaluator = new ClassificationEvaluator(examples, verbalizer, batchSize, rowsDone);
        var report = evaluator.Evaluate(engine);
        metrics = evaluator.LastMetrics!;
        predictions = evaluator.LastPredictions!;
        return report;
    }
}
