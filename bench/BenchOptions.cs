namespace HalfMsg.Bench;

public enum FlushMode { Sync, Async }

/// <summary>Command-line options shared by every e2e piece (ceiling, peers, broker flows).</summary>
public sealed record BenchOptions
{
    public string Verb { get; init; } = "e2e";
    public bool Quick { get; init; }
    /// <summary>True when --messages was given (the sweep then uses it at every level).</summary>
    public bool MessagesGiven { get; init; }
    /// <summary>Messages (transactions) per flow; fixed count, not fixed time.</summary>
    public int Messages { get; init; } = 200_000;
    public int Producers { get; init; } = 8;
    public int Consumers { get; init; } = 4;
    /// <summary>ProducerClient instances the broker rows share out among their producers (each instance is one HTTP/2
    /// connection): 1 by default, as a service holds one producer and as the RabbitMQ row's publishers share one
    /// connection; 0 = one instance (and connection) per producer, as the bench did before.</summary>
    public int ProducerInstances { get; init; } = 1;
    /// <summary>AckMessage calls a gRPC broker row's consumer keeps in flight while it receives the next batches: an ack
    /// waits for a group commit, and a consumer that waits for its acks before receiving again delays deliveries by a
    /// commit. 4 by default (the RabbitMQ row's consumers ack without waiting at all); 1 = the bench before.</summary>
    public int AcksInFlight { get; init; } = 4;
    /// <summary>ReceiveMessage calls each gRPC broker row consumer keeps outstanding (one receive loop each).</summary>
    public int ReceivesInFlight { get; init; } = 1;
    /// <summary>The broker rows' producers' <c>ProducerOptions.HalfSendCallsInFlight</c>: concurrent half sends beyond
    /// this many calls per producer wait and go several to a call. The client's default (4); 0 = one call per half.</summary>
    public int HalfSendCalls { get; init; } = new HalfMsg.ProducerClient.ProducerOptions().HalfSendCallsInFlight;
    /// <summary>The broker rows' producers' <c>ProducerOptions.DecisionCallsInFlight</c>: concurrent decisions beyond
    /// this many calls per producer wait and go several to an EndTransactions call. The client's default (4); 0 = one
    /// EndTransaction per decision.</summary>
    public int DecisionCalls { get; init; } = new HalfMsg.ProducerClient.ProducerOptions().DecisionCallsInFlight;
    public int BodySize { get; init; } = 1024;
    public FlushMode Flush { get; init; } = FlushMode.Sync;
    /// <summary>Seconds each row with a server process of its own (broker, Remoting broker, gRPC floor, RabbitMQ) runs
    /// its flow unmeasured before it measures: a fresh .NET process compiles for its first 15-25 s under load
    /// (Infrastructure/WarmUp.cs). Default 30; 1 with <c>--quick</c>; 0 = only the count-based minimum.</summary>
    public double WarmupSeconds { get; init; } = 30;
    /// <summary>Transactions in flight per level of the concurrency sweep (each level runs the ceiling, RabbitMQ and the
    /// broker with that many writers / publishers / producers). Default 8, 64, 256; <c>--quick</c>: 8.</summary>
    public IReadOnlyList<int> InFlight { get; init; } = [8, 64, 256];
    /// <summary>The broker's decision durability: <c>sync</c> (the reply to a commit/rollback waits for its fsync; the
    /// only mode today) or another mode the broker accepts as <c>--decision-durability MODE</c> (passed through).</summary>
    public string DecisionDurability { get; init; } = "sync";
    /// <summary>Existing RabbitMQ to use instead of starting a throwaway one.</summary>
    public string? RabbitMqUri { get; init; }
    public bool SkipRabbitMq { get; init; }
    public string OutDir { get; init; } = Path.Combine("bench", "results");
    /// <summary>Upper bound for one flow; a flow that runs out reports what it measured plus a note.</summary>
    public TimeSpan FlowTimeout { get; init; } = TimeSpan.FromMinutes(10);
    /// <summary>Arguments not understood here (passed on to BenchmarkDotNet by <c>micro</c>).</summary>
    public IReadOnlyList<string> Rest { get; init; } = [];

