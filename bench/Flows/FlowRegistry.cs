namespace HalfMsg.Bench.Flows;

/// <summary>The flows <c>e2e</c> runs after the concurrency sweep (ceiling, RabbitMQ, broker at each level), in this order.</summary>
public static class FlowRegistry
{
    /// <param name="needSyncBaseline">The sweep did not measure the broker at <see cref="BenchOptions.Producers"/> in flight:
    /// run the plain sync row at that level first (the baseline of the pending and storm rows).</param>
    public static IReadOnlyList<IFlowBench> Create(BenchOptions options, BrokerBenchContext ctx, bool needSyncBaseline)
    {
        // Plug further flows in here. BrokerProcess (Flows/BrokerProcess.cs) starts `dotnet <HalfMsg.Broker.dll> …`
        // on free ports and stops it by pid. Each flow returns a BenchResult (Kind = Flow); the table then shows its
        // ratio to the ceiling and to RabbitMQ measured with the same number in flight (metric "inflight").
        int primary = BrokerBenchContext.PrimaryMessages(options);
        int secondary = BrokerBenchContext.SecondaryMessages(options);
        int pending = options.Quick ? 20_000 : 1_000_000;
        int storm = options.Quick ? 5_000 : 100_000;
        var all = new List<IFlowBench>();
        if (needSyncBaseline)
            all.Add(new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx (flush sync)", Flush = FlushMode.Sync, Messages = primary }));
        all.AddRange(
        [
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx (flush async)", Flush = FlushMode.Async, Messages = primary }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = "broker tx half-load (50% of the sweep's peak, same in-flight)", Messages = secondary, RateFractionOfSweepPeak = 0.5 }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = $"broker tx with {pending:N0} pending halves", Messages = secondary, SeedPending = pending, CompareWithSyncPeak = true }),
            new BrokerTxFlowBench(ctx, new BrokerFlowSpec { Name = $"broker tx during check-back storm ({storm:N0} halves)", Messages = secondary, StormHalves = storm, CompareWithSyncPeak = true }),
            new BrokerAppendPathBench(),
            new BrokerRecoveryBench(),
            new BrokerIdleBench(),
        ]);
        return Filter(all);
    }

    /// <summary>HALFMSG_BENCH_FLOWS=substring[,substring]: run only matching flows (for iterating on one flow). The
    /// sweep's rows match by their names too ("ceiling", "RabbitMQ", "broker tx (flush sync)").</summary>
    public static IReadOnlyList<T> Filter<T>(IReadOnlyList<T> flows) where T : IFlowBench =>
        flows.Where(f => Selected(f.Name)).ToArray();

    /// <summary>True only when HALFMSG_BENCH_FLOWS is set and names this flow: for opt-in rows that a full run leaves out.</summary>
    public static bool SelectedByName(string name)
        => !string.IsNullOrWhiteSpace(Environment.GetEnvironmentVariable("HALFMSG_BENCH_FLOWS")) && Selected(name);

    public static bool Selected(string name)
    {
        string? only = Environment.GetEnvironmentVariable("HALFMSG_BENCH_FLOWS");
        if (string.IsNullOrWhiteSpace(only)) return true;
        var keys = only.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return keys.Any(k => name.Contains(k, StringComparison.OrdinalIgnoreCase));
    }
}
