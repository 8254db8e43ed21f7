using PromptEngine.Kernels;
using PromptEngine.Tests.Reference;

namespace PromptEngine.Tests.Kernels;

[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class ElementwiseTests(KernelShape shape) : KernelTestBase(shape)
{
    // Pointwise float math on O(1) inputs: a few ulps of exp/tanh and products; 2e-6 + 1e-5·|ref|.
    const double Atol = 2e-6, Rtol = 1e-5;

    [TestCase(5, 23)]
    [TestCase(3, 1)]
    public void SwiGluMatchesReference(int n, int h)
    {
        var random = new Random(21);
        var gate = RandomValues(random, n * h, scale: 4); // reach the sigmoid's tails
        var up = RandomValues(random, n * h);
        var dOut = RandomValues(random, n * h);
        var expectedOut = new double[n * h];
        var expectedDGate = new double[n * h];
        var expectedDUp = new double[n * h];
        SwiGluReference.Forward(expectedOut, gate, up, n, h);
        SwiGluReference.Backward(expectedDGate, expectedDUp, dOut, gate, up, n, h);

        // The kernel takes gate and up as one (N, 2H) tensor, each row its gate values then its up values.
        double[] Rows(double[] left, double[] right) =>
            Enumerable.Range(0, n).SelectMany(row => left.Skip(row * h).Take(h).Concat(right.Skip(row * h).Take(h))).ToArray();
        using var gateUpBuffer = Upload(Rows(gate, up));
        using var dOutBuffer = Upload(dOut);
        using var outBuffer = Poisoned(n * h);
        using var dGateUpBuffer = Poisoned(2 * n * h);
        Kernels.SwiGlu.Forward(outBuffer.View, gateUpBuffer.View, n, h);
        Kernels.SwiGlu.Backward(dGateUpBuffer.View, dOutBuffer.View, gateUpBuffer.View, n, h);
        TensorAssert.Close($"SwiGlu.Forward {Shape}", Download(outBuffer), expectedOut, Atol, Rtol);
        TensorAssert.Close($"SwiGlu.Backward dGate, dUp {Shape}", Download(dGateUpBuffer), Rows(expectedDGate, expectedDUp), Atol, Rtol);
    }

    [Test]
    public void GeluMatchesReference()
    {
        const int count = 97;
        var random = new Random(22);
        var x = RandomValues(random, count, scale: 3);
        var dOut = RandomValues(random, count);
        var expectedOut = new double[count];
        var expectedDx = new double[count];
        GeluReference.Forward(expectedOut, x, count);
        GeluReference.Backward(expectedDx, dOut, x, count);

        using var xBuffer = Upload(x);
        using var dOutBuffer = Upload(dOut);
        using var outBuffer = Poisoned(count);
        using var dXBuffer = Poisoned(count);
        Kernels.Gelu.Forward(outBuffer.View, xBuffer.View, count);
        Kernels.Gelu.Backward(dXBuffer.View, dOutBuffer.View, xBuffer.View, count);
        TensorAssert.Close($"Gelu.Forward {Shape}", Download(outBuffer), expectedOut, Atol, Rtol);
        TensorAssert.Close($"Gelu.Backward {Shape}", Download(dXBuffer), expectedDx, Atol, Rtol);
    }

    [Test]
    public void ResidualMatchesReferenceAndMayAlias()
    {
        const int count = 61;
        var random = new Random(23);
        var a = RandomValues(random, count);
        var b = RandomValues(random, count);
        var expected = new double[count];
        ResidualReference.Forward(expected, a, b, count);

        using var aBuffer = Upload(a);
        using var bBuffer = Upload(b);
        using var outBuffer = Poisoned(count);
        Kernels.Residual.Forward(outBuffer.View, aBuffer.View, bBuffer.View, count);
        TensorAssert.Close($"Residual.Forward {Shape}", Download(outBuffer), expected, 1e-7, 1e-7);
        Kernels.Residual.Forward(aBuffer.View, aBuffer.View, bBuffer.View, count); // in place: a += b
        TensorAssert.Close($"Residual.Forward in place {Shape}", Download(aBuffer), expected, 1e-7, 1e-7);
    }

    [Test]
    public void RopeMatchesReferenceInAndOutOfPlace()
    {
        const int b = 2, t = 3, h = 3, hs = 10;
        const float theta = 10000f;
        int count = b * t * h * hs;
        var random = new Random(24);
        var x = RandomValues(random, count);
        var dOut = RandomValues(random, count);
        int[] positions = [0, 1, 2, 37, 5, 63]; // per (b, t): arbitrary ids, as padding and prompts produce
        var expectedOut = new double[count];
        var expectedDx = new double[count];
        RopeReference.Forward(expectedOut, x, positions, b, t, h, hs, theta);
        RopeReference.Backward(expectedDx, dOut, positions, b, t, h, hs, theta);

        // The kernel rounds the angle pos·inv_freq to float as HF does; at pos ≤ 63 that moves the
        // angle by ≤ 63·ε₃₂ ≈ 4e-6 rad, hence 1e-5 absolute on O(1) values.
        const double ropeAtol = 1e-5;
        using var xBuffer = Upload(x);
        using var dOutBuffer = Upload(dOut);
        using var positionBuffer = Upload(positions);
        using var outBuffer = Poisoned(count);
        using var dXBuffer = Poisoned(count);
        Kernels.Rope.Forward(outBuffer.View, xBuffer.View, positionBuffer.View, b, t, h, hs, theta);
        Kernels.Rope.Backward(dXBuffer.View, dOutBuffer.View, positionBuffer.View, b, t, h, hs, theta);
        TensorAssert.Close($"Rope.Forward {Shape}", Download(outBuffer), expectedOut, ropeAtol, Rtol);
        TensorAssert.Close($"Rope.Backward {Shape}", Download(dXBuffer), expectedDx, ropeAtol, Rtol);

        Kernels.Rope.Forward(xBuffer.View, xBuffer.View, positionBuffer.View, b, t, h, hs, theta);
        TensorAssert.Close($"Rope.Forward in place {Shape}", Download(xBuffer), expectedOut, ropeAtol, Rtol);
    }

    /// <summary>The fused projection's split with RoPE on the way (Llama, GQA: 4 query heads over 2 key/value heads) and
    /// without (GPT-2), forward and backward, against <see cref="QkvSplitReference"/>; the reference's backward is first
    /// checked by finite differences of its forward. The rotation's tolerance is Rope's (1e-5: the angle is rounded to float
    /// as HF rounds it); the copies are exact.</summary>
    [TestCase(true)]
    [TestCase(false)]
    public void QkvSplitMatchesReference(bool rotate)
    {
        const int b = 2, t = 3, heads = 4, kvHeads = 2, hs = 6;
        const float theta = 10000f;
        int n = b * t, qCount = n * heads * hs, kvCount = n * kvHeads * hs, width = (heads + 2 * kvHeads) * hs;
        var random = new Random(rotate ? 31 : 32);
        var qkv = RandomValues(random, n * width);
        var (dq, dk, dv) = (RandomValues(random, qCount), RandomValues(random, kvCount), RandomValues(random, kvCount));
        int[] positions = [0, 1, 2, 37, 5, 63];
        var (q, k, v) = (new double[qCount], new double[kvCount], new double[kvCount]);
        QkvSplitReference.Forward(q, k, v, qkv, positions, b, t, heads, kvHeads, hs, theta, rotate);
        var dQkv = new double[n * width];
        QkvSplitReference.Backward(dQkv, dq, dk, dv, positions, b, t, heads, kvHeads, hs, theta, rotate);

        double[] Outputs(double[] input)
        {
            var (fq, fk, fv) = (new double[qCount], new double[kvCount], new double[kvCount]);
            QkvSplitReference.Forward(fq, fk, fv, input, positions, b, t, heads, kvHeads, hs, theta, rotate);
            return [.. fq, .. fk, .. fv];
        }
        TensorAssert.Close("QkvSplitReference.Backward vs finite differences", dQkv, FiniteDifference.Gradient(Outputs, qkv, [.. dq, .. dk, .. dv]), 1e-8, 1e-6);

        const double ropeAtol = 1e-5;
        using var qkvBuffer = Upload(qkv);
        using var positionBuffer = Upload(positions);
        using var qBuffer = Poisoned(qCount);
        using var kBuffer = Poisoned(kvCount);
        using var vBuffer = Poisoned(kvCount);
        Kernels.Rope.ForwardFromQkv(qBuffer.View, kBuffer.View, vBuffer.View, qkvBuffer.View, positionBuffer.View, b, t, heads, kvHeads, hs, theta, rotate);
        string name = $"{Shape}{(rotate ? "" : " without rotation")}";
        TensorAssert.Close($"Rope.ForwardFromQkv q {name}", Download(qBuffer), q, ropeAtol, Rtol);
        TensorAssert.Close($"Rope.ForwardFromQkv k {name}", Download(kBuffer), k, ropeAtol, Rtol);
        TensorAssert.Close($"Rope.ForwardFromQkv v {name}", Download(vBuffer), v, 0, 0);

        using var dqBuffer = Upload(dq);
        using var dkBuffer = Upload(dk);
        using var dvBuffer = Upload(dv);
        using var dQkvBuffer = Poisoned(n * width);
        Kernels.Rope.BackwardToQkv(dQkvBuffer.View, dqBuffer.View, dkBuffer.View, dvBuffer.View, positionBuffer.View, b, t, heads, kvHeads, hs, theta, rotate);
        TensorAssert.Close($"Rope.BackwardToQkv {name}", Download(dQkvBuffer), dQkv, ropeAtol, Rtol);
    }

    [Test]
    public void RopeRejectsOddHeadSize()
    {
        using var x = Poisoned(2 * 3);
        using var positions = Upload(new[] { 0, 1 });
        var error = Assert.Throws<KernelShapeException>(() => Kernels.Rope.Forward(x.View, x.View, positions.View, 1, 2, 1, 3, 10000f));
        Assert.That(error!.Message, Does.Contain("hs = 3"));
    }
}
