using ILGPU;

namespace PromptEngine.Kernels;

/// <summary>Shape checks shared by the launchers; each failure names the op, the tensor and the sizes.</summary>
internal static class Check
{
    /// <summary>Throws unless <paramref name="view"/> holds exactly <paramref name="expected"/> elements.</summary>
    public static void Length<T>(string op, string tensor, ArrayView<T> view, long expected, string shape)
        where T : unmanaged
    {
        Length(op, tensor, view.Length, expected, shape);
    }

    /// <summary>Throws unless a tensor of <paramref name="length"/> elements holds exactly <paramref name="expected"/>
    /// (for a launcher that checks a tensor stored in more than one element type).</summary>
    public static void Length(string op, string tensor, long length, long expected, string shape)
    {
        if (length != expected)
            throw new KernelShapeException($"{op}: {tensor} has {length} elements, expected {shape} = {expected}.");
    }

    /// <summary>Throws unless every dimension is positive.</summary>
    public static void Positive(string op, params (string Name, int Value)[] dims)
    {
        foreach (var (name, value) in dims)
            if (value <= 0)
                throw new KernelShapeException($"{op}: dimension {name} = {value} must be positive.");
    }
}