    public const string Usage = """
        usage: HalfMsg.Bench <e2e|micro|all|chart|runs|diag-commit-starvation|diag-lock-stall> [options]
          e2e     concurrency sweep (raw FasterLog ceiling, RabbitMQ peer, broker over gRPC and over Remoting at each
                  --inflight level; table and chart), then the other broker flows (Flows/FlowRegistry.cs);
                  HALFMSG_BENCH_FLOWS=remoting runs only the ceiling and the Remoting rows;
                  HALFMSG_BENCH_WARMUP=N: at least N warm-up transactions before each gRPC broker row (default: 2%
                  of the row, 10-200 per producer), on top of --warmup's time;
                  HALFMSG_BENCH_HALF_LOAD_TXS=R paces the half-load row at R tx/s instead of half the sweep's peak;
                  HALFMSG_BENCH_REMOTING_PULL_BATCH=N: the Remoting rows' consumers ask for N messages per pull
                  (default 32, the Java push consumer's pullBatchSize);
                  HALFMSG_BROKER_ENV_<NAME>=<value> sets <NAME> in the broker process only
          micro   BenchmarkDotNet micro benchmarks (other args go to BenchmarkDotNet, e.g. --filter '*Faster*')
          all     e2e, then micro
          diag-commit-starvation [--writers 256] [--hops 3] [--work-us 50] [--seconds 10]
                  raw log with and without thread-pool work before each append: commits/s, hop delay
          diag-lock-stall [--messages 400000]
                  how long a sweep, a check pass, admin pages and a /metrics scrape with that much due or pending
                  hold up a writer's sends (an engine of its own, fake clock)
          chart   redraw the sweep chart and Markdown of existing results: chart bench/results/<stamp>-e2e.json
          runs    issue 10's ratios at 64 and 256 in flight across full runs, as a table and a chart next to the list:
                  runs bench/results/full-runs.tsv (lines: results JSON, commit, note; tab-separated)
          index-memory
                  bytes the message index keeps per message when full (200,000 transactions' hooks)
        options:
          --quick               small run (20k messages, short BenchmarkDotNet job); e2e well under 2 minutes
          --messages N          messages/transactions per flow (default 200000; 20000 with --quick); the sweep uses
                                N at every level when given, else 500 per in-flight transaction (20k..200k)
          --inflight L[,L...]   concurrency sweep: transactions in flight per level (default 8,64,256; 8 with --quick);
                                at each level the raw-log ceiling, RabbitMQ and the broker (gRPC, then Remoting) run
                                with that many writers / publishers / producers (one outstanding each), same message count
          --producers P         producers for the rows outside the sweep (flush async, pending, storm; default 8;
                                the half-load row runs at the sweep's peak level)
          --consumers C         concurrent consumers (default 4)
          --warmup S            seconds each server row (broker over gRPC and Remoting, gRPC floor, RabbitMQ) runs its
                                whole flow unmeasured first (default 30; 1 with --quick; 0 = a few hundred transactions
                                only): a fresh broker keeps compiling for 15-25 s under load and settles after 25-30 s
          --producer-instances N|each
                                ProducerClient instances (one HTTP/2 connection each) shared by a gRPC broker row's
                                producers (default 1, like a service and like the RabbitMQ row's one publisher
                                connection; 'each' = one per producer)
          --acks-in-flight N    AckMessage calls each receive loop of a gRPC broker row consumer keeps in flight
                                while receiving on (default 4; 1 = wait for the previous batch's ack before the next receive;
                                0 = wait for each batch's own ack before the next receive, as the raw-stub consumers do)
          --receives-in-flight N
                                ReceiveMessage calls each gRPC broker row consumer keeps outstanding, one receive loop
                                each (default 1: receive again once the previous batch arrived)
          --half-send-calls N   SendMessage calls each producer of a gRPC broker row keeps in flight for its halves;
                                halves sent while all are out go several to the next call (the client's default 4;
                                0 = one call per half, as the official clients)
          --decision-calls N    EndTransactions calls each producer of a gRPC broker row keeps in flight for its
                                decisions; decisions made while all are out go several to the next call (the client's
                                default 4; 0 = one EndTransaction per decision, as the official clients)
          --body-size BYTES     message body size (default 1024)
          --flush sync|async    durability mode for the ceiling and the broker flows (default sync)
          --decision-durability MODE  broker decision durability, recorded with every broker row (default sync;
                                any other value is passed to the broker as --decision-durability MODE)
          --rabbitmq URI        use an existing RabbitMQ (amqp://user:pass@127.0.0.1:5672/) instead of starting one
          --no-rabbitmq         skip the RabbitMQ peer
          --timeout SECONDS     upper bound per flow (default 600; 90 with --quick)
          --out DIR             results directory (default bench/results)
        """;

