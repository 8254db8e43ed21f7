using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Engine;
using PromptEngine.Kernels;

namespace PromptEngine.Training;

/// <summary>One group's AdamW hyperparameters for a step.</summary>
/// <param name="LearningRate">lr.</param>
/// <param name="Beta1">β₁.</param>
/// <param name="Beta2">β₂.</param>
/// <param name="Epsilon">ε added to the bias-corrected √v.</param>
/// <param name="WeightDecay">Decoupled weight decay λ.</param>
/// <param name="MaxGradNorm">Clip the group's gradient norm to this (≤ 0: no clipping).</param>
public sealed record AdamWSettings(float LearningRate, float Beta1 = 0.9f, float Beta2 = 0.999f, float Epsilon = 1e-8f, float WeightDecay = 0f,
    float MaxGradNorm = 0f);

/// <summary>
/// AdamW over a list of <see cref="TrainableParameter"/>s, group by group (<see cref="TrainableParameter.Group"/>): each
/// group's gradients are divided by the number of accumulated batches, measured as one vector (the global norm of the
/// group, <see cref="GradNorm"/>), clipped together by one factor on the device, and every parameter takes its AdamW step
/// (<see cref="AdamW"/>). One float per group comes back to the host to refuse a non-finite gradient before anything
/// moves, and one more to refuse a step that made the values non-finite.
/// </summary>
/// <remarks>Groups are clipped separately, as a run's prompt and its classifier head always have been (each at its own
/// learning rate). Within a group the norm is the norm of the concatenated gradients, computed over the same partitions
/// as one buffer of that length, so a group of several tensors clips exactly as one would.</remarks>
public sealed class AdamWOptimizer : IDisposable
{
    /// <summary>Scratch floats one optimizer needs: sum of squares (1), clip scale (1), norm partials (<see cref="GradNorm.Partitions"/>).</summary>
    public const int ScratchLength = 2 + GradNorm.Partitions;

    readonly KernelContext kernels;
    readonly MemoryBuffer1D<float, Stride1D.Dense>? owned;
    readonly ArrayView<float> sumSquares, clipScale, partials;

    /// <summary>An optimizer with its own scratch on <paramref name="kernels"/>' accelerator.</summary>
    public AdamWOptimizer(KernelContext kernels) : this(kernels, default, own: true)
    {
    }

    /// <summary>An optimizer working in <paramref name="scratch"/> (<see cref="ScratchLength"/> floats of its owner's arena).</summary>
    internal AdamWOptimizer(KernelContext kernels, ArrayView<float> scratch) : this(kernels, scratch, own: false)
    {
    }

    AdamWOptimizer(KernelContext kernels, ArrayView<float> scratch, bool own)
    {
        ArgumentNullException.ThrowIfNull(kernels);
        this.kernels = kernels;
        if (own)
        {
            owned = kernels.Accelerator.Allocate1D<float>(ScratchLength);
            scratch = owned.View;
        }
        if (scratch.Length != ScratchLength) throw new ArgumentException($"optimizer scratch: {scratch.Length} floats, expected {ScratchLength}", nameof(scratch));
        sumSquares = scratch.SubView(0, 1);
        clipScale = scratch.SubView(1, 1);
        partials = scratch.SubView(2, GradNorm.Partitions);
    }

    /// <summary>One step of every group in <paramref name="parameters"/> (groups in order of first appearance), each with
    /// its <paramref name="settings"/>. Returns each group's gradient norm before clipping.</summary>
    /// <exception cref="NonFiniteGradientException">A group's gradient holds NaN or ∞; that group and those after it are left
    /// untouched, so the last good state can be saved.</exception>
    /// <exception cref="NonFinitePromptException">The step itself (a learning rate or weight decay too large for float) made
    /// a group's values NaN, ∞ or too large to square in float; they are then unusable and must not be saved.</exception>
    public IReadOnlyDictionary<ParameterGroup, float> Step(IReadOnlyList<TrainableParameter> parameters, Func<ParameterGroup, AdamWSettings> settings,
        int accumulatedBatches = 1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var norms = new Dictionary<ParameterGroup, float>();
        foreach (var group in parameters.GroupBy(p => p.Group))
            norms[group.Key] = Step(group.ToArray(), settings(group.Key), accumulatedBatches);
        return norms;
    }

    /// <summary>One step of <paramref name="parameters"/> as one group: one norm, one clipping factor, one set of settings.
    /// Returns the gradient norm before clipping.</summary>
    /// <exception cref="ArgumentException">No parameters.</exception>
    /// <exception cref="ArgumentOutOfRangeException">Fewer than one accumulated batch.</exception>
    /// <exception cref="NonFiniteGradientException">The gradient holds NaN or ∞; the values and the optimizer state are left untouched.</exception>
    /// <exception cref="NonFinitePromptException">The step made the values non-finite; they must not be saved.</exception>
    public float Step(IReadOnlyList<TrainableParameter> parameters, AdamWSettings settings, int accumulatedBatches = 1)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        ArgumentNullException.ThrowIfNull(settings);
        if (parameters.Count == 0) throw new ArgumentException("optimizer: no parameters to step", nameof(parameters));
        if (accumulatedBatches < 1) throw new ArgumentOutOfRangeException(nameof(accumulatedBatches), accumulatedBatches, "at least one batch");
        if (accumulatedBatches > 1)
            foreach (var p in parameters) kernels.Scale.Forward(p.Gradient, 1f / accumulatedBatches, p.Length);
        var clip = settings.MaxGradNorm > 0 ? clipScale : default;
        kernels.GradNorm.Forward(sumSquares, clip, partials, Views(parameters, p => p.Gradient), settings.MaxGradNorm > 0 ? settings.MaxGradNorm : 1f);
        // Read the norm before stepping: a NaN or ∞ gradient must not reach the values or the moments.
        var norm = MathF.Sqrt(ToHost(sumSquares));
        int step = parameters[0].Step + 1;
        if (!float.IsFinite(norm))
            throw new NonFiniteGradientException($"the {parameters[0].Group.Description}'s gradient ({parameters.Names()}) is not finite (norm {norm}) at optimizer step {step}; it was not updated");
        foreach (var p in parameters)
        {
            kernels.AdamW.Step(p.Values, p.FirstMoment, p.SecondMoment, p.Gradient, clip, p.Length,
                settings.LearningRate, settings.Beta1, settings.Beta2, settings.Epsilon, settings.WeightDecay, step);
            p.Stepped(step);
        }
        // The moments stay finite once the gradient's norm is (each |g| is then below √float.MaxValue), but a huge learning
        // rate or weight decay can still overflow the values; one reduction on the device and one float back tell.
        kernels.GradNorm.Forward(sumSquares, default, partials, Views(parameters, p => p.Values), 1f);
        var valuesSumSquares = ToHost(sumSquares);
        if (!float.IsFinite(valuesSumSquares))
            throw new NonFinitePromptException($"optimizer step {step} (learning rate {settings.LearningRate}, weight decay {settings.WeightDecay}) made the {parameters[0].Group.Description} ({parameters.Names()}) non-finite (sum of squares {valuesSumSquares})");
        return norm;
    }

    static ArrayView<float>[] Views(IReadOnlyList<TrainableParameter> parameters, Func<TrainableParameter, ArrayView<float>> view) =>
        parameters.Select(view).ToArray();

    static float ToHost(ArrayView<float> one)
    {
        var result = new float[1];
        one.CopyToCPU(result);
        return result[0];
    }

    /// <inheritdoc/>
    public void Dispose() => owned?.Dispose();
}
