using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Ops.Tests;

/// <summary>
/// A real broker in-process on loopback ports, with credentials, holding what an operator looks at:
/// parked halves (a producer that never answers, check max 1), pending halves whose producer group has nobody
/// connected, a committed message, and a consumer group with one message in flight. A delivery is tried twice before
/// it is dead-lettered (the DLQ re-drive tests).
/// </summary>
public sealed class OpsBroker : IAsyncLifetime
{
    public const string AccessKey = "ops";
    public const string Secret = "ops-secret-4711";
    public const string ParkTopic = "ops-orders";
    public const string PendingTopic = "ops-payments";
    public const string Consumers = "ops-consumers";
    public const int ParkedCount = 3;
    public const int PendingCount = 2;
    public const string ConsumerClientId = "ops-consumer-host@4711";

    /// <summary>The plain message the consumer group has in flight.</summary>
    public string DeliveredId { get; private set; } = "";

    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-ops-" + Guid.NewGuid().ToString("N")[..12]);
    private IDisposable? _silentProducer;

    public BrokerHost Host { get; private set; } = null!;
    public BrokerEngine Engine => Host.Engine;
    public int HttpPort { get; private set; }
    public string Url => $"http://127.0.0.1:{HttpPort}";

    public async Task InitializeAsync()
    {
        HttpPort = FreePorts.Next();
        Host = await BrokerHost.StartAsync(
            ["--data-dir", _dataDir, "--grpc-port", FreePorts.Next().ToString(), "--http-port", HttpPort.ToString(),
             "--transaction-timeout", "0ms", "--transaction-check-interval", "20ms", "--transaction-check-max", "1", "--queues-per-topic", "2",
             "--max-delivery-attempts", "2", "--remoting-port", "0", "--namesrv-port", "0"],
            [new($"Broker:Credentials:{AccessKey}", Secret)]);

        _silentProducer = Engine.Producers.Register("ops-park-producers", new SilentProducer());
        for (int i = 0; i < ParkedCount; i++)
            Assert.True((await Engine.SendHalfAsync(Draft(ParkTopic, $"ops-parked-{i}"), "ops-park-producers", null, null)).IsOk);
        for (int i = 0; i < PendingCount; i++)
            Assert.True((await Engine.SendHalfAsync(Draft(PendingTopic, $"ops-pending-{i}"), "ops-idle-producers", null, null)).IsOk);
        Assert.True((await Engine.SendAsync(Draft(PendingTopic, "ops-plain-1"))).IsOk);
        Assert.True((await Engine.SendAsync(Draft(PendingTopic, "ops-plain-2"))).IsOk);
        // A consumer client of the group (as the gRPC front end reports one) receives one message.
        Engine.Consumers.Seen(Consumers, ConsumerClientId, "gRPC", "127.0.0.1:40000");
        var received = await Engine.ReceiveAsync(new ReceiveRequest
        {
            ConsumerGroup = Consumers, Topic = PendingTopic, BatchSize = 1, InvisibleDuration = TimeSpan.FromMinutes(5), ClientId = ConsumerClientId,
        });
        DeliveredId = Assert.Single(received.Messages).Message.MessageId;

        // The host's own check-back loop (every 20 ms) sends the one allowed check, then parks.
        await WaitUntil(() => { Engine.ListTransactions(true, long.MaxValue, 1, out int parked); return parked == ParkedCount; }, "halves parked");
    }

    public static MessageDraft Draft(string topic, string id) => new()
    {
        Topic = topic, MessageId = id, Keys = [$"key-{id}"], Tag = "created", Body = "{\"order\":42}"u8.ToArray(),
    };

    public static async Task WaitUntilAsync(Func<Task<bool>> condition, string what, int timeoutMs = 20_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for: {what}");
            await Task.Delay(20);
        }
    }

    public static async Task WaitUntil(Func<bool> condition, string what, int timeoutMs = 20_000)
    {
        var deadline = DateTime.UtcNow.AddMilliseconds(timeoutMs);
        while (!condition())
        {
            if (DateTime.UtcNow > deadline) throw new TimeoutException($"timed out waiting for: {what}");
            await Task.Delay(20);
        }
    }

    public async Task DisposeAsync()
    {
        _silentProducer?.Dispose();
        await Host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    /// <summary>Takes every check-back and never answers: its halves park after the maximum checks.</summary>
    private sealed class SilentProducer : ICheckBackChannel
    {
        public string ClientId => "ops-silent-producer";
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => true;
    }
}
