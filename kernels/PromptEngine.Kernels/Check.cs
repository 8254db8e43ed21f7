using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Shape checks shared by the launchers; each failure names the op, the tensor and the sizes.</summary>
internal static class Check
{
    /// <summary>Throws unless <paramref name="view"/> holds exactly <paramref name="expected"/> elements.</summary>
    public static void Length<T>(string op, string tensor, ArrayView<T> view, long expected, string shape)
        where T : unmanaged
    {
        if (view.Length != expected)
            throw new KernelShapeException($"{op}: {tensor} has {view.Length} elements, expected {shape} = {expected}.");
    }

    /// <summary>Throws unless every dimension is positive.</summary>
    public static void Positive(string op, params (string Name, int Value)[] dims)
    {
        foreach (var (name, value) in dims)
            if (value <= 0)
                throw new KernelShapeException($"{op}: dimension {name} = {value} must be positive.");
    }
}
