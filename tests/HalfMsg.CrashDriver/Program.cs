using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

// Drives transactional load against the broker core and prints one line per ACKNOWLEDGED outcome, only after the core
// acknowledged it (flush sync: durable). The crash test kills this process with SIGKILL at a random moment and checks
// the recovered data dir against these lines:
//   H id    half stored            C id    committed          R id    rolled back
//   P id    left pending           A id    delivered + acked  K id n  check-back n received
//   B addr  a retention cut before addr is about to start (printed after the address was sampled)
if (args[0] == "rawlog") return await RawLogDriver.RunAsync(args[1], args.Length > 2 && args[2] == "truncate");
string dataDir = args[0];
int workers = args.Length > 1 ? int.Parse(args[1]) : 4;
bool retention = args.Length > 2 && args[2] == "retention";
bool relaxed = args.Length > 3 && args[3] == "relaxed";
var output = new StreamWriter(Console.OpenStandardOutput(), Encoding.ASCII) { AutoFlush = true };
var gate = new object();
void Emit(string line) { lock (gate) output.WriteLine(line); }

await using var engine = await BrokerEngine.OpenAsync(new CoreOptions
{
    DataDir = dataDir,
    Flush = FlushMode.Sync,
    DecisionDurability = relaxed ? DecisionDurability.Relaxed : DecisionDurability.Sync,
    TransactionTimeout = TimeSpan.FromMilliseconds(100),
    TransactionCheckInterval = TimeSpan.FromMilliseconds(200),
    TransactionCheckMax = 1000,
    QueuesPerTopic = 4,
    CheckpointEveryRecords = 2000,
    SegmentSizeBits = 24,
    MemorySizeBits = 24,
});
using var registration = engine.Producers.Register("orders", new PrintingChannel(Emit));
Emit("READY");

// Odd workers use the batch entry points (what the gRPC front end does with coalesced halves and decisions): eight
// halves at once, then their decisions at once; each outcome is printed only after the batch acknowledged it.
var producers = Enumerable.Range(0, workers).Select(w => Task.Run(async () =>
{
    if (w % 2 == 1)
    {
        for (int round = 0; ; round++)
        {
            var ids = Enumerable.Range(0, 8).Select(k => $"tx-{Environment.ProcessId}-{w}-{round * 8 + k}").ToList();
            var stored = await engine.SendHalvesAsync(ids.Select(id => new HalfDraft(
                new MessageDraft { Topic = "orders", MessageId = id, Body = Encoding.UTF8.GetBytes(id) }, "orders", "driver", null)).ToList());
            for (int k = 0; k < ids.Count; k++)
            {
                if (!stored[k].IsOk) throw new InvalidOperationException(stored[k].Error.ToString());
                Emit($"H {ids[k]}");
            }

            var decided = Enumerable.Range(0, ids.Count).Where(k => (round * 8 + k) % 3 != 2).ToList();
            var results = await engine.EndTransactionsAsync(decided.Select(k => new DecisionRequest(ids[k], ids[k],
                (round * 8 + k) % 3 == 0 ? TransactionResolution.Commit : TransactionResolution.Rollback, DecisionSource.Client)).ToList());
            for (int j = 0; j < decided.Count; j++)
            {
                int k = decided[j];
                if (results[j].IsOk) Emit(((round * 8 + k) % 3 == 0 ? "C " : "R ") + ids[k]);
            }

            foreach (int k in Enumerable.Range(0, ids.Count).Where(k => (round * 8 + k) % 3 == 2)) Emit($"P {ids[k]}");
        }
    }

    for (int i = 0; ; i++)
    {
        string id = $"tx-{Environment.ProcessId}-{w}-{i}";
        var half = await engine.SendHalfAsync(new MessageDraft { Topic = "orders", MessageId = id, Body = Encoding.UTF8.GetBytes(id) }, "orders", "driver", null);
        if (!half.IsOk) throw new InvalidOperationException(half.Error.ToString());
        Emit($"H {id}");
        switch (i % 3)
        {
            case 0:
                if ((await engine.EndTransactionAsync(id, id, TransactionResolution.Commit, DecisionSource.Client)).IsOk) Emit($"C {id}");
                break;
            case 1:
                if ((await engine.EndTransactionAsync(id, id, TransactionResolution.Rollback, DecisionSource.Client)).IsOk) Emit($"R {id}");
                break;
            default:
                Emit($"P {id}");
                break;
        }
    }
})).ToList();

var consumer = Task.Run(async () =>
{
    while (true)
    {
        var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "orders", BatchSize = 16, InvisibleDuration = TimeSpan.FromMinutes(10), LongPollTimeout = TimeSpan.FromMilliseconds(200) });
        foreach (var m in got.Messages)
        {
            // Ack every other message: the rest stay leased (unacked) across the crash.
            if (m.Message.QueueOffset % 2 == 0 && (await engine.AckAsync("g", "orders", m.ReceiptHandle)).IsOk) Emit($"A {m.Message.MessageId}");
        }
    }
});
// Retention cuts run during the load: every 250 ms the log is cut at the tail of the previous round, so records are
// relocated and heads dropped while halves are stored, decided, delivered and acked.
var cutter = Task.Run(async () =>
{
    if (!retention) { await Task.Delay(Timeout.Infinite); return; }
    long previous = engine.LogTailAddress;
    while (true)
    {
        await Task.Delay(250);
        long boundary = previous;
        previous = engine.LogTailAddress;
        Emit($"B {boundary}");
        await engine.TruncateBeforeAsync(boundary);
    }
});
var all = producers.Append(consumer).Append(cutter).ToList();
await Task.WhenAny(all);
await Task.WhenAll(all); // surfaces the failure
return 1;

sealed class PrintingChannel(Action<string> emit) : ICheckBackChannel
{
    public string ClientId => "driver";
    public bool IsAlive => true;
    public bool TrySendCheck(CheckBackRequest request)
    {
        emit($"K {request.TransactionId} {request.CheckNumber}");
        return true;
    }
}
