using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Fuzz.Capture;

/// <summary>
/// Captures seed corpora from real traffic (issue 13): a broker process on free 127.0.0.1 ports, Remoting traffic
/// through a <see cref="RecordingProxy"/> (frames as they went over the wire, both directions), gRPC traffic from the
/// project's own producer and consumer clients, then the broker is killed with SIGKILL and its log and checkpoint files
/// are read back. <c>HalfMsg.Fuzz capture &lt;corpus dir&gt;</c>.
/// </summary>
public static class SeedCapture
{
    public static async Task<int> RunAsync(string corpusRoot)
    {
        var seeds = new Dictionary<string, List<byte[]>>();
        void Add(string target, byte[] bytes) { if (!seeds.TryGetValue(target, out var l)) seeds[target] = l = []; l.Add(bytes); }

        await using var broker = await BrokerProcess.StartAsync("--checkpoint-every", "100");
        var receipts = new List<string>();
        var remoting = new RecordingProxy(broker.RemotingPort);
        var nameServer = new RecordingProxy(broker.NameServerPort);
        try
        {
            await RemotingSessionAsync(remoting.Port, nameServer.Port);
            receipts.AddRange(await GrpcSessionAsync(broker.Endpoint));
        }
        finally
        {
            // Stopped before what they recorded is read (not a pause): stopping waits for their pumps, and a pump records
            // what it forwarded before it reads again, so every frame the client got an answer for, and the answer, is in.
            await remoting.DisposeAsync();
            await nameServer.DisposeAsync();
        }

        foreach (var (toServer, frame) in remoting.Frames.Concat(nameServer.Frames)) AddFrame(frame, toServer, Add);

        foreach (var r in receipts) Add("receipt-handle", Encoding.UTF8.GetBytes(r));
        foreach (var frame in seeds.GetValueOrDefault("frame") ?? [])
        {
            var seq = new ReadOnlySequence<byte>(frame);
            if (!RemotingFrame.TryReadFrame(ref seq, RemotingFrame.DefaultMaxFrameLength, out var cmd)) continue;
            foreach (var key in new[] { "msgId", "offsetMsgId", "transactionId" })
                if (cmd.Get(key) is { } id) Add("receipt-handle", Encoding.UTF8.GetBytes(id));
            // Signature seeds: the exact strings the clients compute, for the frames' own fields.
            string date = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
            if (cmd.ExtFields is { Count: > 0 } ext && !cmd.IsResponse)
            {
                var signed = new RemotingCommand { ExtFields = new Dictionary<string, string>(ext), Body = cmd.Body };
                RemotingAclSignature.Sign(signed, "RocketMQ", "12345678");
                Add("signature", Encoding.UTF8.GetBytes(string.Join('\n', signed.ExtFields!.Select(kv => kv.Key + "=" + kv.Value))));
            }
            if (seeds.GetValueOrDefault("signature")?.Count is null or < 3)
                Add("signature", Encoding.UTF8.GetBytes(MqSignature.Sign("ak", "sk", date) + "\n" + date));
        }

        broker.Kill();
        ReadDataDir(broker.DataDir, Add);
        foreach (var chain in CheckpointChainSeeds()) Add("checkpoint", chain);
        foreach (var a in new[] { "earliest", "latest", "1769860800000", "2026-01-31T12:00:00Z", "500ms", "6s", "2m", "72h", "1d", "00:00:30", "4MiB", "512KiB", "4194304" })
            Add("admin", Encoding.UTF8.GetBytes(a));
        foreach (var frame in seeds.GetValueOrDefault("frame") ?? []) if (frame.Length > 8) Add("admin", frame.AsSpan(8, Math.Min(64, frame.Length - 8)).ToArray());

        int written = 0;
        foreach (var (target, list) in seeds)
        {
            string dir = Path.Combine(corpusRoot, target);
            Directory.CreateDirectory(dir);
            // Distinct, and at most 40 per target (the smallest first: afl likes small seeds).
            var chosen = target == "frame"
                ? list.GroupBy(FrameKind).SelectMany(g => g.OrderBy(b => b.Length).Take(2)) // every request code and response kind
                : list.DistinctBy(Convert.ToHexString).OrderBy(b => b.Length).Take(40);
            foreach (var bytes in chosen.DistinctBy(Convert.ToHexString))
            {
                string name = "seed-" + Convert.ToHexString(SHA1.HashData(bytes))[..12].ToLowerInvariant();
                File.WriteAllBytes(Path.Combine(dir, name), bytes);
                written++;
            }
            Console.WriteLine($"{target}: {Directory.GetFiles(dir, "seed-*").Length} seeds");
        }
        return written > 0 ? 0 : 1;
    }

