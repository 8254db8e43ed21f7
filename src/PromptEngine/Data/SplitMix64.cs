namespace PromptEngine.Data;

/// <summary>
/// Vigna's SplitMix64: a tiny generator whose whole definition is the three lines of <see cref="Next"/>,
/// so a data split made from a seed is the same on every runtime and in any language that reimplements
/// it. System.Random(seed) is stable in practice (.NET keeps the legacy seeded algorithm for
/// compatibility) but its documentation does not promise that across versions; this does not depend on it.
/// </summary>
internal sealed class SplitMix64(ulong seed)
{
    ulong state = seed;

    /// <summary>The next 64 random bits.</summary>
    public ulong Next()
    {
        var z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>A uniform integer in [0, <paramref name="bound"/>), without modulo bias: draws below
    /// 2^64 mod bound are rejected so every residue has the same number of preimages.</summary>
    public int NextBelow(int bound)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(bound);
        var n = (ulong)bound;
        var threshold = (0UL - n) % n;
        ulong r;
        do r = Next(); while (r < threshold);
        return (int)(r % n);
    }

    /// <summary>Fisher–Yates, from the last element down.</summary>
    public void Shuffle<T>(IList<T> items)
    {
        for (var i = items.Count - 1; i > 0; i--)
        {
            var j = NextBelow(i + 1);
            (items[i], items[j]) = (items[j], items[i]);
        }
    }
}
