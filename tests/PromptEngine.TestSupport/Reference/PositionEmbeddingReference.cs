namespace PromptEngine.Tests.Reference;

/// <summary>Learned positions, naively: x[r, c] += table[positions[r], c].</summary>
public static class PositionEmbeddingReference
{
    public static void Forward(double[] x, int[] positions, double[] table, int n, int c)
    {
        for (var r = 0; r < n; r++)
            for (var i = 0; i < c; i++)
                x[r * c + i] += table[positions[r] * c + i];
    }
}
