namespace PromptEngine.Tests.Reference;

/// <summary>Double-precision row gather: out[i, :] = in[rows[i], :]; its gradient adds dOut[i, :] into dIn[rows[i], :].</summary>
public static class RowGatherReference
{
    public static void Forward(double[] output, double[] input, int[] rows, int width)
    {
        for (var i = 0; i < rows.Length; i++)
            for (var c = 0; c < width; c++)
                output[i * width + c] = input[rows[i] * width + c];
    }

    /// <summary>dIn[rows[i], :] += dOut[i, :] (accumulates, as the kernel does).</summary>
    public static void Backward(double[] dInput, double[] dOutput, int[] rows, int width)
    {
        for (var i = 0; i < rows.Length; i++)
            for (var c = 0; c < width; c++)
                dInput[rows[i] * width + c] += dOutput[i * width + c];
    }
}
