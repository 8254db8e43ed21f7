namespace PromptEngine.Training.Schedules;

/// <summary>
/// A learning rate as a pure function of the optimizer step: <c>lr = At(step, totalSteps)</c>.
/// <para><c>step</c> counts the updates already made (0 for the first update), exactly as Hugging Face
/// transformers' schedulers see it, so the values are theirs: a linear warm-up over
/// <see cref="WarmupSteps"/> from 0 (the first update uses lr 0, as there), <c>peak · step / warmup</c>,
/// then the decay of the subclass from the peak. Steps at or past <c>totalSteps</c> keep the final
/// value (transformers' cosine would rise again; nothing should train past its total).</para>
/// </summary>
/// <param name="PeakLearningRate">The rate after warm-up.</param>
/// <param name="WarmupSteps">Steps of linear warm-up from 0; 0 for none.</param>
public abstract record LearningRateSchedule(double PeakLearningRate, long WarmupSteps)
{
    /// <summary>The learning rate of update <paramref name="step"/> (0-based) of a run of <paramref name="totalSteps"/> updates.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative step, a non-positive total, warm-up longer
    /// than the run, or a peak that is negative or not finite.</exception>
    public double At(long step, long totalSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        if (!double.IsFinite(PeakLearningRate) || PeakLearningRate < 0)
            throw new ArgumentOutOfRangeException(nameof(PeakLearningRate), PeakLearningRate, "schedule: the peak learning rate must be finite and not negative");
        if (WarmupSteps < 0 || WarmupSteps > totalSteps)
            throw new ArgumentOutOfRangeException(nameof(WarmupSteps), WarmupSteps, $"schedule: warm-up must be between 0 and the {totalSteps} total steps");
        Validate();
        if (step < WarmupSteps) return PeakLearningRate * step / WarmupSteps;
        var decaySteps = Math.Max(1, totalSteps - WarmupSteps);
        var progress = Math.Min(1.0, (double)(step - WarmupSteps) / decaySteps);
        return PeakLearningRate * DecayFactor(progress);
    }

    /// <summary>The rate of the trainer's 1-based step t (<see cref="TrainerOptions.LearningRate"/>) in a run of
    /// <paramref name="totalSteps"/>: <see cref="At"/>(t − 1, totalSteps). The last step, t = totalSteps, is update
    /// totalSteps − 1 and so still trains at a positive rate under linear and cosine decay (as in transformers, where the
    /// rate reaches its final value only after the last update); a one-step run without warm-up trains at the peak.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A non-positive total, or a schedule <see cref="At"/> refuses.</exception>
    public Func<int, float> PerTrainerStep(int totalSteps)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(totalSteps);
        At(0, totalSteps); // refuse a bad schedule now, not at the first step
        return step => (float)At(step - 1, totalSteps);
    }

    /// <summary>Checks the subclass's own parameters (called by <see cref="At"/>, warm-up included).</summary>
    protected virtual void Validate() { }

    /// <summary>The factor on the peak after warm-up, at <paramref name="progress"/> ∈ [0, 1] of the decay.</summary>
    protected abstract double DecayFactor(double progress);

    /// <summary>The schedule a name stands for: "constant", "linear" or "cosine".</summary>
    /// <param name="name">Schedule name, case-insensitive.</param>
    /// <param name="peakLearningRate">The rate after warm-up.</param>
    /// <param name="warmupSteps">Steps of warm-up.</param>
    /// <param name="minRatio">Cosine only: the final rate as a fraction of the peak.</param>
    /// <exception cref="ArgumentException">An unknown name, or a min ratio on a schedule without one.</exception>
    public static LearningRateSchedule Create(string name, double peakLearningRate, long warmupSteps = 0, double minRatio = 0)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (minRatio != 0 && !name.Equals("cosine", StringComparison.OrdinalIgnoreCase))
            throw new ArgumentException($"schedule \"{name}\": only \"cosine\" decays to a minimum ratio", nameof(minRatio));
        return name.ToLowerInvariant() switch
        {
            "constant" => new ConstantSchedule(peakLearningRate, warmupSteps),
            "linear" => new LinearDecaySchedule(peakLearningRate, warmupSteps),
            "cosine" => new CosineDecaySchedule(peakLearningRate, warmupSteps, minRatio),
            _ => throw new ArgumentException($"unknown schedule \"{name}\"; the schedules are constant, linear and cosine", nameof(name)),
        };
    }
}

/// <summary>The peak after warm-up, for good (transformers' <c>get_constant_schedule_with_warmup</c>).</summary>
/// <param name="PeakLearningRate">The rate.</param>
/// <param name="WarmupSteps">Steps of linear warm-up from 0.</param>
public sealed record ConstantSchedule(double PeakLearningRate, long WarmupSteps = 0) : LearningRateSchedule(PeakLearningRate, WarmupSteps)
{
    /// <inheritdoc/>
    protected override double DecayFactor(double progress) => 1;
}

/// <summary>Warm-up, then a straight line from the peak to 0 at the last step
/// (transformers' <c>get_linear_schedule_with_warmup</c>).</summary>
/// <param name="PeakLearningRate">The rate after warm-up.</param>
/// <param name="WarmupSteps">Steps of linear warm-up from 0.</param>
public sealed record LinearDecaySchedule(double PeakLearningRate, long WarmupSteps = 0) : LearningRateSchedule(PeakLearningRate, WarmupSteps)
{
    /// <inheritdoc/>
    protected override double DecayFactor(double progress) => 1 - progress;
}

/// <summary>Warm-up, then half a cosine from the peak down to <see cref="MinRatio"/>·peak at the last step
/// (transformers' <c>get_cosine_with_min_lr_schedule_with_warmup</c> with <c>min_lr_rate</c> = MinRatio;
/// with 0, <c>get_cosine_schedule_with_warmup</c>).</summary>
/// <param name="PeakLearningRate">The rate after warm-up.</param>
/// <param name="WarmupSteps">Steps of linear warm-up from 0.</param>
/// <param name="MinRatio">The final rate as a fraction of the peak, in [0, 1].</param>
public sealed record CosineDecaySchedule(double PeakLearningRate, long WarmupSteps = 0, double MinRatio = 0) : LearningRateSchedule(PeakLearningRate, WarmupSteps)
{
    /// <inheritdoc/>
    protected override void Validate()
    {
        if (!(MinRatio >= 0 && MinRatio <= 1))
            throw new ArgumentOutOfRangeException(nameof(MinRatio), MinRatio, "schedule: the minimum ratio must be in [0, 1]");
    }

    /// <inheritdoc/>
    protected override double DecayFactor(double progress) => MinRatio + (1 - MinRatio) * 0.5 * (1 + Math.Cos(Math.PI * progress));
}
