using PromptEngine.Training.Schedules;

namespace PromptEngine.Tests.Training;

public class LearningRateScheduleTests
{
    [Test]
    public void LinearWarmupThenDecayToZero()
    {
        var s = new LinearDecaySchedule(1e-3, WarmupSteps: 10);
        // step: value, for a run of 110 steps (100 of decay).
        (long Step, double Lr)[] expected = [(0, 0), (1, 1e-4), (5, 5e-4), (9, 9e-4), (10, 1e-3), (35, 7.5e-4), (60, 5e-4), (109, 1e-5), (110, 0), (500, 0)];
        foreach (var (step, lr) in expected) Assert.That(s.At(step, 110), Is.EqualTo(lr).Within(1e-18), $"step {step}");
        Assert.That(new LinearDecaySchedule(2.0).At(0, 4), Is.EqualTo(2.0), "no warm-up: the first step is at the peak");
        Assert.That(new LinearDecaySchedule(2.0).At(3, 4), Is.EqualTo(0.5));
    }

    [Test]
    public void CosineWarmupThenDecayToTheMinRatio()
    {
        var s = new CosineDecaySchedule(1.0, WarmupSteps: 10, MinRatio: 0.1);
        Assert.That(s.At(0, 110), Is.EqualTo(0));
        Assert.That(s.At(4, 110), Is.EqualTo(0.4).Within(1e-15));
        Assert.That(s.At(10, 110), Is.EqualTo(1.0).Within(1e-15));
        // A quarter of the way: 0.1 + 0.9 · (1 + cos(π/4)) / 2.
        Assert.That(s.At(35, 110), Is.EqualTo(0.1 + 0.9 * (1 + Math.Sqrt(0.5)) / 2).Within(1e-15));
        Assert.That(s.At(60, 110), Is.EqualTo(0.55).Within(1e-15));
        Assert.That(s.At(85, 110), Is.EqualTo(0.1 + 0.9 * (1 - Math.Sqrt(0.5)) / 2).Within(1e-15));
        Assert.That(s.At(110, 110), Is.EqualTo(0.1).Within(1e-15));
        Assert.That(s.At(1000, 110), Is.EqualTo(0.1).Within(1e-15), "past the end it stays at the minimum");
        Assert.That(new CosineDecaySchedule(3.0, 0).At(50, 100), Is.EqualTo(1.5).Within(1e-15));
        Assert.That(new CosineDecaySchedule(3.0, 0).At(100, 100), Is.EqualTo(0).Within(1e-15));
    }

    [Test]
    public void MatchesTheTransformersLambdasAtEveryStep()
    {
        // transformers' lr_lambda for each schedule, written out independently; the rate is peak · lambda.
        static double Warmup(long step, long warmup) => (double)step / Math.Max(1, warmup);
        static double Progress(long step, long warmup, long total) => (double)(step - warmup) / Math.Max(1, total - warmup);
        const long total = 37, warmup = 5;
        const double peak = 3e-2, min = 0.25;
        for (long step = 0; step < total; step++)
        {
            var linear = step < warmup ? Warmup(step, warmup) : Math.Max(0, (double)(total - step) / Math.Max(1, total - warmup));
            var cosine = step < warmup ? Warmup(step, warmup) : Math.Max(0, 0.5 * (1 + Math.Cos(Math.PI * 0.5 * 2 * Progress(step, warmup, total))) * (1 - min) + min);
            var constant = step < warmup ? Warmup(step, warmup) : 1;
            Assert.That(new LinearDecaySchedule(peak, warmup).At(step, total), Is.EqualTo(peak * linear).Within(1e-15), $"linear {step}");
            Assert.That(new CosineDecaySchedule(peak, warmup, min).At(step, total), Is.EqualTo(peak * cosine).Within(1e-15), $"cosine {step}");
            Assert.That(new ConstantSchedule(peak, warmup).At(step, total), Is.EqualTo(peak * constant).Within(1e-15), $"constant {step}");
        }
    }

    [Test]
    public void ConstantAndNamedSchedules()
    {
        Assert.That(new ConstantSchedule(2e-4).At(0, 10), Is.EqualTo(2e-4));
        Assert.That(new ConstantSchedule(2e-4).At(99, 10), Is.EqualTo(2e-4));
        Assert.That(new ConstantSchedule(2e-4, 4).At(2, 10), Is.EqualTo(1e-4));
        Assert.That(LearningRateSchedule.Create("Cosine", 1e-3, 10, 0.1), Is.EqualTo(new CosineDecaySchedule(1e-3, 10, 0.1)));
        Assert.That(LearningRateSchedule.Create("linear", 1e-3, 10), Is.EqualTo(new LinearDecaySchedule(1e-3, 10)));
        Assert.That(LearningRateSchedule.Create("constant", 1e-3), Is.EqualTo(new ConstantSchedule(1e-3)));
        Assert.That(Assert.Throws<ArgumentException>(() => LearningRateSchedule.Create("step", 1e-3))!.Message, Does.Contain("constant, linear and cosine"));
        Assert.Throws<ArgumentException>(() => LearningRateSchedule.Create("linear", 1e-3, 0, 0.1));
    }

    [Test]
    public void BadArgumentsAreRejected()
    {
        var s = new LinearDecaySchedule(1e-3, 10);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(-1, 100));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(0, 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(0, 5), "warm-up longer than the run");
        Assert.Throws<ArgumentOutOfRangeException>(() => new LinearDecaySchedule(double.NaN).At(0, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new LinearDecaySchedule(-1).At(0, 5));
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineDecaySchedule(1, 2, 1.5).At(0, 5), "checked during warm-up too");
    }

    [Test]
    public void TrainerStepTIsUpdateTMinusOneSoTheLastStepStillTrains()
    {
        // transformers' LambdaLR gives update k (0-based) the value at k; the trainer counts steps from 1.
        var cosine = new CosineDecaySchedule(1.0).PerTrainerStep(4);
        double[] expected = [1.0, (1 + Math.Cos(Math.PI / 4)) / 2, 0.5, (1 + Math.Cos(3 * Math.PI / 4)) / 2];
        for (var t = 1; t <= 4; t++) Assert.That(cosine(t), Is.EqualTo((float)expected[t - 1]), $"step {t}");
        Assert.That(new LinearDecaySchedule(2.0).PerTrainerStep(4)(4), Is.EqualTo(0.5f), "the last of 4 linear steps");
        Assert.That(new CosineDecaySchedule(3.0).PerTrainerStep(1)(1), Is.EqualTo(3f), "a one-step run trains at the peak");
        var warm = new LinearDecaySchedule(1.0, WarmupSteps: 2).PerTrainerStep(6);
        Assert.That(new[] { warm(1), warm(2), warm(3), warm(6) }, Is.EqualTo(new[] { 0f, 0.5f, 1f, 0.25f }), "warm-up from 0, as transformers");
        Assert.Throws<ArgumentOutOfRangeException>(() => new CosineDecaySchedule(1.0, WarmupSteps: 5).PerTrainerStep(4));
    }
}

