using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Engine;

namespace PromptEngine.Training;

/// <summary>Which parameters share an optimizer step's clipping, learning rate and checkpoint entry: the tuned prompt (a
/// plain prompt, a deep prefix, or the MLP that computes the prefix) is one group, a classifier head another.</summary>
/// <param name="Name">The checkpoint entry's tensor name, e.g. "prompt".</param>
/// <param name="Description">What the group is, for messages, e.g. "classifier head".</param>
public sealed record ParameterGroup(string Name, string Description)
{
    /// <summary>The tuned prompt: clipped as one vector, stepped at the run's learning rate.</summary>
    public static readonly ParameterGroup Prompt = new("prompt", "prompt");

    /// <summary>A classifier head: its own clipping, its own learning rate.</summary>
    public static readonly ParameterGroup Head = new("head", "classifier head");
}

/// <summary>
/// One trainable tensor as the optimizer sees it: its values on the device, the gradient the backward adds into, AdamW's
/// first and second moments (same shape) and the number of steps taken. The memory belongs to the module that owns the
/// parameter (the engine's prompt arena, a prefix projection's or a classifier head's arena); this object only names
/// the four views, so nothing depends on where they lie relative to each other.
/// </summary>
public sealed class TrainableParameter
{
    /// <summary>Names four views of the same length: the values, their gradient and the two moments.</summary>
    /// <exception cref="ArgumentException">A view of another length, or an empty one.</exception>
    internal TrainableParameter(string name, ParameterGroup group, ArrayView<float> values, ArrayView<float> gradient,
        ArrayView<float> firstMoment, ArrayView<float> secondMoment)
    {
        if (values.Length == 0) throw new ArgumentException($"trainable parameter {name}: no values", nameof(values));
        if (gradient.Length != values.Length || firstMoment.Length != values.Length || secondMoment.Length != values.Length)
            throw new ArgumentException($"trainable parameter {name}: gradient, m and v hold {gradient.Length}, {firstMoment.Length}, {secondMoment.Length} values, the parameter {values.Length}");
        (Name, Group, Values, Gradient, FirstMoment, SecondMoment) = (name, group, values, gradient, firstMoment, secondMoment);
    }

    /// <summary>The tensor's name with its shape, e.g. "W1 (H, d)".</summary>
    public string Name { get; }

    /// <summary>The group whose clipping, learning rate and checkpoint entry it shares.</summary>
    public ParameterGroup Group { get; }

    /// <summary>Elements.</summary>
    public long Length => Values.Length;

    /// <summary>AdamW steps taken since the values or the optimizer state were last set.</summary>
    public int Step { get; private set; }

    /// <summary>Counts every change of the values (set, or stepped), so that a module can tell whether what it computed
    /// from them is still current.</summary>
    internal long Version { get; private set; }

    /// <summary>Records an optimizer step that moved the values.</summary>
    internal void Stepped(int step) => (Step, Version) = (step, Version + 1);

    internal ArrayView<float> Values { get; }
    internal ArrayView<float> Gradient { get; }
    internal ArrayView<float> FirstMoment { get; }
    internal ArrayView<float> SecondMoment { get; }

    /// <summary>The values, copied to the host.</summary>
    public float[] GetValues() => ToHost(Values);

    /// <summary>Replaces the values and resets the gradient and the optimizer state (a new starting point).</summary>
    /// <exception cref="ArgumentException">Wrong count.</exception>
    public void SetValues(ReadOnlySpan<float> values)
    {
        if (values.Length != Length) throw new ArgumentException($"{Name}: {values.Length} values given, it holds {Length}");
        Values.CopyFromCPU(values.ToArray());
        Version++;
        ResetOptimizer();
    }

    /// <summary>The gradient accumulated since the last <see cref="ZeroGradient"/>, copied to the host.</summary>
    public float[] GetGradient() => ToHost(Gradient);

    /// <summary>Clears the gradient (start of a step; the backward adds each batch's).</summary>
    public void ZeroGradient() => Gradient.MemSetToZero();

    /// <summary>Clears the gradient and both moments and sets the step count to 0.</summary>
    public void ResetOptimizer()
    {
        Gradient.MemSetToZero();
        FirstMoment.MemSetToZero();
        SecondMoment.MemSetToZero();
        Step = 0;
    }

    /// <summary>The AdamW state: both moments (layout of the values) and the number of steps taken.</summary>
    public (float[] M, float[] V, int Step) GetOptimizerState() => (ToHost(FirstMoment), ToHost(SecondMoment), Step);

    /// <summary>Restores the AdamW state saved by <see cref="GetOptimizerState"/> (resuming a run).</summary>
    /// <exception cref="ArgumentException">A moment of the wrong length.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative step count.</exception>
    public void SetOptimizerState(ReadOnlySpan<float> m, ReadOnlySpan<float> v, int step)
    {
        if (m.Length != Length || v.Length != Length)
            throw new ArgumentException($"{Name}: optimizer state of {m.Length}/{v.Length} values given, it holds {Length}");
        ArgumentOutOfRangeException.ThrowIfNegative(step);
        FirstMoment.CopyFromCPU(m.ToArray());
        SecondMoment.CopyFromCPU(v.ToArray());
        Step = step;
    }

