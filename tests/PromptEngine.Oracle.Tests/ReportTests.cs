using PromptEngine.Benchmarks.Reporting;
using PromptEngine.Benchmarks.Workloads;

namespace PromptEngine.Oracle.Tests;

/// <summary>The benchmark report's FLOP count and efficiency table (benchmarks/PromptEngine.Benchmarks/Reporting), checked
/// without timing anything.</summary>
public class ReportTests
{
    /// <summary>The tiny workload (2 layers, C 128, 4 heads of 32, SwiGLU 344, vocabulary 1000; B4 × T84 = 20 prompt rows
    /// + 64 tokens; LM loss at the 63 text positions that have a next token, S = 252 of N = 336), counted by hand:
    /// <list type="bullet">
    /// <item>Linear, first layer, all 336 rows: q, k, v, o 4 · 2·336·128·128 = 44,040,192; gate, up, down
    /// 3 · 2·336·128·344 = 88,768,512; together 132,808,704.</item>
    /// <item>Linear, last layer: q, k, v at 336 rows 3 · 11,010,048 = 33,030,144; o at the 252 scored rows
    /// 2·252·128·128 = 8,257,536; the MLP at 252 rows 3 · 2·252·128·344 = 66,576,384; together 107,864,064.</item>
    /// <item>Linear forward 240,672,768; the input gradients the same again.</item>
    /// <item>Attention: 4 rows · 84·85/2 = 14,280 causal pairs; QKᵀ and P·V 2 · 2·14,280·32·4 = 7,311,360 per layer,
    /// 14,622,720 for both; the backward twice that, 29,245,440.</item>
    /// <item>Head: 2·252·128·1000 = 64,512,000 forward, as much again backward.</item>
    /// </list>
    /// Train step 240,672,768·2 + 14,622,720 + 29,245,440 + 64,512,000·2 = 654,237,696; forward
    /// 240,672,768 + 14,622,720 + 64,512,000 = 319,807,488.</summary>
    [Test]
    public void TinyWorkloadFlopsMatchTheHandCount()
    {
        using var workload = Workload.Tiny();
        using var model = PromptEngine.Models.ModelFolder.Open(workload.ModelFolder);
        Assert.That((workload.Batch.Rows, workload.Batch.Length, workload.Batch.LossPositions.Length), Is.EqualTo((4, 84, 252)), "the shape counted by hand");

        var train = StepFlops.Count(model.Config, workload.Batch, training: true);
        Assert.That(train.LinearForward, Is.EqualTo(240_672_768d));
        Assert.That(train.LinearBackward, Is.EqualTo(240_672_768d));
        Assert.That(train.AttentionForward, Is.EqualTo(14_622_720d));
        Assert.That(train.AttentionBackward, Is.EqualTo(29_245_440d));
        Assert.That(train.Head, Is.EqualTo(129_024_000d));
        Assert.That(train.Total, Is.EqualTo(654_237_696d));

        var forward = StepFlops.Count(model.Config, workload.Batch, training: false);
        Assert.That(forward.Total, Is.EqualTo(319_807_488d));
        Assert.That((forward.LinearBackward, forward.AttentionBackward), Is.EqualTo((0d, 0d)));

        // Without the scored-rows shortcut the last layer's o and MLP run at all 336 rows: 84 more rows of
        // 2·128·128 + 3·2·128·344 = 296,960 FLOP each, forward and backward.
        var everyRow = StepFlops.Count(model.Config, workload.Batch, training: true, scoredRowsOnly: false);
        Assert.That(everyRow.Linear - train.Linear, Is.EqualTo(2 * 84 * 296_960d));
    }

    [Test]
    public void EfficiencyTableRendersEveryColumn()
    {
        var flops = new StepFlops(LinearForward: 1e9, LinearBackward: 1e9, AttentionForward: 0.25e9, AttentionBackward: 0.5e9, Head: 0.25e9);
        var rows = new[]
        {
            new EfficiencyRow("stories15M", "train", flops, EngineMilliseconds: 1000, LinearSeconds: 0.4, LaunchesPerStep: 120),
            new EfficiencyRow("tiny", "forward", flops with { LinearBackward = 0, AttentionBackward = 0 }, EngineMilliseconds: 500, LinearSeconds: null, LaunchesPerStep: 35),
        };
        var lines = EfficiencyTable.Render(rows, peakGigaFlops: 12, launchMicroseconds: 50).Split('\n');

        Assert.That(lines[0], Does.Contain("step % of scalar peak").And.Contain("Linear % of scalar peak").And.Contain("launches per step"));
        // 3 GFLOP in 1 s = 3 GFLOP/s = 25 % of 12; Linear 2 GFLOP in 0.4 s = 5 GFLOP/s = 42 %; 120 launches × 50 µs = 6 ms.
        Assert.That(lines[2], Is.EqualTo("| stories15M | train | 3.000 (2.000 + 0.750 + 0.250) | 1000.0 | 3.00 | 25 % | 5.00 | 42 % | 120 | 6.0 |"));
        // 1.5 GFLOP in 0.5 s; no profile, so no Linear rate.
        Assert.That(lines[3], Is.EqualTo("| tiny | forward | 1.500 (1.000 + 0.250 + 0.250) | 500.0 | 3.00 | 25 % | - | - | 35 | 1.8 |"));
        Assert.That(string.Join('\n', lines), Does.Contain("Peak: 12.00 GFLOP/s"));
    }

    [Test]
    public void FmaChainsStayFiniteAndNormal()
    {
        // The peak loop's chains converge toward a / (1 − m) ≈ 0.84 each (16 of them): no overflow or denormal slows the measurement.
        var sum = ScalarPeak.FmaChains(10_000_000);
        Assert.That(float.IsNormal(sum) && sum > 1 && sum < 16 * 1.01f, $"sum of the chains {sum}");
    }
}