    /// <summary>The checkpoint target's seeds: the fixture's chain, whole and cut after each file (the whole checkpoint
    /// alone, then with its first delta, ...). The broker process's own checkpoint files are seeds too, but over the
    /// fixture's log they describe another log.</summary>
    public static IEnumerable<byte[]> CheckpointChainSeeds()
    {
        var files = CheckpointChainFixture.Get().Checkpoints;
        for (int n = 1; n <= files.Count; n++) yield return files.Take(n).SelectMany(f => f.Bytes).ToArray();
    }

    /// <summary>
    /// <c>HalfMsg.Fuzz capture-engine &lt;corpus dir&gt;</c>: the seeds an engine writes without a broker process: the
    /// checkpoint target's chains, and record and replay seeds from a log holding every record kind the engine writes
    /// but a park and a resume (the process capture's log has about half of them).
    /// </summary>
    public static async Task<int> WriteEngineSeedsAsync(string corpusRoot)
    {
        var seeds = new List<(string Target, byte[] Bytes)>();
        foreach (var chain in CheckpointChainSeeds()) seeds.Add(("checkpoint", chain));
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-fuzz-kinds-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            await EveryRecordKindAsync(dataDir);
            ReadDataDir(dataDir, (target, bytes) => { if (target is "record" or "replay") seeds.Add((target, bytes)); });
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
        foreach (var group in seeds.GroupBy(x => x.Target))
        {
            string dir = Path.Combine(corpusRoot, group.Key);
            Directory.CreateDirectory(dir);
            foreach (var (_, bytes) in group)
                File.WriteAllBytes(Path.Combine(dir, "seed-" + Convert.ToHexString(SHA1.HashData(bytes))[..12].ToLowerInvariant()), bytes);
            Console.WriteLine($"{group.Key}: {Directory.GetFiles(dir, "seed-*").Length} seeds");
        }
        return 0;
    }

