using System.Collections.Concurrent;
using System.Diagnostics;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using ProducerResolution = HalfMsg.ProducerClient.TransactionResolution;

namespace HalfMsg.Client.Tests;

/// <summary>A burst of check-backs is answered <see cref="ProducerOptions.MaxConcurrentChecks"/> at a time: each
/// check may hold a database connection (and on SQLite a thread), which the business writes need too (review 2026-12-05).</summary>
public sealed class CheckBackConcurrencyTests
{
    /// <summary>Holds every check until released; counts how many ran at once.</summary>
    private sealed class GateChecker : ITransactionChecker
    {
        private readonly TaskCompletionSource _gate = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _running;
        public int Started;
        public int MostAtOnce;

        public void Release() => _gate.TrySetResult();

        public async ValueTask<ProducerResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        {
            Interlocked.Increment(ref Started);
            int now = Interlocked.Increment(ref _running);
            int seen;
            while ((seen = Volatile.Read(ref MostAtOnce)) < now && Interlocked.CompareExchange(ref MostAtOnce, now, seen) != seen)
            {
            }

            try
            {
                await _gate.Task.WaitAsync(cancellationToken);
                return ProducerResolution.Commit;
            }
            finally
            {
                Interlocked.Decrement(ref _running);
            }
        }
    }

    private static TelemetryCommand Check(string topic, int i)
    {
        string id = "01CHECK" + i.ToString("D6", System.Globalization.CultureInfo.InvariantCulture);
        return new TelemetryCommand
        {
            RecoverOrphanedTransactionCommand = new RecoverOrphanedTransactionCommand
            {
                TransactionId = "tx-" + id,
                Message = new Apache.Rocketmq.V2.Message
                {
                    Topic = new Resource { Name = topic },
                    Body = Google.Protobuf.ByteString.CopyFromUtf8("half " + i),
                    SystemProperties = new SystemProperties { MessageId = id, MessageType = MessageType.Transaction },
                },
            },
        };
    }

    [Fact]
    public async Task A_burst_of_check_backs_runs_at_most_MaxConcurrentChecks_checkers_at_once_and_answers_every_one()
    {
        const int checks = 40, limit = 3;
        string topic = E2E.Unique("orders");
        // The producer starts a check's span just before the check waits for a slot: counting them tells when every check
        // has arrived (the topic, unique to this test, is in the span's name).
        string spanName = "check_transaction " + topic;
        int arrived = 0;
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == ProducerTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> o) => o.Name == spanName ? ActivitySamplingResult.AllData : ActivitySamplingResult.None,
            ActivityStarted = a =>
            {
                if (a.OperationName == spanName)
                {
                    Interlocked.Increment(ref arrived);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var decisions = new ConcurrentQueue<EndTransactionRequest>();
        await using TestGrpcServer server = await FakeBrokers.RecordingDecisionsAsync(decisions, new Settings(),
            [.. Enumerable.Range(0, checks).Select(i => Check(topic, i))]);
        var checker = new GateChecker();
        await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [topic], TransactionChecker = checker, MaxConcurrentChecks = limit,
        });

        // Every check has arrived (not a window): each started its span right before waiting for a slot, and a check that
        // gets a slot enters the checker in that same synchronous run. None beyond the limit may have started.
        await E2E.EventuallyAsync(() => Volatile.Read(ref arrived) >= checks, TimeSpan.FromSeconds(20), "every check to arrive");
        await E2E.EventuallyAsync(() => Volatile.Read(ref checker.Started) >= limit, TimeSpan.FromSeconds(20), "the first checks to start");
        Assert.Equal(limit, Volatile.Read(ref checker.Started));

        checker.Release();
        await E2E.EventuallyAsync(() => decisions.Count == checks, TimeSpan.FromSeconds(30), "an answer to every check");
        Assert.Equal(limit, checker.MostAtOnce);
        Assert.All(decisions, d => Assert.Equal(Apache.Rocketmq.V2.TransactionResolution.Commit, d.Resolution));
        Assert.Equal(checks, decisions.Select(d => d.TransactionId).Distinct().Count());
    }

    [Fact]
    public async Task MaxConcurrentChecks_below_one_is_refused()
        => await Assert.ThrowsAsync<ArgumentOutOfRangeException>(() => Producer.StartAsync(ProducerOptions.Default with { MaxConcurrentChecks = 0 }));
}