    static float[] ToHost(ArrayView<float> view)
    {
        var result = new float[view.Length];
        view.CopyToCPU(result);
        return result;
    }
}

/// <summary>A parameter planned in an arena before it is allocated: the handles of its values, gradient and two moments,
/// reserved one after the other under the parameter's name.</summary>
internal readonly record struct PlannedParameter(string Name, ParameterGroup Group, int Values, int Gradient, int FirstMoment, int SecondMoment)
{
    /// <summary>Reserves the four ranges of <paramref name="length"/> elements: "W (R, C)", "dW (R, C)", "AdamW m of W (R, C)", ….</summary>
    public static PlannedParameter Reserve(Arena<float> arena, string name, ParameterGroup group, long length) =>
        new(name, group, arena.Reserve(name, length), arena.Reserve("d" + name, length), arena.Reserve("AdamW m of " + name, length),
            arena.Reserve("AdamW v of " + name, length));

    /// <summary>The parameter over the allocated <paramref name="arena"/>'s views.</summary>
    public TrainableParameter Bind(Arena<float> arena) => new(Name, Group, arena[Values], arena[Gradient], arena[FirstMoment], arena[SecondMoment]);
}

/// <summary>A list of parameters read and written as one vector, their values back to back in list order: how a module of
/// several tensors (E, W₁, b₁, W₂, b₂) or a prompt with its deep prefix is saved and restored.</summary>
public static class TrainableParameters
{
    /// <summary>Elements of all of them.</summary>
    public static long Length(this IReadOnlyList<TrainableParameter> parameters) => parameters.Sum(p => p.Length);

    /// <summary>Their values, back to back, copied to the host.</summary>
    public static float[] GetValues(this IReadOnlyList<TrainableParameter> parameters) => Join(parameters, p => p.GetValues());

    /// <summary>Their gradients, back to back, copied to the host.</summary>
    public static float[] GetGradient(this IReadOnlyList<TrainableParameter> parameters) => Join(parameters, p => p.GetGradient());

    /// <summary>Replaces all their values (layout of <see cref="GetValues"/>) and resets their gradients and optimizer state.</summary>
    /// <exception cref="ArgumentException">Wrong count.</exception>
    public static void SetValues(this IReadOnlyList<TrainableParameter> parameters, ReadOnlySpan<float> values)
    {
        CheckLength(parameters, values.Length, "values");
        long at = 0;
        foreach (var p in parameters)
        {
            p.SetValues(values.Slice((int)at, (int)p.Length));
            at += p.Length;
        }
    }

    /// <summary>Clears their gradients.</summary>
    public static void ZeroGradient(this IReadOnlyList<TrainableParameter> parameters)
    {
        foreach (var p in parameters) p.ZeroGradient();
    }

    /// <summary>Clears their gradients and moments and sets their step counts to 0.</summary>
    public static void ResetOptimizer(this IReadOnlyList<TrainableParameter> parameters)
    {
        foreach (var p in parameters) p.ResetOptimizer();
    }

    /// <summary>Their AdamW state: both moments back to back (layout of <see cref="GetValues"/>) and the step count of the
    /// first (the optimizer steps them together); empty and 0 for no parameters.</summary>
    public static (float[] M, float[] V, int Step) GetOptimizerState(this IReadOnlyList<TrainableParameter> parameters) =>
        (Join(parameters, p => p.GetOptimizerState().M), Join(parameters, p => p.GetOptimizerState().V), parameters.Count == 0 ? 0 : parameters[0].Step);

    /// <summary>Restores the state saved by <see cref="GetOptimizerState(IReadOnlyList{TrainableParameter})"/>.</summary>
    /// <exception cref="ArgumentException">A moment of the wrong length.</exception>
    public static void SetOptimizerState(this IReadOnlyList<TrainableParameter> parameters, ReadOnlySpan<float> m, ReadOnlySpan<float> v, int step)
    {
        CheckLength(parameters, m.Length, "first moments");
        CheckLength(parameters, v.Length, "second moments");
        long at = 0;
        foreach (var p in parameters)
        {
            p.SetOptimizerState(m.Slice((int)at, (int)p.Length), v.Slice((int)at, (int)p.Length), step);
            at += p.Length;
        }
    }

    /// <summary>The names of the parameters, for messages ("prompt (P, C) and prefix (L, 2, Pv, KV*hs)").</summary>
    public static string Names(this IReadOnlyList<TrainableParameter> parameters) =>
        parameters.Count <= 2 ? string.Join(" and ", parameters.Select(p => p.Name))
            : string.Join(", ", parameters.Take(parameters.Count - 1).Select(p => p.Name)) + " and " + parameters[^1].Name;

    static void CheckLength(IReadOnlyList<TrainableParameter> parameters, int given, string what)
    {
        long length = parameters.Length();
        if (given != length) throw new ArgumentException($"{parameters.Names()}: {given} {what} given, they hold {length}");
    }

    static float[] Join(IReadOnlyList<TrainableParameter> parameters, Func<TrainableParameter, float[]> part)
    {
        var result = new float[parameters.Length()];
        long at = 0;
        foreach (var p in parameters)
        {
            part(p).CopyTo(result, at);
            at += p.Length;
        }
        return result;
    }
}
