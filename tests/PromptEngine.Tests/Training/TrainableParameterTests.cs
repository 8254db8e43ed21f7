using ILGPU;
using ILGPU.Runtime;
using PromptEngine.Engine;
using PromptEngine.Kernels;
using PromptEngine.Tests.Kernels;
using PromptEngine.Tests.Reference;
using PromptEngine.Training;

namespace PromptEngine.Tests.Training;

/// <summary>The optimizer over <see cref="TrainableParameter"/>s: a group of several tensors steps as AdamW on their
/// concatenation, clipped by the group's global norm (checked against the double reference), groups are clipped each by
/// its own norm at its own learning rate, several buffers measure bitwise as one on the CPU, and a non-finite gradient
/// moves nothing. Every parameter lives in buffers of its own, so nothing can depend on where they lie.</summary>
[TestFixture(KernelShape.Cpu)]
[TestFixture(KernelShape.Gpu)]
public sealed class TrainableParameterTests(KernelShape shape) : KernelTestBase(shape)
{
    // As in AdamWTests: each step moves a value by at most ~lr through a handful of float operations, m and v carry ~1e-7
    // relative error into the quotient; three steps: 1e-6 absolute + 1e-5 relative on values and both moments.
    const double Atol = 1e-6, Rtol = 1e-5;
    const float Beta1 = 0.9f, Beta2 = 0.999f, Eps = 1e-8f, WeightDecay = 0.1f;

    /// <summary>A parameter in four buffers of its own, its values and moments mirrored in double for the reference.</summary>
    sealed class Owned : IDisposable
    {
        readonly MemoryBuffer1D<float, Stride1D.Dense>[] buffers;
        public readonly double[] Values, M, V;
        public readonly TrainableParameter Parameter;
        public readonly MemoryBuffer1D<float, Stride1D.Dense> Gradient;

        public Owned(TrainableParameterTests test, string name, ParameterGroup group, int length, Random random)
        {
            (Values, M, V) = (RandomValues(random, length), new double[length], new double[length]);
            buffers = [test.Upload(Values), test.Upload(new double[length]), test.Upload(M), test.Upload(V)];
            Gradient = buffers[1];
            Parameter = new TrainableParameter(name, group, buffers[0].View, buffers[1].View, buffers[2].View, buffers[3].View);
        }

        public void Dispose()
        {
            foreach (var buffer in buffers) buffer.Dispose();
        }
    }

    readonly List<Owned> owned = [];

    [TearDown]
    public void DisposeParameters()
    {
        owned.Clear();
    }

    /// <summary>Parameters of <paramref name="group"/> named "a (n₀)", "b (n₁)", … with random values, each in its own buffers
    /// (disposed after the test).</summary>
    Owned[] Make(ParameterGroup group, Random random, params int[] lengths)
    {
        var made = lengths.Select((n, i) => new Owned(this, $"{(char)('a' + i)} ({n})", group, n, random)).ToArray();
        owned.AddRange(made);
        return made;
    }

    static IReadOnlyList<TrainableParameter> ParametersOf(IEnumerable<Owned> owned) => [.. owned.Select(p => p.Parameter)];

    /// <summary>Gives each parameter a random gradient (copied to the device) and returns them, in double.</summary>
    static double[][] RandomGradients(IReadOnlyList<Owned> parameters, Random random, double scale) =>
        parameters.Select(p =>
        {
            var gradient = RandomValues(random, p.Values.Length, scale);
            p.Gradient.View.CopyFromCPU(Array.ConvertAll(gradient, g => (float)g));
            return gradient;
        }).ToArray();

    /// <summary>The double reference of one group's step: the gradients ÷ batches, one clipping factor from the norm of their
    /// concatenation, AdamW on each. Returns the norm before clipping.</summary>
    static double ReferenceStep(IReadOnlyList<Owned> parameters, double[][] gradients, int batches, double maxNorm, double learningRate, int t)
    {
        var scaled = gradients.Select(g => g.Select(x => x / batches).ToArray()).ToArray();
        var (sumSquares, clip) = GradNormReference.Forward([.. scaled.SelectMany(g => g)], maxNorm);
        for (var i = 0; i < parameters.Count; i++)
            AdamWReference.Step(parameters[i].Values, parameters[i].M, parameters[i].V, scaled[i], clip, learningRate, Beta1, Beta2, Eps, WeightDecay, t);
        return Math.Sqrt(sumSquares);
    }

