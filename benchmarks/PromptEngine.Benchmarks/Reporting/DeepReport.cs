using System.Diagnostics;
using System.Globalization;
using System.Text;
using PromptEngine.Assets;
using PromptEngine.Benchmarks.Workloads;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Models;

namespace PromptEngine.Benchmarks.Reporting;

/// <summary>
/// <c>-- deep</c>: the deep-prompt issue's measurements as markdown tables, each printed when complete.
/// <list type="number">
/// <item>Exact prompt-KV reuse against the naive path (P prompt positions in every row), for P = 20, 100 and T = 64, 256
/// at B8: an inference forward (the once-per-prompt KV computation timed apart) and a training step (forward and
/// backward into dPrompt through <see cref="SharedPromptKv"/>). stories15M's shape with random weights and 1024 positions,
/// since P + T = 356 exceeds stories15M's 256.</item>
/// <item>Activation recomputation on stories15M at B8, T256 (20 prompt rows + 236 tokens, one scored position per row as
/// in classification, so that the blocks and not the 32000-word LM head dominate): arena sizes and time per training
/// step with and without.</item>
/// <item>The cost of a deep prompt: a stories15M training step with a 20-token plain prompt against a 20-token deep
/// prompt over the same 96 text tokens.</item>
/// </list>
/// Every time is the median of --rounds rounds; in each round the cases being compared run one after the other, so
/// that background load falls on both alike.
/// </summary>
public static class DeepReport
{
    static readonly CultureInfo Invariant = CultureInfo.InvariantCulture;

