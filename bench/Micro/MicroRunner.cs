using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace HalfMsg.Bench.Micro;

/// <summary>
/// <c>micro</c>: BenchmarkDotNet over every [Benchmark] class in this assembly (add classes under Micro/).
/// Arguments not known to the bench go to BenchmarkDotNet (e.g. <c>--filter *FasterLog*</c>); without a filter all
/// run. <c>--quick</c> uses a short in-process job.
/// </summary>
public static class MicroRunner
{
    public static int Run(BenchOptions o)
    {
        var args = o.Rest.ToList();
        if (!args.Any(a => a is "--filter" or "-f" or "--list" or "--info")) args.AddRange(["--filter", "*"]);

        string artifacts = Path.Combine(Path.GetFullPath(o.OutDir), "micro");
        // In-process: BenchmarkDotNet 0.14 does not know net10.0 as a separate-process toolchain target.
        var job = (o.Quick ? Job.ShortRun.WithWarmupCount(2).WithIterationCount(5) : Job.Default)
            .WithToolchain(InProcessEmitToolchain.Instance);
        var config = ManualConfig.Create(DefaultConfig.Instance)
            .AddJob(job)
            .WithArtifactsPath(artifacts)
            .WithOptions(ConfigOptions.JoinSummary | ConfigOptions.DisableLogFile);

        var summaries = BenchmarkSwitcher.FromAssembly(typeof(MicroRunner).Assembly).Run(args.ToArray(), config);
        return summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success)) ? 1 : 0;
    }
}