    /// <summary>An engine's log with a record of each kind: sends, halves and decisions, a check-back's record is not
    /// among them (no producer), leases, acks, a lease change, a dead letter and its re-drive (onto its topic, and a
    /// Remoting consumer's into its retry topic), a delayed message
    /// released, a started, a reset and a deleted group, a pull offset, a deleted topic, and a retention cut that moves a live
    /// body.</summary>
    private static async Task EveryRecordKindAsync(string dir)
    {
        var options = CheckpointChainFixture.Options(dir) with
        {
            TransactionTimeout = TimeSpan.FromMilliseconds(20), TransactionCheckInterval = TimeSpan.FromMilliseconds(20), TransactionCheckMax = 1,
        };
        var engine = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false);
        int ids = 0;
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        MessageDraft Draft(string topic, string body, long? at = null) => new()
        {
            Topic = topic, MessageId = $"0200000000000000000000{++ids:X12}", Body = Encoding.UTF8.GetBytes(body), Tag = "T",
            Keys = ["k" + ids], DeliveryTimestampMs = at, BornTimestampMs = now, BornHost = "fuzz",
        };
        try
        {
            // First a retention cut that moves a live body (the log's records before it are gone, so it comes first).
            var kept = await engine.SendHalfAsync(Draft("KindA", "kept across the cut: a pending half is live"), "kind-producers", "p1", null);
            await engine.CheckpointAsync();
            long boundary = engine.LogTailAddress;
            await engine.SendAsync(Draft("KindA", "after the boundary"));
            await engine.CheckpointAsync();
            if (await engine.TruncateBeforeAsync(boundary) < 1) throw new InvalidOperationException("the cut moved no body");
            await engine.SendAsync(Draft("KindA", "released after the sweep", at: now + 30));
            await engine.EndTransactionAsync(kept.TransactionId, kept.MessageId, HalfMsg.Broker.Core.Model.TransactionResolution.Commit, DecisionSource.Client);
            var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "k1", Topic = "KindA", BatchSize = 4, InvisibleDuration = TimeSpan.FromMinutes(5) });
            if (got.Messages.Count < 2) throw new InvalidOperationException("fewer than two deliveries");
            await engine.AckAsync("k1", "KindA", got.Messages[0].ReceiptHandle);
            var changed = await engine.ChangeInvisibleDurationAsync("k1", "KindA", got.Messages[1].ReceiptHandle, TimeSpan.FromMinutes(1));
            if (!(await engine.ForwardToDeadLetterAsync("k1", "KindA", changed.ReceiptHandle!)).IsOk) throw new InvalidOperationException("dead letter");
            if ((await engine.RedriveDeadLettersAsync("k1", null, 1)).Redriven != 1) throw new InvalidOperationException("redrive");
            // A Remoting consumer's dead letter (sent back past its maximum) re-driven into its retry topic.
            var pulled = new List<PulledMessage>();
            for (int q = 0; q < engine.QueueCount("KindA") && pulled.Count == 0; q++)
                pulled.AddRange((await engine.PullAsync("KindA", q, 0, 1, TagFilter.All, TimeSpan.Zero)).Messages);
            if (pulled.Count < 1) throw new InvalidOperationException("pull");
            if (!(await engine.SendBackAsync("k3", pulled[0].PhysicalOffset, 0, 0, "KindA")).DeadLettered) throw new InvalidOperationException("send back");
            if ((await engine.RedriveDeadLettersAsync("k3", null, 1)).Redriven != 1) throw new InvalidOperationException("redrive into the retry topic");
            await engine.StartGroupAsync("k2", "KindA", GroupStartFrom.Latest);
            await engine.ResetGroupAsync("k2", "KindA", GroupStartFrom.Earliest);
            await engine.DeleteGroupAsync("k2");
            await engine.CommitConsumerOffsetAsync("kind-pull", "KindA", 0, 1);
            await engine.SendAsync(Draft("KindGone", "on a topic deleted next"));
            await engine.DeleteTopicAsync("KindGone");
            while (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() <= now + 30) await Task.Delay(5);
            engine.RunSweep();
            // A half nobody decides: checked once (a producer that never answers), parked at the check limit, resumed.
            using (engine.Producers.Register("kind-producers", new SilentProducer()))
            {
                var silent = await engine.SendHalfAsync(Draft("KindA", "never decided"), "kind-producers", "p1", null);
                await RunCheckPassesUntilAsync(engine, () => engine.Metrics.ChecksSent >= 1);
                await RunCheckPassesUntilAsync(engine, () => engine.TransactionCounts().Parked >= 1);
                if (!(await engine.ResumeTransactionAsync(silent.TransactionId)).IsOk) throw new InvalidOperationException("resume");
            }
        }
        finally
        {
            await engine.DisposeAsync();
        }
    }

    private static async Task RunCheckPassesUntilAsync(BrokerEngine engine, Func<bool> done)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!done())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException("check pass did not get there");
            await Task.Delay(25);
            await engine.RunCheckPassAsync();
        }
    }

    private sealed class SilentProducer : HalfMsg.Broker.Core.Transactions.ICheckBackChannel
    {
        public string ClientId => "silent";
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => true;
    }

    private static string FrameKind(byte[] frame)
    {
        var seq = new ReadOnlySequence<byte>(frame);
        return RemotingFrame.TryReadFrame(ref seq, RemotingFrame.DefaultMaxFrameLength, out var cmd)
            ? $"{cmd.Code}/{cmd.Flag}/{cmd.SerializeType}/{cmd.Body.Length > 0}" : "?";
    }

    private static void AddFrame(byte[] frame, bool toServer, Action<string, byte[]> add)
    {
        var seq = new ReadOnlySequence<byte>(frame);
        if (!RemotingFrame.TryReadFrame(ref seq, RemotingFrame.DefaultMaxFrameLength, out var cmd)) return;
        add("frame", frame);
        int mark = BinaryPrimitives.ReadInt32BigEndian(frame.AsSpan(4));
        int headerLength = mark & 0xFFFFFF;
        add((mark >> 24) == 0 ? "header-json" : "header-binary", frame.AsSpan(8, headerLength).ToArray());
        bool storedBody = (cmd.IsResponse && cmd.Code == ResponseCode.Success && cmd.Body.Length > 0 && cmd.Get("nextBeginOffset") is not null)
            || (!cmd.IsResponse && cmd.Code == RequestCode.CheckTransactionState);
        if (storedBody) add("stored-message", cmd.Body.ToArray());
        if (toServer && cmd.Code == RequestCode.SendBatchMessage) add("stored-message", cmd.Body.ToArray());
    }

    private static async Task RemotingSessionAsync(int port, int nameServerPort)
    {
        string topic = "FuzzSeedTopic", group = "FuzzSeedPG", consumer = "FuzzSeedCG";
        await using var c = await MiniRemotingClient.ConnectAsync(port);
        await using var ns = await MiniRemotingClient.ConnectAsync(nameServerPort);
        await JavaLikeRemoting.RouteAsync(ns, topic);
        await JavaLikeRemoting.HeartbeatAsync(c, group);
        await JavaLikeRemoting.HeartbeatAsync(c, null, consumer, topic);
        for (int i = 0; i < 24; i++)
            await JavaLikeRemoting.SendAsync(c, group, topic, $"remoting body {i} " + new string('x', i * 3), i % 3 == 0 ? null : "Tag" + i % 3, i % 4,
                i % 2 == 0 ? SerializeType.Json : SerializeType.RocketMq, i % 5 == 0 ? "key" + i : null);
        await JavaLikeRemoting.RouteAsync(ns, topic);
        await JavaLikeRemoting.SendBatchAsync(c, group, topic, "batch one", "batch two", "batch three");
        // Transactions: commit, rollback (one-way, as Java), and one left for the broker's check-back.
        var (u1, r1) = await JavaLikeRemoting.SendHalfAsync(c, group, topic, "half to commit", "TagT");
        await c.OnewayAsync(JavaLikeRemoting.EndTransaction(group, u1, r1.Get("queueOffset") ?? "0", r1.Get("msgId") ?? "", MessageSysFlag.TransactionCommitType, false));
        var (u2, r2) = await JavaLikeRemoting.SendHalfAsync(c, group, topic, "half to roll back");
        await c.OnewayAsync(JavaLikeRemoting.EndTransaction(group, u2, r2.Get("queueOffset") ?? "0", r2.Get("msgId") ?? "", MessageSysFlag.TransactionRollbackType, false));
        await JavaLikeRemoting.SendHalfAsync(c, group, topic, "half left for the check-back", "TagC");
        try
        {
            var check = await c.NextServerRequestAsync(RequestCode.CheckTransactionState, TimeSpan.FromSeconds(30));
            var m = StoredMessageCodec.DecodeAll(check.Body.Span).Single();
            await c.OnewayAsync(JavaLikeRemoting.EndTransaction(group, m.Properties[MessageConst.UniqueKey], check.Get("tranStateTableOffset") ?? "0",
                check.Get("offsetMsgId") ?? "", MessageSysFlag.TransactionCommitType, true));
        }
        catch (OperationCanceledException)
        {
            Console.Error.WriteLine("no CHECK_TRANSACTION_STATE within 30 s; the capture has no check-back frame");
        }
        for (int q = 0; q < 8; q++)
        {
            var pulled = await JavaLikeRemoting.PullAsync(c, consumer, topic, q, 0, q % 2 == 0 ? SerializeType.Json : SerializeType.RocketMq);
            long next = long.TryParse(pulled.Get("nextBeginOffset"), out var n) ? n : 0;
            await JavaLikeRemoting.UpdateOffsetAsync(c, consumer, topic, q, next);
            await JavaLikeRemoting.QueryOffsetAsync(c, consumer, topic, q);
            await JavaLikeRemoting.MaxOffsetAsync(c, topic, q);
        }
        // Enough records for a checkpoint (--checkpoint-every 100).
        for (int i = 0; i < 80; i++) await JavaLikeRemoting.SendAsync(c, group, topic, "filler " + i, "F", i % 4);
    }

    private static async Task<List<string>> GrpcSessionAsync(string endpoint)
    {
        string topic = "FuzzSeedGrpc";
        await using var producer = await Producer.StartAsync(ProducerOptions.Default with { Endpoints = endpoint, Topics = [topic] });
        await using var consumer = await SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = endpoint, ConsumerGroup = "FuzzSeedGrpcGroup", Subscriptions = new Dictionary<string, string> { [topic] = "*" }, AwaitDuration = TimeSpan.FromSeconds(1),
        });
        for (int i = 0; i < 6; i++)
        {
            var tx = producer.BeginTransaction();
            await tx.SendAsync(new ProducerMessage(topic, "grpc tx " + i) { Tag = "G", Keys = ["k" + i] });
            if (i % 3 == 2) await tx.RollbackAsync(); else await tx.CommitAsync();
        }
        await producer.SendAsync(new ProducerMessage(topic, "grpc plain"));
        var handles = new List<string>();
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        int acked = 0;
        while (acked < 5 && DateTime.UtcNow < deadline)
        {
            foreach (var m in await consumer.ReceiveAsync(8, TimeSpan.FromSeconds(30)))
            {
                handles.Add(m.ReceiptHandle);
                if (acked % 2 == 1)
                {
                    await m.ChangeInvisibleDurationAsync(TimeSpan.FromSeconds(20));
                    handles.Add(m.ReceiptHandle);
                }
                await m.AckAsync();
                acked++;
            }
        }
        return handles;
    }

    private static void ReadDataDir(string dataDir, Action<string, byte[]> add)
    {
        var records = new List<byte[]>();
        var log = new RecordLog(Path.Combine(dataDir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5));
        try
        {
            var collector = new Collector(records);
            log.Replay(log.BeginAddress, ref collector);
        }
        finally
        {
            log.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        // One seed per record (a few of each kind), and runs of consecutive records for replay.
        foreach (var group in records.GroupBy(r => r[0]))
            foreach (var r in group.Take(6)) add("record", r);
        for (int i = 0; i < records.Count; i += 12) add("replay", FuzzTargets.JoinRecords(records.Skip(i).Take(12)));
        add("replay", FuzzTargets.JoinRecords(records.Where(r => r.Length < 400).Take(60)));
        foreach (var file in Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin"))
            add("checkpoint", File.ReadAllBytes(file));
        Console.WriteLine($"log: {records.Count} records; checkpoints: {Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin").Length}");
    }

    private struct Collector(List<byte[]> records) : IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address) => records.Add(record.ToArray());
    }
}
