using PromptEngine.Engine;
using PromptEngine.Generation;
using PromptEngine.Kernels;
using PromptEngine.Models;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Generation;

/// <summary>Batched cached generation on a tiny random Llama (GQA) with a 30-row prompt bank: against the uncached
/// oracle, seeded sampling, top-k = 1, EOS per row, length limits and bad requests.</summary>
[NonParallelizable]
public class GeneratorTests
{
    const int BankRows = 30;
    string folder = null!;
    ModelFolder model = null!;
    KernelContext kernels = null!;
    TransformerEngine engine = null!;
    GenerationRequest[] requests = null!;

    [OneTimeSetUp]
    public void Open()
    {
        folder = ModelReferenceTinyModels.WriteRandom(CachedLogitsTests.Config(CachedLogitsTests.Family.LlamaGqa), seed: 57);
        model = ModelFolder.Open(folder);
        kernels = KernelContext.Create(KernelBackend.Cpu);
        engine = new TransformerEngine(kernels, model, new EngineOptions(4, 48, BankRows, Training: false));
        engine.SetPrompt(CachedLogitsTests.RandomBank(BankRows, model.Config.HiddenSize, seed: 9));
        requests = CachedLogitsTests.MixedRequests(model.Config.VocabSize, seed: 23);
    }

    [OneTimeTearDown]
    public void Close()
    {
        engine?.Dispose();
        kernels?.Dispose();
        model?.Dispose();
        Directory.Delete(folder, recursive: true);
    }

    List<int> Uncached(GenerationRequest request, SamplingOptions options) =>
        Generator.GenerateUncached(engine, request.Tokens, request.PromptTableRows, options);

    [Test]
    public void BatchedGreedyEqualsTheUncachedOraclePerRow()
    {
        var options = new SamplingOptions(14);
        var rows = Generator.Generate(engine, requests, options);
        for (var r = 0; r < requests.Length; r++)
        {
            Assert.That(rows[r].Tokens, Is.EqualTo(Uncached(requests[r], options)), $"row {r}");
            Assert.That(rows[r].Stop, Is.EqualTo(StopReason.MaxNewTokens));
        }
        Assert.That(rows.Select(r => string.Join(",", r.Tokens)).Distinct().Count(), Is.GreaterThan(1), "rows must differ, or the test proves little");
    }

    [Test]
    public void SeededSamplingIsReproducibleAndRowZeroMatchesTheOracle()
    {
        var options = new SamplingOptions(14, Temperature: 1.1f, Seed: 12, TopK: 12, TopP: 0.9f);
        var first = Generator.Generate(engine, requests, options);
        var again = Generator.Generate(engine, requests, options);
        Assert.That(again.Select(r => r.Tokens), Is.EqualTo(first.Select(r => r.Tokens)), "same seed, same tokens");
        var reseeded = Generator.Generate(engine, requests, options with { Seed = 13 });
        Assert.That(reseeded.Select(r => r.Tokens), Is.Not.EqualTo(first.Select(r => r.Tokens)), "another seed, other tokens");
        // Row 0 draws from the same stream in the cached and uncached paths, and their logits agree to ~1e-6.
        Assert.That(first[0].Tokens, Is.EqualTo(Uncached(requests[0], options)));
        // A row's stream depends on its index only: the same request at row 1 samples the same next to any row 0.
        var swappedNeighbour = Generator.Generate(engine, [requests[3], requests[1]], options);
        Assert.That(swappedNeighbour[1].Tokens, Is.EqualTo(first[1].Tokens));
        var greedy = Generator.Generate(engine, requests, new SamplingOptions(14));
        Assert.That(first.Select(r => r.Tokens), Is.Not.EqualTo(greedy.Select(r => r.Tokens)), "sampling at temperature 1.1 must leave greedy");
    }

    [Test]
    public void TopKOneIsGreedyAtAnyTemperatureAndSeed()
    {
        var greedy = Generator.Generate(engine, requests, new SamplingOptions(14));
        foreach (var seed in new[] { 1, 2, 3 })
        {
            var topOne = Generator.Generate(engine, requests, new SamplingOptions(14, Temperature: 2f, Seed: seed, TopK: 1));
            Assert.That(topOne.Select(r => r.Tokens), Is.EqualTo(greedy.Select(r => r.Tokens)), $"seed {seed}");
        }
    }

