using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>
/// A send to a topic the producer did not declare re-sends the Settings naming it, so the broker checks that topic's
/// halves back with this producer (it registers a producer's Telemetry stream only for the topics its Settings name).
/// A caller cancelled while that write waited must not undo the declaration, nor stop the write to other brokers
/// (found by review 2026-12-07). The fake brokers record the topics of every Settings their Telemetry streams carry.
/// </summary>
public sealed class DeclaredTopicCancellationTests
{
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    /// <summary>Until 2026-12-07 the cancelled first send took the topic out of the Settings again, though its write went
    /// on and a concurrent send to the topic (which did not wait) had stored its message; the next Settings (a reconnect,
    /// the 5-minute resync, here: a send to another new topic) no longer named it, so a half of it had no check-back path
    /// to this producer.</summary>
    [Fact]
    public async Task A_cancelled_first_send_leaves_the_topic_declared()
    {
        string declared = E2E.Unique("decl"), late = E2E.Unique("late"), later = E2E.Unique("later");
        var seen = new ConcurrentQueue<string[]>();
        await using TestGrpcServer server = await TestGrpcServer.StartAsync(s => Serve(s, seen, other: null));
        using var slow = new SlowTelemetryWrites();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [declared],
        }, slow, CancellationToken.None);
        await E2E.EventuallyAsync(() => !seen.IsEmpty, Within, "the producer's first Settings");

        slow.Stall();                                     // the Settings write for the new topic waits
        using var cancel = new CancellationTokenSource();
        Task first = producer.SendAsync(new ProducerMessage(late, "first"), cancel.Token);
        Task concurrent;
        try
        {
            await slow.Stalled.Task.WaitAsync(Within);
            concurrent = producer.SendAsync(new ProducerMessage(late, "concurrent"));
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(Within));
        }
        finally
        {
            slow.Release();
        }

        await concurrent.WaitAsync(Within);               // a message of the topic is stored

        // The Settings as a reconnect or the resync would send them now.
        await producer.SendAsync(new ProducerMessage(later, "x")).WaitAsync(Within);
        await E2E.EventuallyAsync(() => seen.Any(t => t.Contains(later)), Within, "the Settings naming the next new topic");
        string[] now = seen.Last(t => t.Contains(later));
        Assert.True(now.Contains(late), $"the Settings name [{string.Join(", ", now)}], not '{late}'"); // before 2026-12-07: not
    }

    /// <summary>Until 2026-12-07 the Settings were written to one broker after another with the caller's token, so a
    /// send cancelled while the first write waited never wrote them to the other brokers of the topic's route: those
    /// had no check-back path to this producer for the topic until the next reconnect or resync.</summary>
    [Fact]
    public async Task A_cancelled_first_send_still_declares_the_topic_to_every_broker()
    {
        string declared = E2E.Unique("decl"), late = E2E.Unique("late");
        var seenA = new ConcurrentQueue<string[]>();
        var seenB = new ConcurrentQueue<string[]>();
        await using TestGrpcServer b = await TestGrpcServer.StartAsync(s => Serve(s, seenB, other: null));
        var bEndpoints = new Endpoints
        {
            Scheme = AddressScheme.Ipv4, Addresses = { new Address { Host = "127.0.0.1", Port = b.Port } },
        };
        await using TestGrpcServer a = await TestGrpcServer.StartAsync(s => Serve(s, seenA, other: bEndpoints));
        using var slow = new SlowTelemetryWrites();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = a.Endpoint, Topics = [declared],
        }, slow, CancellationToken.None);
        await producer.SendAsync(new ProducerMessage(declared, "x")).WaitAsync(Within); // the route names both brokers
        await E2E.EventuallyAsync(() => !seenA.IsEmpty && !seenB.IsEmpty, Within, "the producer's Settings on both brokers' streams");
        Assert.Equal(2, slow.TelemetryStreams);

        slow.Stall();
        using var cancel = new CancellationTokenSource();
        try
        {
            Task first = producer.SendAsync(new ProducerMessage(late, "first"), cancel.Token);
            await slow.Stalled.Task.WaitAsync(Within);
            cancel.Cancel();
            await Assert.ThrowsAnyAsync<OperationCanceledException>(() => first.WaitAsync(Within));
        }
        finally
        {
            slow.Release();
        }

        await E2E.EventuallyAsync(() => seenA.Any(t => t.Contains(late)) && seenB.Any(t => t.Contains(late)), TimeSpan.FromSeconds(15),
            "the Settings naming the new topic on both brokers' streams (before 2026-12-07: on the first one only)");
        Assert.Equal(2, slow.TelemetryStreams);           // written on the same streams, not by a reconnect
    }

    /// <summary>Until 2026-12-07 the Settings were written to one broker after another: while the write to one broker
    /// waited (a stream whose flow-control window is taken, a broker that stopped reading), the other brokers of the
    /// route did not hear of the new topic. Now every stream's write starts at once.</summary>
    [Fact]
    public async Task A_waiting_Settings_write_to_one_broker_does_not_hold_back_the_others()
    {
        string declared = E2E.Unique("decl"), late = E2E.Unique("late");
        var seenA = new ConcurrentQueue<string[]>();
        var seenB = new ConcurrentQueue<string[]>();
        await using TestGrpcServer b = await TestGrpcServer.StartAsync(s => Serve(s, seenB, other: null));
        var bEndpoints = new Endpoints
        {
            Scheme = AddressScheme.Ipv4, Addresses = { new Address { Host = "127.0.0.1", Port = b.Port } },
        };
        await using TestGrpcServer a = await TestGrpcServer.StartAsync(s => Serve(s, seenA, other: bEndpoints));
        using var slow = new SlowTelemetryWrites();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = a.Endpoint, Topics = [declared],
        }, slow, CancellationToken.None);
        await producer.SendAsync(new ProducerMessage(declared, "x")).WaitAsync(Within); // the route names both brokers
        await E2E.EventuallyAsync(() => !seenA.IsEmpty && !seenB.IsEmpty, Within, "the producer's Settings on both brokers' streams");

        slow.StallOne();                                  // the first Settings write for the new topic waits, the other goes
        Task send = producer.SendAsync(new ProducerMessage(late, "x"));
        try
        {
            await slow.Stalled.Task.WaitAsync(Within);
            await E2E.EventuallyAsync(() => seenA.Any(t => t.Contains(late)) || seenB.Any(t => t.Contains(late)), TimeSpan.FromSeconds(15),
                "the Settings naming the new topic on the stream whose write does not wait (before 2026-12-07: none while the first waited)");
        }
        finally
        {
            slow.Release();
        }

        await send.WaitAsync(Within);
        await E2E.EventuallyAsync(() => seenA.Any(t => t.Contains(late)) && seenB.Any(t => t.Contains(late)), Within,
            "the Settings naming the new topic on both brokers' streams");
    }

    /// <summary>A Settings write that never completes (a broker that stopped reading the stream) holds a send to the new
    /// topic for at most the request timeout, then the send goes on; the topic stays declared. Before the bound (the
    /// merge of the declaration fix on 2026-12-07) every send to the topic, concurrent ones too, waited until the stream
    /// ended.</summary>
    [Fact]
    public async Task A_Settings_write_that_never_completes_holds_a_send_to_the_new_topic_for_at_most_the_request_timeout()
    {
        string declared = E2E.Unique("decl"), late = E2E.Unique("late");
        var seen = new ConcurrentQueue<string[]>();
        await using TestGrpcServer server = await TestGrpcServer.StartAsync(s => Serve(s, seen, other: null));
        using var slow = new SlowTelemetryWrites();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = server.Endpoint, Topics = [declared], RequestTimeout = TimeSpan.FromSeconds(1),
        }, slow, CancellationToken.None);
        await E2E.EventuallyAsync(() => !seen.IsEmpty, Within, "the producer's first Settings");

        slow.Stall();                                     // the Settings write for the new topic never completes
        try
        {
            Task first = producer.SendAsync(new ProducerMessage(late, "first"));
            await slow.Stalled.Task.WaitAsync(Within);
            Task concurrent = producer.SendAsync(new ProducerMessage(late, "concurrent"));
            // Within (30 s) is far above the 1 s request timeout, far below "never".
            await Task.WhenAll(first, concurrent).WaitAsync(Within);
        }
        finally
        {
            slow.Release();
        }

        await E2E.EventuallyAsync(() => seen.Any(t => t.Contains(late)), Within, "the Settings naming the new topic once the write goes on");
    }

    // A fake broker: the route of any topic is one queue on itself (and one on other, if given); every Settings a
    // Telemetry stream carries is recorded and answered; sends and heartbeats succeed.
    private static void Serve(FakeMessagingService s, ConcurrentQueue<string[]> settings, Endpoints? other)
    {
        static MessageQueue Queue(Resource topic, int id, Endpoints endpoints) => new()
        {
            Topic = topic, Id = id, Permission = Permission.ReadWrite,
            Broker = new Apache.Rocketmq.V2.Broker { Name = "fake-" + id, Id = 0, Endpoints = endpoints },
            AcceptMessageTypes = { MessageType.Normal, MessageType.Transaction },
        };

        s.OnQueryRoute = (request, _) =>
        {
            var response = new QueryRouteResponse { Status = new Status { Code = Code.Ok }, MessageQueues = { Queue(request.Topic, 0, request.Endpoints) } };
            if (other is not null)
            {
                response.MessageQueues.Add(Queue(request.Topic, 1, other));
            }

            return Task.FromResult(response);
        };
        s.OnTelemetry = async (requests, responses, ctx) =>
        {
            while (await requests.MoveNext(ctx.CancellationToken))
            {
                if (requests.Current.Settings is { } received)
                {
                    settings.Enqueue([.. (received.Publishing?.Topics ?? []).Select(t => t.Name)]);
                    await responses.WriteAsync(new TelemetryCommand { Status = new Status { Code = Code.Ok }, Settings = new Settings() });
                }
            }
        };
        s.OnHeartbeat = (_, _) => Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        s.OnSendMessage = (request, _) =>
        {
            var response = new SendMessageResponse { Status = new Status { Code = Code.Ok } };
            response.Entries.AddRange(request.Messages.Select(m => new SendResultEntry
            {
                Status = new Status { Code = Code.Ok }, MessageId = m.SystemProperties.MessageId, TransactionId = "tx-" + m.SystemProperties.MessageId,
            }));
            return Task.FromResult(response);
        };
    }
}
