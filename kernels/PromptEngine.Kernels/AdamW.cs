using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace PromptEngine.Kernels;

/// <summary>
/// AdamW step on the trainable buffer (the soft prompt), PyTorch's formulation with decoupled weight decay:
/// <c>g = grad·scale</c>; <c>θ ← θ·(1 − lr·λ)</c>; <c>m ← β₁m + (1−β₁)g</c>; <c>v ← β₂v + (1−β₂)g²</c>;
/// <c>θ ← θ − (lr/(1−β₁ᵗ)) · m / (√v/√(1−β₂ᵗ) + ε)</c>. Shapes: param, m, v, grad (N) flat; scale (1) on the
/// device (the clipping factor from <see cref="GradNorm"/>) or empty for 1. param, m and v are updated in place.
/// </summary>
/// <remarks>The bias corrections are computed on the host in double for step t and passed as two floats.
/// Elementwise and barrier-free: one kernel for both shapes, contiguous chunks per thread on the CPU.</remarks>
public sealed class AdamW
{
    #region Kernels

    /// <summary>One AdamW update over a chunk of elements.</summary>
    internal static void StepKernel(
        ArrayView<float> param,     // (N)
        ArrayView<float> m,         // (N)
        ArrayView<float> v,         // (N)
        ArrayView<float> grad,      // (N)
        ArrayView<float> gradScale, // (1) or empty
        long count, int chunk,
        float decay,                // 1 − lr·λ
        float beta1, float beta2, float eps,
        float stepSize,             // lr / (1 − β₁ᵗ)
        float sqrtBiasCorrection2)  // √(1 − β₂ᵗ)
    {
        float scale = gradScale.Length > 0 ? gradScale[0] : 1f;
        var run = ThreadRun.Of(count, chunk);
        for (long i = run.Start; i < run.End; i++)
        {
            float g = grad[i] * scale;
            float mi = beta1 * m[i] + (1 - beta1) * g;
            float vi = beta2 * v[i] + (1 - beta2) * g * g;
            m[i] = mi;
            v[i] = vi;
            param[i] = param[i] * decay - stepSize * mi / (XMath.Sqrt(vi) / sqrtBiasCorrection2 + eps);
        }
    }

    #endregion

    #region Launchers

    readonly KernelContext context;
    readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
        long, int, float, float, float, float, float, float> step;

    internal AdamW(KernelContext context)
    {
        this.context = context;
        step = context.Accelerator.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>,
            long, int, float, float, float, float, float, float>(StepKernel);
    }

    /// <summary>One AdamW step, in place.</summary>
    /// <param name="param">Parameters (N), updated.</param>
    /// <param name="m">First moment (N), updated; zero before step 1.</param>
    /// <param name="v">Second moment (N), updated; zero before step 1.</param>
    /// <param name="grad">Gradient (N).</param>
    /// <param name="gradScale">(1) factor the gradient is multiplied by (clipping), or an empty view for none.</param>
    /// <param name="count">Elements N.</param>
    /// <param name="learningRate">lr.</param>
    /// <param name="beta1">β₁, e.g. 0.9.</param>
    /// <param name="beta2">β₂, e.g. 0.999.</param>
    /// <param name="eps">ε added to the bias-corrected √v, e.g. 1e-8.</param>
    /// <param name="weightDecay">Decoupled weight decay λ (PyTorch's default for AdamW is 0.01).</param>
    /// <param name="t">Step number for the bias corrections, 1 on the first step.</param>
    /// <exception cref="KernelShapeException">A tensor's length does not match.</exception>
    /// <exception cref="ArgumentOutOfRangeException">t &lt; 1, or a β outside [0, 1).</exception>
    public void Step(ArrayView<float> param, ArrayView<float> m, ArrayView<float> v, ArrayView<float> grad, ArrayView<float> gradScale,
        long count, float learningRate, float beta1, float beta2, float eps, float weightDecay, int t)
    {
        const string op = "AdamW.Step";
        context.Enter(op);
        if (count <= 0) throw new KernelShapeException($"{op}: count = {count} must be positive.");
        Check.Length(op, "param", param, count, "N");
        Check.Length(op, "m", m, count, "N");
        Check.Length(op, "v", v, count, "N");
        Check.Length(op, "grad", grad, count, "N");
        if (gradScale.Length != 0)
            Check.Length(op, "gradScale", gradScale, 1, "1");
        if (t < 1) throw new ArgumentOutOfRangeException(nameof(t), t, $"{op}: the step number starts at 1.");
        if (beta1 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta1), beta1, $"{op}: β₁ must lie in [0, 1).");
        if (beta2 is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(beta2), beta2, $"{op}: β₂ must lie in [0, 1).");
        double biasCorrection1 = 1 - Math.Pow(beta1, t);
        double biasCorrection2 = 1 - Math.Pow(beta2, t);
        step(context.RunConfig(count, out int chunk), param, m, v, grad, gradScale, count, chunk,
            (float)(1 - (double)learningRate * weightDecay), beta1, beta2, eps,
            (float)(learningRate / biasCorrection1), (float)Math.Sqrt(biasCorrection2));
    }

    #endregion
}
