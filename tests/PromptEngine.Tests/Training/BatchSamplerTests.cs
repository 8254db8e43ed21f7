using PromptEngine.Data;
using PromptEngine.Training.Data;

namespace PromptEngine.Tests.Training;

public class BatchSamplerTests
{
    /// <summary>Lengths with many ties and a wide range, as real rows have.</summary>
    static int[] Lengths(int n) => Enumerable.Range(0, n).Select(i => 10 + (int)((i * 2654435761L) % 97)).ToArray();

    static List<int[]> Draw(BatchSampler sampler, int batches) => Enumerable.Range(0, batches).Select(_ => sampler.Next()).ToList();

    [TestCase(0)]
    [TestCase(4)]
    public void EveryExampleExactlyOncePerEpoch(int bucketWindowBatches)
    {
        var lengths = Lengths(103);
        var sampler = new BatchSampler(lengths, new BatchSamplerOptions(8, Seed: 42, BucketWindowBatches: bucketWindowBatches));
        Assert.That(sampler.BatchesPerEpoch, Is.EqualTo(13));
        var orders = new List<int[]>();
        for (var epoch = 0; epoch < 3; epoch++)
        {
            var batches = Draw(sampler, sampler.BatchesPerEpoch);
            var seen = batches.SelectMany(b => b).ToArray();
            Assert.That(seen.Order(), Is.EqualTo(Enumerable.Range(0, 103)), $"epoch {epoch}");
            Assert.That(batches.Count(b => b.Length != 8), Is.EqualTo(1), "only one partial batch");
            Assert.That(batches.Single(b => b.Length != 8).Length, Is.EqualTo(103 % 8));
            orders.Add(seen);
        }
        Assert.That(orders[1], Is.Not.EqualTo(orders[0]), "each epoch is shuffled anew");
        Assert.That(orders[0], Is.Not.EqualTo(Enumerable.Range(0, 103)));
        Assert.That(sampler.State.Epoch, Is.EqualTo(2));
        Assert.That(sampler.State.BatchInEpoch, Is.EqualTo(13));
    }

    [Test]
    public void BucketingGroupsSimilarLengthsWithinEachWindow()
    {
        var lengths = Lengths(640);
        var plain = new BatchSampler(lengths, new BatchSamplerOptions(16, Seed: 3)).BatchesOfEpoch(0);
        var bucketed = new BatchSampler(lengths, new BatchSamplerOptions(16, Seed: 3, BucketWindowBatches: 10)).BatchesOfEpoch(0);
        // Padding a batch costs (max − each); bucketing should remove most of it.
        static long Padding(IEnumerable<int[]> batches, int[] lengths) => batches.Sum(b => b.Sum(i => (long)(b.Max(j => lengths[j]) - lengths[i])));
        var plainPadding = Padding(plain, lengths);
        var bucketedPadding = Padding(bucketed, lengths);
        Assert.That(bucketedPadding, Is.LessThan(plainPadding / 5), $"padding {bucketedPadding} bucketed vs {plainPadding} plain");

        // Same shuffle, then each window of 160 sorted: the batches are exactly the sorted windows cut in 16s, in shuffled order.
        var shuffled = plain.SelectMany(b => b).ToArray();
        var expected = shuffled.Chunk(160).SelectMany(w => w.OrderBy(i => lengths[i]).Chunk(16)).Select(b => string.Join(",", b)).Order().ToArray();
        Assert.That(bucketed.Select(b => string.Join(",", b)).Order(), Is.EqualTo(expected));
        // ... and the batch order is itself shuffled, not window after window in ascending length.
        var firstWindowLongest = bucketed.Take(10).Select(b => b.Max(i => lengths[i])).ToArray();
        Assert.That(firstWindowLongest, Is.Not.Ordered);
    }

    [Test]
    public void SameSeedSameBatchesOtherSeedOtherBatches()
    {
        var lengths = Lengths(50);
        var options = new BatchSamplerOptions(5, Seed: 7, BucketWindowBatches: 2);
        var a = Draw(new BatchSampler(lengths, options), 25);
        var b = Draw(new BatchSampler(lengths, options), 25);
        var c = Draw(new BatchSampler(lengths, options with { Seed = 8 }), 25);
        Assert.That(b, Is.EqualTo(a));
        Assert.That(c, Is.Not.EqualTo(a));
    }