    void AssertMatches(string what, IReadOnlyList<Owned> parameters)
    {
        foreach (var p in parameters)
        {
            var (m, v, _) = p.Parameter.GetOptimizerState();
            TensorAssert.Close($"{what} {Shape} {p.Parameter.Name} values", p.Parameter.GetValues(), p.Values, Atol, Rtol);
            TensorAssert.Close($"{what} {Shape} {p.Parameter.Name} m", m, p.M, Atol, Rtol);
            TensorAssert.Close($"{what} {Shape} {p.Parameter.Name} v", v, p.V, Atol, Rtol);
        }
    }

    [Test]
    public void AGroupOfSeveralParametersStepsAsAdamWOnTheirConcatenationClippedByItsGlobalNorm()
    {
        var random = new Random(14);
        // Odd lengths, one shorter than the 64 partitions, one spanning many: partitions straddle the parameters.
        var group = Make(ParameterGroup.Prompt, random, 37, 1000, 5);
        var parameters = ParametersOf(group);
        using var optimizer = new AdamWOptimizer(Kernels);
        const float maxNorm = 0.5f, lr = 1e-2f;
        for (var t = 1; t <= 3; t++)
        {
            var gradients = RandomGradients(group, random, 1);
            var expectedNorm = ReferenceStep(group, gradients, 2, maxNorm, lr, t);
            var norm = optimizer.Step(parameters, new AdamWSettings(lr, Beta1, Beta2, Eps, WeightDecay, maxNorm), accumulatedBatches: 2);
            // √ of a Σ of N = 1042 float squares: ~N·ε₃₂ relative at worst.
            TensorAssert.Close($"group norm {Shape} t{t}", [norm], [expectedNorm], 0, 1e-7 * 1042 + 1e-6);
            Assert.That(expectedNorm, Is.GreaterThan(10 * maxNorm), "the test meant to exercise clipping");
        }
        AssertMatches("group step", group);
        Assert.That(parameters.Select(p => p.Step), Is.All.EqualTo(3));
    }

    [Test]
    public void EachGroupIsClippedByItsOwnNormAtItsOwnLearningRate()
    {
        var random = new Random(15);
        var prompt = Make(ParameterGroup.Prompt, random, 77, 130);
        var head = Make(ParameterGroup.Head, random, 22, 2);
        // The head's gradient is 100× smaller: clipped together with the prompt's it would barely move; clipped on its own it is not clipped at all.
        var all = ParametersOf(prompt.Concat(head));
        using var optimizer = new AdamWOptimizer(Kernels);
        const float maxNorm = 1f, promptLr = 1e-2f, headLr = 3e-2f;
        for (var t = 1; t <= 3; t++)
        {
            var promptGradients = RandomGradients(prompt, random, 1);
            var headGradients = RandomGradients(head, random, 0.01);
            var expectedPromptNorm = ReferenceStep(prompt, promptGradients, 1, maxNorm, promptLr, t);
            var expectedHeadNorm = ReferenceStep(head, headGradients, 1, maxNorm, headLr, t);
            var norms = optimizer.Step(all, group => new AdamWSettings(group == ParameterGroup.Head ? headLr : promptLr, Beta1, Beta2, Eps, WeightDecay, maxNorm));
            Assert.That(norms.Keys, Is.EquivalentTo(new[] { ParameterGroup.Prompt, ParameterGroup.Head }));
            TensorAssert.Close($"prompt norm {Shape} t{t}", [norms[ParameterGroup.Prompt]], [expectedPromptNorm], 0, 1e-7 * 207 + 1e-6);
            TensorAssert.Close($"head norm {Shape} t{t}", [norms[ParameterGroup.Head]], [expectedHeadNorm], 0, 1e-7 * 24 + 1e-6);
            Assert.That(expectedPromptNorm, Is.GreaterThan(maxNorm), "the prompt is clipped");
            Assert.That(expectedHeadNorm, Is.LessThan(maxNorm), "the head is not");
        }
        AssertMatches("prompt group", prompt);
        AssertMatches("head group", head);
    }

