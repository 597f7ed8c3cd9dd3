using System.Globalization;
using HalfMsg.Broker.Hosting;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>An in-process broker with every endpoint on a free 127.0.0.1 port (collection fixture for Remoting tests).</summary>
public class RemotingBrokerFixture : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-remoting-" + Guid.NewGuid().ToString("N"));
    public BrokerHost Host { get; private set; } = null!;
    public int GrpcPort { get; } = FreePorts.Next();
    public int HttpPort { get; } = FreePorts.Next();
    public int RemotingPort { get; } = FreePorts.Next();
    public int NameServerPort { get; } = FreePorts.Next();

    /// <summary>Extra flags for fixtures deriving from this one (e.g. credentials).</summary>
    protected virtual string[] ExtraArgs => [];

    public string[] Args =>
    [
        "--data-dir", _dataDir, "--grpc-port", P(GrpcPort), "--http-port", P(HttpPort), "--remoting-port", P(RemotingPort),
        "--namesrv-port", P(NameServerPort), "--transaction-check-interval", "1s", "--transaction-timeout", "1s", "--queues-per-topic", "4",
        .. ExtraArgs,
    ];

    public async Task InitializeAsync() => Host = await BrokerHost.StartAsync(Args);

    /// <summary>Stops the broker gracefully and starts it again on the same data directory and ports.</summary>
    public async Task RestartAsync()
    {
        await Host.DisposeAsync();
        Host = await BrokerHost.StartAsync(Args);
    }

    public async Task DisposeAsync()
    {
        await Host.DisposeAsync();
        try { Directory.Delete(_dataDir, recursive: true); } catch (IOException) { }
    }

    public Task<RemotingTestClient> ConnectAsync() => RemotingTestClient.ConnectAsync(RemotingPort);

    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);
}

/// <summary>Request builders shared by the Remoting tests: what Java's MQClientAPIImpl puts in each header.</summary>
public static class RemotingBroker
{
    public static string Unique(string prefix) => $"{prefix}_{Guid.NewGuid():N}"[..(prefix.Length + 13)];

    public static Dictionary<string, string> SendHeader(string group, string topic, string properties, int sysFlag = 0, int queueId = -1)
        => new()
        {
            ["a"] = group, ["b"] = topic, ["c"] = "TBW102", ["d"] = "4", ["e"] = queueId.ToString(CultureInfo.InvariantCulture),
            ["f"] = sysFlag.ToString(CultureInfo.InvariantCulture), ["g"] = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds().ToString(CultureInfo.InvariantCulture),
            ["h"] = "0", ["i"] = properties, ["j"] = "0", ["k"] = "false",
        };

    public static string Props(string? tag = null, string? keys = null, string? uniq = null, params (string Key, string Value)[] more)
    {
        var list = new List<KeyValuePair<string, string?>>
        {
            new(MessageConst.UniqueKey, uniq ?? Guid.NewGuid().ToString("N").ToUpperInvariant()),
            new(MessageConst.Tags, tag), new(MessageConst.Keys, keys),
        };
        list.AddRange(more.Select(m => new KeyValuePair<string, string?>(m.Key, m.Value)));
        return MessageProperties.Encode(list);
    }

    public static async Task<RemotingCommand> SendAsync(RemotingTestClient c, string topic, string body, string? tag = null, int queueId = -1, string? uniq = null,
        params (string Key, string Value)[] more)
    {
        var r = await c.InvokeAsync(RequestCode.SendMessageV2, SendHeader("PG", topic, Props(tag, null, uniq, more), 0, queueId), System.Text.Encoding.UTF8.GetBytes(body));
        Assert.True(r.Code == ResponseCode.Success, $"send failed: {r.Code} {r.Remark}");
        return r;
    }

    public static Task<RemotingCommand> PullAsync(RemotingTestClient c, string group, string topic, int queueId, long offset, string subscription = "*",
        long suspendMs = 0, int max = 32, long commitOffset = 0)
    {
        int sysFlag = PullSysFlag.Subscription | (suspendMs > 0 ? PullSysFlag.Suspend : 0) | (commitOffset > 0 ? PullSysFlag.CommitOffset : 0);
        return c.InvokeAsync(RequestCode.PullMessage, new()
        {
            ["consumerGroup"] = group, ["topic"] = topic, ["queueId"] = queueId.ToString(CultureInfo.InvariantCulture),
            ["queueOffset"] = offset.ToString(CultureInfo.InvariantCulture), ["maxMsgNums"] = max.ToString(CultureInfo.InvariantCulture),
            ["sysFlag"] = sysFlag.ToString(CultureInfo.InvariantCulture), ["commitOffset"] = commitOffset.ToString(CultureInfo.InvariantCulture),
            ["suspendTimeoutMillis"] = suspendMs.ToString(CultureInfo.InvariantCulture), ["subscription"] = subscription, ["subVersion"] = "0",
        }, timeout: TimeSpan.FromMilliseconds(suspendMs + 30_000));
    }

    /// <summary>Pulls every queue of the topic from offset 0 once and returns the bodies found.</summary>
    public static async Task<List<RemotingMessage>> PullAllAsync(RemotingTestClient c, string group, string topic, int queues = 4, string subscription = "*")
    {
        var all = new List<RemotingMessage>();
        for (int q = 0; q < queues; q++)
        {
            long offset = 0;
            while (true)
            {
                var r = await PullAsync(c, group, topic, q, offset, subscription);
                if (r.Code != ResponseCode.Success) break;
                all.AddRange(StoredMessageCodec.DecodeAll(r.Body.Span));
                offset = long.Parse(r.Get("nextBeginOffset")!, CultureInfo.InvariantCulture);
            }
        }
        return all;
    }

    /// <summary>Polls until <paramref name="condition"/> holds (tests wait for conditions, never for fixed times).</summary>
    public static async Task<T> EventuallyAsync<T>(Func<Task<T>> probe, Func<T, bool> condition, TimeSpan timeout, string what)
    {
        var deadline = DateTime.UtcNow + timeout;
        T last = await probe();
        while (!condition(last))
        {
            if (DateTime.UtcNow > deadline) Assert.Fail($"timed out after {timeout} waiting for {what}; last: {last}");
            await Task.Delay(50);
            last = await probe();
        }
        return last;
    }

    public static string BodyOf(RemotingMessage m) => System.Text.Encoding.UTF8.GetString(m.Body);
}