    [Test]
    public void EosStopsItsRowWhileTheOthersContinue()
    {
        var free = Generator.Generate(engine, requests, new SamplingOptions(14));
        // An EOS id that row 0 emits at its third token and no other row emits at all.
        var eos = free[0].Tokens[2];
        Assume.That(free[0].Tokens.Take(2), Does.Not.Contain(eos));
        Assume.That(free.Skip(1).SelectMany(r => r.Tokens), Does.Not.Contain(eos), "pick another seed: the EOS id appears in another row");
        var stopped = Generator.Generate(engine, requests, new SamplingOptions(14, StopAtEos: eos));
        Assert.That(stopped[0].Tokens, Is.EqualTo(free[0].Tokens.Take(3)), "row 0 ends with its EOS");
        Assert.That(stopped[0].Stop, Is.EqualTo(StopReason.Eos));
        for (var r = 1; r < requests.Length; r++)
        {
            Assert.That(stopped[r].Tokens, Is.EqualTo(free[r].Tokens), $"row {r} continues undisturbed by row 0 going idle");
            Assert.That(stopped[r].Stop, Is.EqualTo(StopReason.MaxNewTokens));
        }
        // The single-row paths stop on it too.
        Assert.That(Generator.Generate(engine, requests[0].Tokens, requests[0].PromptTableRows, new SamplingOptions(14, StopAtEos: eos)), Is.EqualTo(free[0].Tokens.Take(3)));
        Assert.That(Uncached(requests[0], new SamplingOptions(14, StopAtEos: eos)), Is.EqualTo(free[0].Tokens.Take(3)));
    }

    [Test]
    public void ARowStopsWhenItFillsTheEngine()
    {
        // Row 1 has 10 + 6 = 16 positions; an engine of 20 caches 4 more, so it emits 5 tokens (the last is never fed back).
        using var small = new TransformerEngine(kernels, model, new EngineOptions(4, 20, BankRows, Training: false));
        small.SetPrompt(engine.GetPrompt());
        var reduced = requests.Select(r => r with { PromptTableRows = r.PromptTableRows.Take(10).ToArray() }).ToArray();
        var rows = Generator.Generate(small, reduced, new SamplingOptions(30));
        Assert.That(rows[1].Tokens, Has.Count.EqualTo(5));
        Assert.That(rows[1].Stop, Is.EqualTo(StopReason.LengthLimit));
        Assert.That(rows[3].Tokens, Has.Count.EqualTo(20 - 4 + 1));
        Assert.That(rows[1].Tokens, Is.EqualTo(Generator.GenerateUncached(small, reduced[1].Tokens, reduced[1].PromptTableRows, new SamplingOptions(30))));
    }

    [Test]
    public void BadRequestsAreRejectedWithTheRowNamed()
    {
        var tooMany = Assert.Throws<ArgumentException>(() => Generator.Generate(engine, [.. requests, requests[0]], new SamplingOptions(2)));
        Assert.That(tooMany!.Message, Does.Contain("5 requests").And.Contain("4 rows"));
        var empty = Assert.Throws<ArgumentException>(() => Generator.Generate(engine, [requests[0], new GenerationRequest([], [0])], new SamplingOptions(2)));
        Assert.That(empty!.Message, Does.Contain("request 1").And.Contain("no tokens"));
        var badPrompt = Assert.Throws<ArgumentException>(() => Generator.Generate(engine, [new GenerationRequest([1], [BankRows])], new SamplingOptions(2)));
        Assert.That(badPrompt!.Message, Does.Contain("prompt row 30").And.Contain("30 rows"));
        var badToken = Assert.Throws<ArgumentException>(() => Generator.Generate(engine, [new GenerationRequest([1, 99], [])], new SamplingOptions(2)));
        Assert.That(badToken!.Message, Does.Contain("token 99"));
        var tooLong = Assert.Throws<ArgumentException>(() => Generator.Generate(engine, [new GenerationRequest(new int[40], Enumerable.Range(0, 10).ToArray())], new SamplingOptions(2)));
        Assert.That(tooLong!.Message, Does.Contain("50 positions").And.Contain("48"));
        Assert.Throws<ArgumentOutOfRangeException>(() => Generator.Generate(engine, requests, new SamplingOptions(2, TopP: 0)));
        Assert.That(Generator.Generate(engine, requests, new SamplingOptions(0)).Select(r => r.Tokens.Count), Has.All.Zero);
        var fresh = new TransformerEngine(kernels, model, new EngineOptions(1, 8, 0, Training: false));
        using (fresh)
        {
            Assert.Throws<InvalidOperationException>(() => fresh.DecodeStep([1]));
            fresh.Prefill(Generator.PrefillBatch(fresh, [new GenerationRequest([1, 2], [])]));
            var wrongCount = Assert.Throws<ArgumentException>(() => fresh.DecodeStep([1, 2]));
            Assert.That(wrongCount!.Message, Does.Contain("2 tokens").And.Contain("1 cached rows"));
        }
    }
}