    /// <summary>On the CPU shape bitwise: what keeps a prompt with its deep prefix, or an MLP of five tensors, on exactly the
    /// numbers it had as one buffer. The GPU shape reduces each buffer's part of a partition in its group and then adds the
    /// parts: equal to float rounding (1e-6 relative on the norm, the step's usual tolerance on values and moments).</summary>
    [Test]
    public void SeveralBuffersStepAsOneBufferOfTheirConcatenation()
    {
        var random = new Random(16);
        var split = Make(ParameterGroup.Prompt, random, 100, 3001);
        var joined = Make(ParameterGroup.Prompt, new Random(0), 3101)[0];
        joined.Parameter.SetValues([.. split.SelectMany(p => p.Values).Select(x => (float)x)]);
        using var optimizer = new AdamWOptimizer(Kernels);
        var settings = new AdamWSettings(1e-2f, Beta1, Beta2, Eps, WeightDecay, MaxGradNorm: 0.5f);
        bool bitwise = Shape == KernelShape.Cpu;
        for (var t = 1; t <= 3; t++)
        {
            var gradients = RandomGradients(split, random, 1);
            joined.Gradient.View.CopyFromCPU([.. gradients.SelectMany(g => g).Select(x => (float)x)]);
            var splitNorm = optimizer.Step(ParametersOf(split), settings, accumulatedBatches: 3);
            var joinedNorm = optimizer.Step([joined.Parameter], settings, accumulatedBatches: 3);
            if (bitwise) Assert.That(BitConverter.SingleToInt32Bits(splitNorm), Is.EqualTo(BitConverter.SingleToInt32Bits(joinedNorm)), $"norm at step {t}");
            else TensorAssert.Close($"norm {Shape} t{t}", [splitNorm], [joinedNorm], 0, 1e-6);
        }
        var splitParameters = ParametersOf(split);
        var actual = new[] { splitParameters.GetValues(), splitParameters.GetOptimizerState().M, splitParameters.GetOptimizerState().V };
        var (joinedM, joinedV, _) = joined.Parameter.GetOptimizerState();
        var expected = new[] { joined.Parameter.GetValues(), joinedM, joinedV };
        for (var i = 0; i < 3; i++)
        {
            if (bitwise) Assert.That(Array.ConvertAll(actual[i], BitConverter.SingleToInt32Bits), Is.EqualTo(Array.ConvertAll(expected[i], BitConverter.SingleToInt32Bits)), $"values, m, v [{i}]");
            else TensorAssert.Close($"values, m, v [{i}] {Shape}", actual[i], Array.ConvertAll(expected[i], x => (double)x), Atol, Rtol);
        }
    }

    [Test]
    public void ANonFiniteGradientMovesNoParameterOfTheGroup()
    {
        var random = new Random(17);
        var group = Make(ParameterGroup.Prompt, random, 40, 9);
        var parameters = ParametersOf(group);
        using var optimizer = new AdamWOptimizer(Kernels);
        RandomGradients(group, random, 1);
        group[1].Gradient.View.SubView(8, 1).CopyFromCPU([float.PositiveInfinity]);
        var before = parameters.GetValues();
        var e = Assert.Throws<NonFiniteGradientException>(() => optimizer.Step(parameters, new AdamWSettings(1e-2f, MaxGradNorm: 1f)))!;
        Assert.That(e.Message, Does.Contain("a (40) and b (9)").And.Contain("not finite").And.Contain("step 1"));
        Assert.That(parameters.GetValues(), Is.EqualTo(before), "values untouched");
        var (m, v, step) = parameters.GetOptimizerState();
        Assert.That((m.All(x => x == 0), v.All(x => x == 0), step), Is.EqualTo((true, true, 0)), "optimizer state untouched");
    }

    [Test]
    public void ValuesAndOptimizerStateRoundTripThroughTheListLayout()
    {
        var random = new Random(18);
        var group = Make(ParameterGroup.Prompt, random, 3, 4);
        var parameters = ParametersOf(group);
        float[] values = [1, 2, 3, 4, 5, 6, 7], m = [.1f, .2f, .3f, .4f, .5f, .6f, .7f], v = [1, 1, 2, 2, 3, 3, 4];
        parameters.SetValues(values);
        parameters.SetOptimizerState(m, v, 5);
        Assert.That(group[1].Parameter.GetValues(), Is.EqualTo(new float[] { 4, 5, 6, 7 }), "the second parameter holds the tail");
        Assert.That(parameters.GetOptimizerState(), Is.EqualTo((m, v, 5)));
        group[0].Parameter.SetValues([9, 9, 9]);
        var (m0, _, step0) = group[0].Parameter.GetOptimizerState();
        Assert.That((m0, step0), Is.EqualTo((new float[3], 0)), "setting values starts the optimizer over");
        Assert.That(Assert.Throws<ArgumentException>(() => parameters.SetValues(new float[6]))!.Message, Does.Contain("a (3) and b (4)").And.Contain("hold 7"));
    }
}
