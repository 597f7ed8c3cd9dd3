using System.Collections.Concurrent;
using System.Diagnostics;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>Lease renewal of a push consumer's slow handler against a scripted broker.</summary>
public sealed class PushConsumerLeaseTests
{
    [Fact]
    public async Task A_failed_lease_renewal_is_retried_before_the_lease_ends()
    {
        TimeSpan lease = TimeSpan.FromSeconds(10); // renewed every 5 s
        var clock = Stopwatch.StartNew();
        long deliveredAtMs = -1;
        int delivered = 0;
        var renewals = new ConcurrentQueue<(long AtMs, ChangeInvisibleDurationRequest Request)>();
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(new Settings(), s =>
        {
            s.OnReceive = (_, stream, ctx) =>
            {
                bool first = Interlocked.Exchange(ref delivered, 1) == 0;
                if (first) Volatile.Write(ref deliveredAtMs, clock.ElapsedMilliseconds);
                return FakeBrokers.AnswerReceiveAsync(stream, ctx, first ? [FakeBrokers.Delivered("t", "id-1", "rh-1")] : [], TimeSpan.FromMilliseconds(500));
            };
            s.OnChangeInvisibleDuration = (request, _) =>
            {
                renewals.Enqueue((clock.ElapsedMilliseconds, request));
                // The first renewal fails (a broker restarting, a request timing out); later ones succeed.
                return Task.FromResult(renewals.Count == 1
                    ? new ChangeInvisibleDurationResponse { Status = new Status { Code = Code.InternalError, Message = "try again" }, ReceiptHandle = request.ReceiptHandle }
                    : new ChangeInvisibleDurationResponse { Status = new Status { Code = Code.Ok }, ReceiptHandle = "rh-" + (renewals.Count + 1) });
            };
            s.OnAckMessage = (_, _) => Task.FromResult(new AckMessageResponse { Status = new Status { Code = Code.Ok } });
        });
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            InvisibleDuration = lease,
            Handler = async (_, _) =>
            {
                await release.Task; // a slow handler, running past several renewals
                return ConsumeResult.Success;
            },
        });
        try
        {
            await E2E.EventuallyAsync(() => renewals.Count >= 2, TimeSpan.FromSeconds(20), "a second lease renewal");
            (long failedAt, _) = renewals.First();
            (long retriedAt, ChangeInvisibleDurationRequest retry) = renewals.Skip(1).First();
            long leaseEndsAt = Volatile.Read(ref deliveredAtMs) + (long)lease.TotalMilliseconds;
            Assert.True(retriedAt < leaseEndsAt - 2000,
                $"the renewal that failed at {failedAt} ms was retried at {retriedAt} ms; the lease from the receive at {deliveredAtMs} ms ends at {leaseEndsAt} ms, so the message would be redelivered while its handler runs");
            Assert.Equal("rh-1", retry.ReceiptHandle);
            Assert.Equal(lease, retry.InvisibleDuration.ToTimeSpan());
        }
        finally
        {
            release.TrySetResult();
        }
    }
}
