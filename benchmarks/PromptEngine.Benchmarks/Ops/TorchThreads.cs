using TorchSharp;

namespace PromptEngine.Benchmarks.Ops;

/// <summary>Gives TorchSharp as many intra-op threads as the engine's CPU accelerator has multiprocessors (one per
/// logical core), so both sides of every comparison use the same cores.</summary>
public static class TorchThreads
{
    /// <summary>Sets the thread count (idempotent) and returns it.</summary>
    public static int Ensure()
    {
        if (torch.get_num_threads() != Environment.ProcessorCount) torch.set_num_threads(Environment.ProcessorCount);
        return torch.get_num_threads();
    }
}
