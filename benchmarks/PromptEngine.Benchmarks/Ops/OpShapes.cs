using PromptEngine.Benchmarks.Reporting;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>The models whose shapes the op benchmarks use: N = B·(T+P) rows.</summary>
static class ModelShapes
{
    // tiny: B4 × (64 + 20), C 128, 4 heads of 32, SwiGLU 344, vocabulary 1000, LM loss at 4·63 positions.
    public const int TinyN = 4 * 84, TinyC = 128, TinyH = 4, TinyI = 344, TinyV = 1000, TinyS = 4 * 63;
    // stories15M: B8 × (96 + 20), C 288, 6 heads of 48, SwiGLU 768, vocabulary 32000, one scored position per row.
    public const int StoriesN = 8 * 116, StoriesC = 288, StoriesH = 6, StoriesI = 768, StoriesV = 32000, StoriesS = 8;
}

/// <summary>Y (N, M) = X (N, K) · Wᵀ, W (M, K): one projection of one model.</summary>
public sealed record LinearShape(string Model, string Projection, int N, int K, int M) : IWorkCount
{
    public double Flops(string method) => 2.0 * N * K * M;
    public double Bytes(string method) => 4.0 * ((long)N * K + (long)M * K + (long)N * M);
    public override string ToString() => $"{Model} {Projection} {N}x{K}->{M}";

    /// <summary>Every distinct projection shape of the two models (q, k, v and o share one per model).</summary>
    public static IEnumerable<LinearShape> All() =>
    [
        new("tiny", "qkvo", ModelShapes.TinyN, ModelShapes.TinyC, ModelShapes.TinyC),
        new("tiny", "gate/up", ModelShapes.TinyN, ModelShapes.TinyC, ModelShapes.TinyI),
        new("tiny", "down", ModelShapes.TinyN, ModelShapes.TinyI, ModelShapes.TinyC),
        new("stories15M", "qkvo", ModelShapes.StoriesN, ModelShapes.StoriesC, ModelShapes.StoriesC),
        new("stories15M", "gate/up", ModelShapes.StoriesN, ModelShapes.StoriesC, ModelShapes.StoriesI),
        new("stories15M", "down", ModelShapes.StoriesN, ModelShapes.StoriesI, ModelShapes.StoriesC),
    ];
}

/// <summary>Causal self-attention over B rows of T positions, H query heads, KV key/value heads of hs channels.</summary>
public sealed record AttentionShape(string Model, int B, int T, int H, int KV, int HeadSize) : IWorkCount
{
    // Causal: about half the T² scores are computed. Forward: QKᵀ and PV; backward: QKᵀ again, dP, dV, dQ, dK.
    public double Flops(string method) => (method.Contains("Backward") ? 5.0 : 2.0) * B * H * (double)T * T * HeadSize;
    public double Bytes(string method) => 4.0 * B * T * (H + 2 * KV) * HeadSize * (method.Contains("Backward") ? 3 : 1.5);
    public override string ToString() => $"{Model} B{B} T{T} H{H}x{HeadSize}";

    public static IEnumerable<AttentionShape> All() =>
    [
        new("tiny", 4, 84, ModelShapes.TinyH, ModelShapes.TinyH, ModelShapes.TinyC / ModelShapes.TinyH),
        new("stories15M", 8, 116, ModelShapes.StoriesH, ModelShapes.StoriesH, ModelShapes.StoriesC / ModelShapes.StoriesH),
    ];
}

/// <summary>RMSNorm over N rows of C channels.</summary>
public sealed record NormShape(string Model, int N, int C) : IWorkCount
{
    public double Flops(string method) => (method.Contains("Backward") ? 6.0 : 4.0) * N * C;
    // Forward reads x and writes out (plus rstd); backward reads dOut and x and writes dX.
    public double Bytes(string method) => 4.0 * ((method.Contains("Backward") ? 3.0 : 2.0) * N * C + N + C);
    public override string ToString() => $"{Model} {N}x{C}";

    public static IEnumerable<NormShape> All() =>
    [
        new("tiny", ModelShapes.TinyN, ModelShapes.TinyC),
        new("stories15M", ModelShapes.StoriesN, ModelShapes.StoriesC),
    ];
}

/// <summary>Fused LM head + softmax + cross-entropy at S of N hidden rows, over the whole vocabulary V (R = 0) or R
/// verbalizer rows.</summary>
public sealed record CrossEntropyShape(string Model, int N, int C, int S, int V, int R) : IWorkCount
{
    int Width => R > 0 ? R : V;
    public double Flops(string method) => 2.0 * S * Width * C;
    public double Bytes(string method) => 4.0 * ((long)Width * C + (long)S * C + (long)S * Width);
    public override string ToString() => R > 0 ? $"{Model} S{S} R{R} C{C}" : $"{Model} S{S} V{V} C{C}";

    public static IEnumerable<CrossEntropyShape> All() =>
    [
        new("tiny", ModelShapes.TinyN, ModelShapes.TinyC, ModelShapes.TinyS, ModelShapes.TinyV, 0),
        new("stories15M", ModelShapes.StoriesN, ModelShapes.StoriesC, ModelShapes.StoriesS, ModelShapes.StoriesV, 2),
        // What the idiomatic step pays at the scored rows if it kept the whole vocabulary there.
        new("stories15M full vocab", ModelShapes.StoriesN, ModelShapes.StoriesC, ModelShapes.StoriesS, ModelShapes.StoriesV, 0),
    ];
}