    [Test]
    public void TheShuffleIsSplitMix64FisherYatesSeededPerEpoch()
    {
        // Epoch e's generator starts at SplitMix64(seed ^ e·0xD1B54A32D192ED03).Next(); without bucketing
        // the epoch is that generator's Fisher–Yates shuffle of 0..N−1, cut in order.
        const ulong seed = 99;
        var sampler = new BatchSampler(Lengths(20), new BatchSamplerOptions(6, seed));
        for (var epoch = 0L; epoch < 3; epoch++)
        {
            var state = new SplitMix64(seed ^ unchecked((ulong)epoch * 0xD1B54A32D192ED03UL)).Next();
            var order = Enumerable.Range(0, 20).ToArray();
            new SplitMix64(state).Shuffle(order);
            Assert.That(Draw(sampler, 4), Is.EqualTo(order.Chunk(6).ToList()), $"epoch {epoch}");
        }
    }

    [TestCase(0, 0)]
    [TestCase(0, 7)]
    [TestCase(1, 3)]
    [TestCase(2, 13)]
    public void ResumingFromASavedStateGivesExactlyTheSameBatches(int epoch, int batch)
    {
        var lengths = Lengths(103);
        var options = new BatchSamplerOptions(8, Seed: 2024, BucketWindowBatches: 3);
        var original = new BatchSampler(lengths, options);
        Draw(original, epoch * original.BatchesPerEpoch + batch);
        var json = original.State.ToJson();

        var resumed = BatchSampler.Resume(lengths, BatchSamplerState.FromJson(json, "ckpt/sampler.json"));
        Assert.That(resumed.State, Is.EqualTo(original.State));
        Assert.That(Draw(resumed, 30), Is.EqualTo(Draw(original, 30)));
        Assert.That(resumed.State, Is.EqualTo(original.State));
    }

    [Test]
    public void TheStateJsonNamesItsFields()
    {
        var sampler = new BatchSampler(Lengths(10), new BatchSamplerOptions(4, Seed: 18446744073709551615UL));
        sampler.Next();
        var json = sampler.State.ToJson();
        Assert.That(json, Does.Contain("\"epoch\": 0").And.Contain("\"batchInEpoch\": 1").And.Contain("\"seed\": 18446744073709551615").And.Contain("\"epochRngState\""));
        Assert.That(BatchSamplerState.FromJson(json), Is.EqualTo(sampler.State));
    }

    [Test]
    public void AStateThatDoesNotMatchIsRejected()
    {
        var lengths = Lengths(30);
        var state = new BatchSampler(lengths, new BatchSamplerOptions(4, Seed: 1)).State;
        Assert.That(Assert.Throws<ArgumentException>(() => BatchSampler.Resume(Lengths(31), state))!.Message, Does.Contain("saved for 30 examples, resumed with 31"));
        Assert.That(Assert.Throws<ArgumentException>(() => BatchSampler.Resume(lengths, state with { EpochRngState = state.EpochRngState + 1 }))!.Message, Does.Contain("corrupt"));
        Assert.Throws<ArgumentOutOfRangeException>(() => BatchSampler.Resume(lengths, state with { BatchInEpoch = 9 }));
        var e = Assert.Throws<DataFormatException>(() => BatchSamplerState.FromJson("{\"epoch\": ", "ckpt/sampler.json"))!;
        Assert.That(e.Message, Does.StartWith("ckpt/sampler.json: not a batch sampler state"));
        Assert.Throws<DataFormatException>(() => BatchSamplerState.FromJson("{}", "ckpt/sampler.json"));
    }

    [Test]
    public void DropLastAndNoShuffle()
    {
        var lengths = Lengths(10);
        var sampler = new BatchSampler(lengths, new BatchSamplerOptions(4, Seed: 5, Shuffle: false, DropLast: true));
        Assert.That(Draw(sampler, 3), Is.EqualTo(new[] { new[] { 0, 1, 2, 3 }, [4, 5, 6, 7], [0, 1, 2, 3] }));
        var keep = new BatchSampler(lengths, new BatchSamplerOptions(4, Seed: 5, Shuffle: false));
        Assert.That(Draw(keep, 3), Is.EqualTo(new[] { new[] { 0, 1, 2, 3 }, [4, 5, 6, 7], [8, 9] }));
        Assert.Throws<ArgumentException>(() => new BatchSampler(Lengths(3), new BatchSamplerOptions(4, 0, DropLast: true)));
        Assert.Throws<ArgumentException>(() => new BatchSampler([], new BatchSamplerOptions(4, 0)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new BatchSampler(lengths, new BatchSamplerOptions(0, 0)));
    }
}
