namespace PromptEngine.Safetensors;

/// <summary>One tensor's header entry. <paramref name="DataStart"/> and <paramref name="DataEnd"/> are
/// byte offsets relative to the data section (the first byte after the JSON header), end exclusive.
/// Instances handed out by <see cref="SafetensorsFile"/> have been validated: the shape product times the
/// dtype size equals the byte range. Treat <paramref name="Shape"/> as read-only.</summary>
public sealed record TensorInfo(string Name, DType DType, long[] Shape, long DataStart, long DataEnd)
{
    /// <summary>Product of <see cref="Shape"/> (1 for a scalar, 0 when any dimension is 0).</summary>
    /// <exception cref="OverflowException">The product does not fit in a long (only possible for a hand-built instance).</exception>
    public long ElementCount { get; } = Product(Shape);

    /// <summary>Bytes the tensor occupies: <c>DataEnd - DataStart</c>.</summary>
    public long ByteLength => DataEnd - DataStart;

    /// <summary>The shape as safetensors prints it, e.g. "[2, 3]".</summary>
    public string ShapeText => $"[{string.Join(", ", Shape)}]";

    private static long Product(long[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        long product = 1;
        foreach (var dimension in shape) product = checked(product * dimension);
        return product;
    }
}
