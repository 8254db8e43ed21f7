using PromptEngine.Kernels;

namespace PromptEngine.Oracle.Tests;

/// <summary>One CPU kernel context for the whole assembly: ILGPU compiles each kernel once per context, and the
/// compilation, not the arithmetic, dominates the tiny-model comparisons.</summary>
[SetUpFixture]
public class OracleKernels
{
    static readonly Lazy<KernelContext> Shared = new(() => KernelContext.Create(KernelBackend.Cpu));

    /// <summary>The shared CPU-accelerator context (CPU-shaped kernels).</summary>
    public static KernelContext Context => Shared.Value;

    [OneTimeTearDown]
    public void DisposeContext()
    {
        if (Shared.IsValueCreated) Shared.Value.Dispose();
    }
}
