namespace PromptEngine.Cli.Commands;

/// <summary>Seams for in-process tests of the host: a test can stop a training run at a moment of its choosing, as Ctrl-C
/// or SIGTERM would, without sending signals to the test process.</summary>
internal static class TestHooks
{
    /// <summary>Called with the run's cancellation source once training is about to start.</summary>
    public static Action<CancellationTokenSource>? RunStarted { get; set; }
}
