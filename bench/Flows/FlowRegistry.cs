using HalfMsg.Bench.Peers;

namespace HalfMsg.Bench.Flows;

/// <summary>The flows <c>e2e</c> runs after the raw-log ceiling, in this order.</summary>
public static class FlowRegistry
{
    public static IReadOnlyList<IFlowBench> Create(BenchOptions options)
    {
        // Plug further flows in here. BrokerProcess (Flows/BrokerProcess.cs) starts `dotnet <HalfMsg.Broker.dll> …`
        // on free ports and stops it by pid. Each flow returns a BenchResult (Kind = Flow); the table then shows its
        // ratio to the ceiling and to RabbitMQ.
        var ctx = new BrokerBenchContext();
        int primary = BrokerBenchContext.PrimaryMessages(options);
        int secondary = BrokerBenchContext.SecondaryMessages(options);
        int pending = options.Quick ? 20_000 : 1_000_000;
        int storm = options.Quick ? 5_000 : 100_000;
        IFlowBench[] all =
        [
            new RabbitMqFlowBench(),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx (flush sync)", Flush = FlushMode.Sync, Messages = primary }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx (flush async)", Flush = FlushMode.Async, Messages = primary }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx half-load (50% of sync peak)", Messages = secondary, RateFractionOfSyncPeak = 0.5 }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = $"broker tx with {pending:N0} pending halves", Messages = secondary, SeedPending = pending, CompareWithSyncPeak = true }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = $"broker tx during check-back storm ({storm:N0} halves)", Messages = secondary, StormHalves = storm, CompareWithSyncPeak = true }),
            new BrokerAppendPathBench(),
            new BrokerRecoveryBench(),
        ];
        // HALFMSG_BENCH_FLOWS=substring[,substring]: run only matching flows (for iterating on one flow).
        string? only = Environment.GetEnvironmentVariable("HALFMSG_BENCH_FLOWS");
        if (string.IsNullOrWhiteSpace(only)) return all;
        var keys = only.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return all.Where(f => keys.Any(k => f.Name.Contains(k, StringComparison.OrdinalIgnoreCase))).ToArray();
    }
}
