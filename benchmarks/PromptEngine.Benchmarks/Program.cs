using BenchmarkDotNet.Running;

namespace PromptEngine.Benchmarks;

/// <summary>BenchmarkDotNet entry point: <c>dotnet run -c Release --project benchmarks/PromptEngine.Benchmarks -- --filter *</c>.</summary>
public static class Program
{
    public static void Main(string[] args) => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
}
