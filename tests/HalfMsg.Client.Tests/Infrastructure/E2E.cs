using System.Collections.Concurrent;
using System.Data.Common;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>Helpers shared by the end-to-end tests.</summary>
internal static class E2E
{
    public static readonly TimeSpan Invisible = TimeSpan.FromSeconds(30);

    public static string Unique(string prefix) => prefix + "-" + Guid.NewGuid().ToString("N")[..10];

    public static Task<Producer> ProducerAsync(string endpoint, string topic, ITransactionChecker? checker = null) =>
        Producer.StartAsync(ProducerOptions.Default with { Endpoints = endpoint, Topics = [topic], TransactionChecker = checker });

    public static Task<SimpleConsumer> ConsumerAsync(string endpoint, string topic, string group) =>
        SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
        {
            Endpoints = endpoint,
            ConsumerGroup = group,
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
        });

    /// <summary>Receives (and acks) until <paramref name="expected"/> messages arrived or <paramref name="within"/> passed.</summary>
    public static async Task<List<ReceivedMessage>> DrainAsync(SimpleConsumer consumer, int expected, TimeSpan within)
    {
        var all = new List<ReceivedMessage>();
        var deadline = DateTime.UtcNow + within;
        while (all.Count < expected && DateTime.UtcNow < deadline)
        {
            foreach (ReceivedMessage m in await consumer.ReceiveAsync(16, Invisible))
            {
                all.Add(m);
                await m.AckAsync();
            }
        }

        return all;
    }

    public static async Task<int> ExecAsync(DbConnection c, DbTransaction? tx, string sql, params (string Name, object Value)[] parameters)
    {
        await using DbCommand cmd = c.CreateCommand();
        cmd.Transaction = tx;
        cmd.CommandText = sql;
        foreach ((string name, object value) in parameters)
        {
            DbParameter p = cmd.CreateParameter();
            p.ParameterName = name;
            p.Value = value;
            cmd.Parameters.Add(p);
        }

        return await cmd.ExecuteNonQueryAsync();
    }

    public static async Task<long> CountAsync(Func<DbConnection> factory, string sql)
    {
        await using DbConnection c = factory();
        await c.OpenAsync();
        await using DbCommand cmd = c.CreateCommand();
        cmd.CommandText = sql;
        return Convert.ToInt64(await cmd.ExecuteScalarAsync());
    }

    public static Task EventuallyAsync(Func<bool> condition, TimeSpan within, string what)
        => EventuallyAsync(() => Task.FromResult(condition()), within, what);

    private static readonly HttpClient AdminHttp = new() { Timeout = TimeSpan.FromSeconds(10) };

    /// <summary>True once the broker (admin API at <paramref name="adminUrl"/>) has every message of <paramref name="topic"/>
    /// done for <paramref name="group"/>: acknowledged (or dead-lettered), none in flight. An ack that reached the broker
    /// ends the message's lease for good: it is not delivered again.</summary>
    public static async Task<bool> GroupDoneAsync(string adminUrl, string group, string topic)
    {
        using HttpResponseMessage response = await AdminHttp.GetAsync($"{adminUrl}/api/groups/{Uri.EscapeDataString(group)}");
        if (!response.IsSuccessStatusCode)
        {
            return false; // 404 until the group has received
        }

        using var answer = System.Text.Json.JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        foreach (System.Text.Json.JsonElement t in answer.RootElement.GetProperty("topics").EnumerateArray())
        {
            if (t.GetProperty("topic").GetString() == topic)
            {
                return t.GetProperty("lag").GetInt64() == 0 && t.GetProperty("inFlight").GetInt32() == 0;
            }
        }

        return false;
    }

    public static async Task EventuallyAsync(Func<Task<bool>> condition, TimeSpan within, string what)
    {
        var deadline = DateTime.UtcNow + within;
        while (!await condition())
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"Timed out after {within} waiting for: {what}");
            }

            await Task.Delay(100);
        }
    }
}

/// <summary>Records every check-back (transaction id, whether a flag was set when it started, its answer).</summary>
internal sealed class RecordingChecker(ITransactionChecker inner) : ITransactionChecker
{
    public sealed record Call(string TransactionId, DateTime StartedAt, bool FlagAtStart, TransactionResolution? Result, Exception? Error);

    private readonly ConcurrentQueue<Call> _calls = new();

    /// <summary>Set by the test (e.g. "the business transaction is open now").</summary>
    public volatile bool Flag;

    public IReadOnlyList<Call> Calls => [.. _calls];

    public IReadOnlyList<Call> For(string transactionId) => Calls.Where(c => c.TransactionId == transactionId).ToList();

    public async ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
    {
        bool flag = Flag;
        DateTime started = DateTime.UtcNow;
        try
        {
            TransactionResolution r = await inner.CheckAsync(message, cancellationToken);
            _calls.Enqueue(new Call(message.TransactionId ?? message.MessageId, started, flag, r, null));
            return r;
        }
        catch (Exception ex)
        {
            _calls.Enqueue(new Call(message.TransactionId ?? message.MessageId, started, flag, null, ex));
            throw;
        }
    }
}

/// <summary>A checker answering with a function of the view (for tests that do not use the barrier).</summary>
internal sealed class FuncChecker(Func<MessageView, TransactionResolution> decide) : ITransactionChecker
{
    public ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken) =>
        ValueTask.FromResult(decide(message));
}
