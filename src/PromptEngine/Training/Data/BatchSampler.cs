using System.Text.Json;
using PromptEngine.Data;

namespace PromptEngine.Training.Data;

/// <summary>How a <see cref="BatchSampler"/> orders and groups examples.</summary>
/// <param name="BatchSize">Examples per batch (the last batch of an epoch may be smaller).</param>
/// <param name="Seed">Seed of every epoch's shuffle.</param>
/// <param name="Shuffle">Shuffle each epoch; false keeps file order (evaluation).</param>
/// <param name="BucketWindowBatches">Length bucketing: sort each window of this many batches' worth of
/// (shuffled) examples by length before cutting it into batches, so a batch holds rows of similar
/// length and pads little; 0 turns bucketing off.</param>
/// <param name="DropLast">Drop an epoch's final partial batch.</param>
public sealed record BatchSamplerOptions(int BatchSize, ulong Seed, bool Shuffle = true, int BucketWindowBatches = 0, bool DropLast = false);

/// <summary>
/// Where a <see cref="BatchSampler"/> stands: the options and dataset size it was made with, the epoch
/// and the index of the next batch in it, and the state of the generator that orders the epoch. Saved
/// with a checkpoint (<see cref="ToJson"/>) and handed to <see cref="BatchSampler.Resume"/>, it
/// continues with exactly the batches the interrupted run would have drawn next.
/// </summary>
/// <param name="Examples">Examples in the dataset (checked on resume).</param>
/// <param name="Options">The sampler's options.</param>
/// <param name="Epoch">The epoch of the next batch, from 0.</param>
/// <param name="BatchInEpoch">Index of the next batch within its epoch.</param>
/// <param name="EpochRngState">SplitMix64 state the epoch's order is drawn from (a function of the seed
/// and the epoch; checked on resume).</param>
public sealed record BatchSamplerState(int Examples, BatchSamplerOptions Options, long Epoch, int BatchInEpoch, ulong EpochRngState)
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true, PropertyNamingPolicy = JsonNamingPolicy.CamelCase };

    /// <summary>The state as indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Json);

    /// <summary>Reads a state written by <see cref="ToJson"/>.</summary>
    /// <exception cref="DataFormatException">Not JSON, or fields missing; names <paramref name="sourceName"/>.</exception>
    public static BatchSamplerState FromJson(string json, string sourceName = "sampler state")
    {
        BatchSamplerState? state;
        try { state = JsonSerializer.Deserialize<BatchSamplerState>(json, Json); }
        catch (JsonException e) { throw new DataFormatException(sourceName, null, $"not a batch sampler state: {e.Message}", e); }
        if (state?.Options is null) throw new DataFormatException(sourceName, null, "not a batch sampler state: no \"options\"");
        return state;
    }
}

/// <summary>
/// Deals example indices into batches, epoch after epoch, reproducibly from a seed.
/// <para>An epoch: the indices 0…N−1 shuffled (<see cref="SplitMix64"/> Fisher–Yates); with bucketing,
/// each window of <see cref="BatchSamplerOptions.BucketWindowBatches"/>·B shuffled examples is sorted
/// by length (stably, so equal lengths keep their shuffled order) and cut into batches, and the
/// batches of the whole epoch are shuffled again so lengths do not come in waves. Every example is in
/// exactly one batch of every epoch (unless <see cref="BatchSamplerOptions.DropLast"/> drops the
/// final partial one). The generator of epoch e is seeded from (seed, e) alone, so any epoch can be
/// rebuilt without replaying the ones before it: that is what makes <see cref="Resume"/> exact.</para>
/// </summary>
public sealed class BatchSampler
{
    readonly int[] lengths;
    readonly BatchSamplerOptions options;
    List<int[]> epochBatches = new();
    long epoch;
    int batchInEpoch;
    ulong epochRngState;

    /// <summary>A sampler at the start of epoch 0.</summary>
    /// <param name="lengths">(N) each example's length in positions (used by bucketing).</param>
    /// <param name="options">Batch size, seed, shuffling, bucketing.</param>
    public BatchSampler(IReadOnlyList<int> lengths, BatchSamplerOptions options) : this(lengths, options, 0, 0, null) { }