    /// <summary>Runs the three measurements and prints them to standard output.</summary>
    public static int Run(string[] args)
    {
        int rounds = 3;
        bool reuse = true, recompute = true, cost = true;
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--rounds" when i + 1 < args.Length && int.TryParse(args[i + 1], out var r) && r > 0: rounds = r; i++; break;
                case "--no-reuse": reuse = false; break;
                case "--no-recompute": recompute = false; break;
                case "--no-cost": cost = false; break;
                default:
                    Console.Error.WriteLine($"deep: unknown option '{args[i]}'. Options: --rounds N, --no-reuse, --no-recompute, --no-cost");
                    return 2;
            }
        }
        var clock = Stopwatch.StartNew();
        Print($"## Deep prompts, prompt-KV reuse, recomputation — {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC\n- Machine: {Machine()}\n- Load average at the start: {ReportMode.LoadAverage()}\n");
        if (reuse)
        {
            Print($"### Exact prompt-KV reuse vs the naive path (stories15M shape, random weights; B8; median of {rounds})\n");
            Print(ReuseTable(rounds));
        }
        if (recompute)
        {
            Print($"### Activation recomputation (stories15M, B8, T256 = 20 prompt + 236 tokens, classification; median of {rounds})\n");
            Print(RecomputeTable(rounds));
        }
        if (cost)
        {
            Print($"### Training step: plain prompt vs deep prompt (stories15M, B8, 96 text tokens, classification; median of {rounds})\n");
            Print(CostTable(rounds));
        }
        Print($"Took {clock.Elapsed.TotalSeconds:F0} s; load average at the end: {ReportMode.LoadAverage()}.");
        return 0;
    }

    static void Print(string text)
    {
        Console.WriteLine(text);
        Console.Out.Flush();
    }

    static void Progress(string text) => Console.Error.WriteLine($"[deep {DateTime.UtcNow:HH:mm:ss}] {text}");

    static string Machine() =>
        $"{ReportMode.CpuName() ?? "unknown CPU"}, {Environment.ProcessorCount} logical cores, .NET {Environment.Version}, ILGPU CPU accelerator";

    /// <summary>Milliseconds of one call after one warm-up call (kernel compilation, first touch of the arenas).</summary>
    static double Milliseconds(Action run)
    {
        var clock = Stopwatch.StartNew();
        run();
        return clock.Elapsed.TotalMilliseconds;
    }

    /// <summary>Runs the named cases <paramref name="rounds"/> times, one after the other in each round, after one warm-up
    /// each; returns each case's median milliseconds.</summary>
    static double[] Interleaved(int rounds, params Action[] cases)
    {
        foreach (var run in cases) run();
        var times = cases.Select(_ => new List<double>()).ToArray();
        for (var r = 0; r < rounds; r++)
            for (var c = 0; c < cases.Length; c++)
                times[c].Add(Milliseconds(cases[c]));
        return times.Select(ReportMode.Median).ToArray();
    }

    /// <summary>B rows of <paramref name="promptTableRows"/> prompt slots (0 for none) then the tokens; with a verbalizer
    /// target only the last position is scored (classification), else every text position but the last (LM).</summary>
    static Batch Rows(int[][] tokens, int promptTableRows, int? lastTarget)
    {
        var list = tokens.Select(row =>
        {
            var slots = Enumerable.Range(0, promptTableRows).Select(Slot.Prompt).Concat(row.Select(t => Slot.Token(t))).ToList();
            if (lastTarget is { } target) slots[^1] = slots[^1] with { Target = target };
            else
                for (var i = promptTableRows; i + 1 < slots.Count; i++) slots[i] = slots[i] with { Target = slots[i + 1].Source };
            return (IReadOnlyList<Slot>)slots;
        }).ToArray();
        return BatchBuilder.Build(list);
    }

    static int[][] RandomTokens(Random rng, int rows, int length, int vocab) =>
        Enumerable.Range(0, rows).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(3, vocab)).ToArray()).ToArray();

    static float[] RandomPrompt(Random rng, int length) => Enumerable.Range(0, length).Select(_ => (float)(rng.NextDouble() * 0.1 - 0.05)).ToArray();

    static string ReuseTable(int rounds)
    {
        const int B = 8;
        var folder = TinyModel.WriteRandom(TinyModel.LlamaConfig(hidden: 288, heads: 6, kvHeads: 6, layers: 6, vocab: 32000, intermediate: 768, maxPositions: 1024), seed: 1);
        var table = new StringBuilder();
        table.AppendLine("| P | T | prompt KV once ms | inference naive ms | inference reused ms | inference speedup | train step naive ms | train step shared ms | train speedup |");
        table.AppendLine("|---|---|---|---|---|---|---|---|---|");
        try
        {
            using var model = ModelFolder.Open(folder);
            using var kernels = KernelContext.Create(KernelBackend.Cpu);
            foreach (var (p, t) in new[] { (20, 64), (100, 64), (20, 256), (100, 256) })
            {
                Progress($"reuse P {p} T {t}");
                var rng = new Random(p + t);
                var tokens = RandomTokens(rng, B, t, 32000);
                var naive = Rows(tokens, p, lastTarget: 5);
                var rows = Rows(tokens, 0, lastTarget: 5);
                var prompt = RandomPrompt(rng, p * 288);
                var promptTableRows = Enumerable.Range(0, p).ToArray();
                using var naiveEngine = new TransformerEngine(kernels, model, new EngineOptions(B, p + t, p));
                naiveEngine.SetPrompt(prompt);
                using var promptEngine = new TransformerEngine(kernels, model, new EngineOptions(1, p, p));
                promptEngine.SetPrompt(prompt);
                using var rowsEngine = new TransformerEngine(kernels, model, new EngineOptions(B, t, 0, DeepVirtualTokens: p));
                float[] keysAndValues = [];
                var once = Interleaved(rounds, () => keysAndValues = promptEngine.PromptKeysAndValues(promptTableRows))[0];
                rowsEngine.SetPrefix(keysAndValues);
                var inference = Interleaved(rounds, () => naiveEngine.Loss(naive), () => rowsEngine.Loss(rows));
                var training = Interleaved(rounds,
                    () => { naiveEngine.ZeroPromptGradient(); naiveEngine.LossAndPromptGradient(naive); },
                    () => { promptEngine.ZeroPromptGradient(); SharedPromptKv.LossAndPromptGradient(promptEngine, rowsEngine, promptTableRows, rows); });
                table.AppendLine(string.Create(Invariant,
                    $"| {p} | {t} | {once:F0} | {inference[0]:F0} | {inference[1]:F0} | {inference[0] / inference[1]:F2}x | {training[0]:F0} | {training[1]:F0} | {training[0] / training[1]:F2}x |"));
            }
        }
        finally { Directory.Delete(folder, recursive: true); }
        return table.ToString();
    }

    static string RecomputeTable(int rounds)
    {
        var folder = DemoWorkspace.Prepare(new AssetStore()).Stories15MFolder;
        using var model = ModelFolder.Open(folder);
        var rng = new Random(5);
        var batch = Rows(RandomTokens(rng, 8, 236, model.Config.VocabSize), 20, lastTarget: 5);
        var prompt = RandomPrompt(rng, 20 * model.Config.HiddenSize);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        var engines = new[] { false, true }.Select(recompute =>
        {
            var engine = new TransformerEngine(kernels, model, new EngineOptions(8, 256, 20, MaxLossPositions: batch.LossPositions.Length, Recompute: recompute));
            engine.SetPrompt(prompt);
            return engine;
        }).ToArray();
        try
        {
            Progress("recompute");
            var times = Interleaved(rounds, engines.Select(e => (Action)(() => { e.ZeroPromptGradient(); e.LossAndPromptGradient(batch); })).ToArray());
            var table = new StringBuilder();
            table.AppendLine("| recomputation | activations MB | gradients + scratch MB | all arenas MB | train step ms | step time ratio |");
            table.AppendLine("|---|---|---|---|---|---|");
            for (var i = 0; i < 2; i++)
            {
                var m = engines[i].Memory;
                table.AppendLine(string.Create(Invariant,
                    $"| {(i == 0 ? "off" : "on")} | {m.Activations / 1e6:F1} | {m.GradientsAndScratch / 1e6:F1} | {m.Total / 1e6:F1} | {times[i]:F0} | {times[i] / times[0]:F2} |"));
            }
            return table.ToString();
        }
        finally
        {
            foreach (var engine in engines) engine.Dispose();
        }
    }

    static string CostTable(int rounds)
    {
        var folder = DemoWorkspace.Prepare(new AssetStore()).Stories15MFolder;
        using var model = ModelFolder.Open(folder);
        var rng = new Random(7);
        const int P = 20, T = 96, B = 8;
        var tokens = RandomTokens(rng, B, T, model.Config.VocabSize);
        var plainBatch = Rows(tokens, P, lastTarget: 5);
        var deepBatch = Rows(tokens, 0, lastTarget: 5);
        using var kernels = KernelContext.Create(KernelBackend.Cpu);
        using var plain = new TransformerEngine(kernels, model, new EngineOptions(B, P + T, P));
        plain.SetPrompt(RandomPrompt(rng, P * model.Config.HiddenSize));
        using var deep = new TransformerEngine(kernels, model, new EngineOptions(B, T, 0, DeepVirtualTokens: P));
        deep.SetPrefix(RandomPrompt(rng, (int)deep.PrefixLength));
        Progress("plain vs deep");
        var times = Interleaved(rounds,
            () => { plain.ZeroPromptGradient(); plain.LossAndPromptGradient(plainBatch); },
            () => { deep.ZeroPromptGradient(); deep.LossAndPromptGradient(deepBatch); });
        var table = new StringBuilder();
        table.AppendLine("| method | trainable parameters | positions per row | train step ms |");
        table.AppendLine("|---|---|---|---|");
        table.AppendLine(string.Create(Invariant, $"| plain prompt, 20 virtual tokens | {P * model.Config.HiddenSize:N0} | {P + T} | {times[0]:F0} |"));
        table.AppendLine(string.Create(Invariant, $"| deep prompt (prefix), 20 virtual tokens | {deep.PrefixLength:N0} | {T} (+20 prefix keys per layer) | {times[1]:F0} |"));
        return table.ToString();
    }
}