    public static BenchOptions Parse(string[] args)
    {
        var o = new BenchOptions();
        var rest = new List<string>();
        int? messages = null, timeoutS = null;
        double? warmupS = null;
        IReadOnlyList<int>? inflight = null;
        int i = 0;
        if (args.Length > 0 && !args[0].StartsWith('-')) { o = o with { Verb = args[0].ToLowerInvariant() }; i = 1; }
        for (; i < args.Length; i++)
        {
            string a = args[i];
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{a} needs a value");
            int NextInt() => int.TryParse(Next(), out int v) && v > 0 ? v : throw new ArgumentException($"{a} needs a positive integer");
            int NextCount() => int.TryParse(Next(), out int v) && v >= 0 ? v : throw new ArgumentException($"{a} needs 0 or a positive integer");
            switch (a)
            {
                case "--help": case "-h": o = o with { Verb = "help" }; break;
                case "--quick": o = o with { Quick = true }; break;
                case "--messages": case "-n": messages = NextInt(); break;
                case "--producers": case "-p": o = o with { Producers = NextInt() }; break;
                case "--consumers": case "-c": o = o with { Consumers = NextInt() }; break;
                case "--warmup":
                    string ws = Next();
                    warmupS = double.TryParse(ws, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double w) && w >= 0 && w <= 3600
                        ? w : throw new ArgumentException($"--warmup takes seconds from 0 to 3600, not '{ws}'");
                    break;
                case "--producer-instances":
                    string pi = Next();
                    o = o with
                    {
                        ProducerInstances = pi.Equals("each", StringComparison.OrdinalIgnoreCase) ? 0
                            : int.TryParse(pi, out int piN) && piN > 0 ? piN
                            : throw new ArgumentException($"--producer-instances takes a positive integer or 'each', not '{pi}'"),
                    };
                    break;
                case "--acks-in-flight": o = o with { AcksInFlight = NextCount() }; break;
                case "--receives-in-flight": o = o with { ReceivesInFlight = NextInt() }; break;
                case "--half-send-calls": o = o with { HalfSendCalls = NextCount() }; break;
                case "--decision-calls": o = o with { DecisionCalls = NextCount() }; break;
                case "--body-size": o = o with { BodySize = NextInt() }; break;
                case "--flush":
                    o = o with
                    {
                        Flush = Next().ToLowerInvariant() switch
                        {
                            "sync" => FlushMode.Sync,
                            "async" => FlushMode.Async,
                            var v => throw new ArgumentException($"--flush must be sync or async, not {v}"),
                        },
                    };
                    break;
                case "--inflight":
                    inflight = Next().Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(v => int.TryParse(v, out int n) && n > 0 && n <= 4096 ? n : throw new ArgumentException($"--inflight takes positive integers up to 4096, not '{v}'"))
                        .Distinct().Order().ToArray();
                    if (inflight.Count == 0) throw new ArgumentException("--inflight needs at least one level");
                    break;
                case "--decision-durability":
                    string dd = Next().ToLowerInvariant();
                    if (dd.Length == 0 || !dd.All(c => char.IsAsciiLetterOrDigit(c) || c == '-')) throw new ArgumentException($"--decision-durability: '{dd}' is not a mode name");
                    o = o with { DecisionDurability = dd };
                    break;
                case "--rabbitmq": o = o with { RabbitMqUri = Next() }; break;
                case "--no-rabbitmq": o = o with { SkipRabbitMq = true }; break;
                case "--timeout": timeoutS = NextInt(); break;
                case "--out": o = o with { OutDir = Next() }; break;
                default: rest.Add(a); break;
            }
        }
        o = o with
        {
            Messages = messages ?? (o.Quick ? 20_000 : 200_000),
            MessagesGiven = messages is not null,
            InFlight = inflight ?? (o.Quick ? [8] : [8, 64, 256]),
            FlowTimeout = TimeSpan.FromSeconds(timeoutS ?? (o.Quick ? 90 : 600)),
            WarmupSeconds = warmupS ?? (o.Quick ? 1 : 30),
            Rest = rest,
        };
        return o;
    }

    /// <summary>ProducerClient instances (connections) for a row with <paramref name="producers"/> producers.</summary>
    public int InstancesFor(int producers) => ProducerInstances == 0 ? producers : Math.Min(ProducerInstances, producers);

    public override string ToString() =>
        $"messages={Messages} inflight={string.Join(',', InFlight)} producers={Producers} consumers={Consumers} " +
        $"producer-instances={(ProducerInstances == 0 ? "each" : ProducerInstances.ToString(System.Globalization.CultureInfo.InvariantCulture))} acks-in-flight={AcksInFlight} receives-in-flight={ReceivesInFlight} half-send-calls={HalfSendCalls} decision-calls={DecisionCalls} body={BodySize}B " +
        $"flush={Flush.ToString().ToLowerInvariant()} decision-durability={DecisionDurability} warmup={WarmupSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture)}s" +
        (Quick ? " quick" : "") + (RabbitMqUri is null ? "" : " rabbitmq=external");
}