    BatchSampler(IReadOnlyList<int> lengths, BatchSamplerOptions options, long epoch, int batchInEpoch, ulong? expectedRngState)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        ArgumentNullException.ThrowIfNull(options);
        if (lengths.Count == 0) throw new ArgumentException("batch sampler: no examples", nameof(lengths));
        if (options.BatchSize <= 0) throw new ArgumentOutOfRangeException(nameof(options), options.BatchSize, "batch sampler: the batch size must be positive");
        if (options.BucketWindowBatches < 0) throw new ArgumentOutOfRangeException(nameof(options), options.BucketWindowBatches, "batch sampler: the bucket window must not be negative");
        if (options.DropLast && lengths.Count < options.BatchSize)
            throw new ArgumentException($"batch sampler: {lengths.Count} examples make no full batch of {options.BatchSize}, and the last partial batch is dropped", nameof(options));
        this.lengths = lengths.ToArray();
        this.options = options;
        StartEpoch(epoch);
        if (expectedRngState is not null && expectedRngState != epochRngState)
            throw new ArgumentException($"batch sampler state: epoch {epoch}'s generator state {expectedRngState} is not the one seed {options.Seed} gives ({epochRngState}); the state is corrupt", nameof(expectedRngState));
        if (batchInEpoch < 0 || batchInEpoch > epochBatches.Count)
            throw new ArgumentOutOfRangeException(nameof(batchInEpoch), batchInEpoch, $"batch sampler state: the epoch has {epochBatches.Count} batches");
        this.batchInEpoch = batchInEpoch;
    }

    /// <summary>A sampler continuing from <paramref name="state"/> over the same examples.</summary>
    /// <exception cref="ArgumentException">The state was made for a different number of examples, or is inconsistent.</exception>
    public static BatchSampler Resume(IReadOnlyList<int> lengths, BatchSamplerState state)
    {
        ArgumentNullException.ThrowIfNull(lengths);
        ArgumentNullException.ThrowIfNull(state);
        if (state.Examples != lengths.Count)
            throw new ArgumentException($"batch sampler state: saved for {state.Examples} examples, resumed with {lengths.Count}", nameof(state));
        if (state.Epoch < 0) throw new ArgumentOutOfRangeException(nameof(state), state.Epoch, "batch sampler state: negative epoch");
        return new BatchSampler(lengths, state.Options, state.Epoch, state.BatchInEpoch, state.EpochRngState);
    }

    /// <summary>The options.</summary>
    public BatchSamplerOptions Options => options;

    /// <summary>Batches in every epoch.</summary>
    public int BatchesPerEpoch => epochBatches.Count;

    /// <summary>Where the sampler stands: the next batch is batch <see cref="BatchSamplerState.BatchInEpoch"/>
    /// of epoch <see cref="BatchSamplerState.Epoch"/>.</summary>
    public BatchSamplerState State => new(lengths.Length, options, epoch, batchInEpoch, epochRngState);

    /// <summary>The next batch's example indices; moves to the next epoch after the last batch of one.</summary>
    public int[] Next()
    {
        if (batchInEpoch == epochBatches.Count) StartEpoch(epoch + 1);
        return epochBatches[batchInEpoch++].ToArray();
    }

    /// <summary>The batches of <paramref name="epoch"/>, in order (does not move the sampler).</summary>
    public IReadOnlyList<int[]> BatchesOfEpoch(long epoch) => Plan(RngState(options.Seed, epoch)).Select(b => b.ToArray()).ToArray();

    void StartEpoch(long next)
    {
        epoch = next;
        batchInEpoch = 0;
        epochRngState = RngState(options.Seed, next);
        epochBatches = Plan(epochRngState);
    }

    /// <summary>Seed of epoch <paramref name="epoch"/>'s generator: one SplitMix64 output from the seed
    /// offset by the epoch, so neighbouring epochs (and seeds) give unrelated streams.</summary>
    static ulong RngState(ulong seed, long epoch) => new SplitMix64(seed ^ unchecked((ulong)epoch * 0xD1B54A32D192ED03UL)).Next();

    List<int[]> Plan(ulong rngState)
    {
        var rng = new SplitMix64(rngState);
        var order = Enumerable.Range(0, lengths.Length).ToArray();
        if (options.Shuffle) rng.Shuffle(order);
        var size = options.BatchSize;
        if (options.BucketWindowBatches > 0)
        {
            var window = (long)options.BucketWindowBatches * size;
            for (long start = 0; start < order.Length; start += window)
            {
                var count = (int)Math.Min(window, order.Length - start);
                // OrderBy is stable: equal lengths keep their shuffled order.
                var sorted = order.AsSpan((int)start, count).ToArray().OrderBy(i => lengths[i]).ToArray();
                sorted.CopyTo(order, (int)start);
            }
        }
        var batches = new List<int[]>((order.Length + size - 1) / size);
        for (var start = 0; start < order.Length; start += size)
        {
            var count = Math.Min(size, order.Length - start);
            if (count < size && options.DropLast) break;
            batches.Add(order.AsSpan(start, count).ToArray());
        }
        if (options.Shuffle && options.BucketWindowBatches > 0) rng.Shuffle(batches);
        return batches;
    }
}
