namespace PromptEngine.Tests.Reference;

/// <summary>Naive embedding with prompt concatenation, same argument order as the launcher
/// (the backward scans the source map directly instead of using an inverse map).</summary>
public static class EmbeddingReference
{
    /// <summary>out (B·T, C) from the table (V, C) for s ≥ 0, the prompt (P, C) row −1−s otherwise.</summary>
    public static void Forward(double[] output, int[] sourceMap, double[] table, double[] prompt, int rows, int c, int vocab, int promptTableRows)
    {
        for (int row = 0; row < rows; row++)
        {
            int s = sourceMap[row];
            for (int i = 0; i < c; i++)
                output[row * c + i] = s >= 0 ? table[s * c + i] : prompt[(-1 - s) * c + i];
        }
    }

    /// <summary>dPrompt (P, C) += dOut rows of the positions that used each prompt row.</summary>
    public static void Backward(double[] dPrompt, double[] dOut, int[] sourceMap, int rows, int c, int promptTableRows)
    {
        for (int row = 0; row < rows; row++)
            if (sourceMap[row] < 0)
                for (int i = 0; i < c; i++)
                    dPrompt[(-1 - sourceMap[row]) * c + i] += dOut[row * c + i];
    }
}
