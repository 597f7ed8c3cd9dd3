using System.Diagnostics;
using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore.Transport;
using Microsoft.Extensions.Logging.Abstractions;
using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>
/// The move back of a multi-address endpoint (<see cref="ClientConfig.FailbackInterval"/>): the addresses before the
/// current one are probed in order, on the client's own timer, and calls and the Telemetry stream move to the first
/// that answers (the afternoon session of 2026-12-07).
/// </summary>
public sealed class AddressFailbackTests
{
    private const string ProbePath = "/halfmsg.client.v1.AddressProbe/Probe";

    // No address here is silent (they refuse, or answer): a bound a loaded machine's Kestrel answers its connections
    // within. At 300 ms a call to the answering address failed now and then beside stress-ng --cpu 2 ("did not answer
    // the HTTP/2 connection preface within 300 ms"), and with it the test.
    private static readonly TimeSpan ConnectTimeout = TimeSpan.FromSeconds(2);

    private static AsyncUnaryCall<HeartbeatResponse> Heartbeat(MessagingService.MessagingServiceClient c, CallOptions o) =>
        c.HeartbeatAsync(new HeartbeatRequest(), o);

    /// <summary>A loopback port a server had and freed: connections to it are refused until a test starts one there.</summary>
    private static async Task<int> FreedPortAsync()
    {
        await using var gone = await TestGrpcServer.StartAsync(_ => { });
        return gone.Port;
    }

    private static Task<TestGrpcServer> CountingHeartbeatsAsync(Action counted, int port = 0) =>
        TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            counted();
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, port);

    [Fact]
    public async Task With_three_addresses_a_client_on_the_third_moves_to_the_second_when_it_answers_while_the_first_does_not()
    {
        // Until the afternoon session of 2026-12-07 only the first address was probed: a client on the third whose
        // second came back stayed on the third, though the second is preferred over it.
        int onFirst = 0, onSecond = 0, onThird = 0;
        await using var third = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onThird));
        int firstPort = await FreedPortAsync(), secondPort = await FreedPortAsync();
        var endpoint = Endpoint.Parse($"127.0.0.1:{firstPort};127.0.0.1:{secondPort};{third.Endpoint}");
        using var channel = new RpcChannel(new ClientConfig(endpoint.ToString(), null, TimeSpan.FromSeconds(20), null, null,
            connectTimeout: ConnectTimeout, failbackInterval: TimeSpan.FromMilliseconds(500)));

        await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        Assert.Equal(2, channel.CurrentIndex(endpoint));

        await using var second = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onSecond), secondPort);
        await E2E.EventuallyAsync(async () =>
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
            return Volatile.Read(ref onSecond) > 0;
        }, TimeSpan.FromSeconds(10), $"calls moved from the third address to the second, which answers again (current index: {channel.CurrentIndex(endpoint)})");
        Assert.Equal(1, channel.CurrentIndex(endpoint));
        Assert.Contains(second.Paths, p => p == ProbePath);

        int thirdBefore = Volatile.Read(ref onThird);
        for (int i = 0; i < 5; i++)
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        }

        Assert.Equal(thirdBefore, Volatile.Read(ref onThird)); // the second is preferred over the third

        // The first comes back too: preferred over the second.
        await using var first = await CountingHeartbeatsAsync(() => Interlocked.Increment(ref onFirst), firstPort);
        await E2E.EventuallyAsync(async () =>
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
            return Volatile.Read(ref onFirst) > 0;
        }, TimeSpan.FromSeconds(10), "calls moved from the second address to the first, which answers again");
        Assert.Equal(0, channel.CurrentIndex(endpoint));
    }

    [Fact]
    public async Task A_client_making_no_calls_moves_its_telemetry_stream_back_to_the_first_address_once_it_answers()
    {
        // A producer that holds only its Telemetry stream (for check-backs), or an idle consumer, makes no calls. Until
        // the afternoon session of 2026-12-07 the failback probe was started by a call, and such a client stayed on the
        // second address for good: the first broker, back, could never reach it with a check-back.
        int firstStreams = 0, secondStreams = 0;
        await using var second = await TestGrpcServer.StartAsync(s => s.OnTelemetry = Telemetry(() => Interlocked.Increment(ref secondStreams)));
        int firstPort = await FreedPortAsync();
        var endpoint = Endpoint.Parse($"127.0.0.1:{firstPort};{second.Endpoint}");
        using var channel = new RpcChannel(new ClientConfig(endpoint.ToString(), null, TimeSpan.FromSeconds(20), null, null,
            connectTimeout: ConnectTimeout, failbackInterval: TimeSpan.FromMilliseconds(500)));
        int changes = 0;
        channel.AddressChanged += _ => Interlocked.Increment(ref changes);
        var session = new TelemetrySession(channel, endpoint, () => new Settings(), _ => { }, null, NullLogger.Instance);
        try
        {
            session.Start();
            await E2E.EventuallyAsync(() => Volatile.Read(ref secondStreams) > 0, TimeSpan.FromSeconds(15),
                "the Telemetry stream on the second address, the first refusing");
            Assert.Equal(1, Volatile.Read(ref changes));

            await using var first = await TestGrpcServer.StartAsync(s => s.OnTelemetry = Telemetry(() => Interlocked.Increment(ref firstStreams)), firstPort);
            await E2E.EventuallyAsync(() => Volatile.Read(ref firstStreams) > 0, TimeSpan.FromSeconds(15),
                $"the Telemetry stream moved back to the first address with no call made (address changes: {Volatile.Read(ref changes)}, probes there: {first.Paths.Count(p => p == ProbePath)})");
            Assert.Equal(0, channel.CurrentIndex(endpoint));
            Assert.Equal(2, Volatile.Read(ref changes));
            Assert.Contains(first.Paths, p => p == ProbePath);
        }
        finally
        {
            await session.DisposeAsync();
        }
    }

    [Fact]
    public async Task The_failback_probe_runs_outside_the_context_of_the_call_that_moved_the_endpoint_away()
    {
        // The failback timer is made by the call whose failure moved the endpoint away, and a timer runs its callback in
        // the execution context of its maker: every probe then carried that call's trace (its traceparent header: a
        // span of the broker's in a trace long ended, every FailbackInterval for as long as the endpoint stayed away),
        // and the timer held that call's AsyncLocals for the client's lifetime. Until the afternoon session of 2026-12-07.
        using var source = new ActivitySource("HalfMsg.Client.Tests.FailbackProbe." + Guid.NewGuid().ToString("N"));
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == source.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
        };
        ActivitySource.AddActivityListener(listener);

        await using var second = await CountingHeartbeatsAsync(() => { });
        int firstPort = await FreedPortAsync();
        var endpoint = Endpoint.Parse($"127.0.0.1:{firstPort};{second.Endpoint}");
        using var channel = new RpcChannel(new ClientConfig(endpoint.ToString(), null, TimeSpan.FromSeconds(20), null, null,
            connectTimeout: ConnectTimeout, failbackInterval: TimeSpan.FromMilliseconds(300)));

        string traceId;
        using (Activity operation = source.StartActivity("the application's operation")!)
        {
            traceId = operation.TraceId.ToHexString();
            await channel.UnaryAsync(endpoint, Heartbeat, null, default); // the first refuses: moved to the second
            Assert.Equal(1, channel.CurrentIndex(endpoint));
        }

        await using var first = await CountingHeartbeatsAsync(() => { }, firstPort);
        await E2E.EventuallyAsync(() => channel.CurrentIndex(endpoint) == 0, TimeSpan.FromSeconds(15), "moved back to the first address");
        Assert.Contains(first.Paths, p => p == ProbePath);
        Assert.DoesNotContain(first.TraceParents, t => t.TraceParent.Contains(traceId, StringComparison.Ordinal));
    }

    [Fact]
    public async Task A_client_disposed_while_a_failback_probe_looks_up_its_channel_leaves_no_channel_open()
    {
        // Dispose between the probe's disposed check and its channel look-up (here run by the test's seam there, as
        // another thread's Dispose may; the look-up then made a new channel, Dispose having cleared them): until the evening session of 2026-12-07 that channel was never
        // disposed, and the probe's connection to the first address, back, stayed open with its handler after Dispose.
        await using var second = await CountingHeartbeatsAsync(() => { });
        int firstPort = await FreedPortAsync();
        var endpoint = Endpoint.Parse($"127.0.0.1:{firstPort};{second.Endpoint}");
        var channel = new RpcChannel(new ClientConfig(endpoint.ToString(), null, TimeSpan.FromSeconds(20), null, null,
            connectTimeout: ConnectTimeout, failbackInterval: TimeSpan.FromMilliseconds(300)));
        try
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default); // the first refuses: moved to the second
            Assert.Equal(1, channel.CurrentIndex(endpoint));

            await using var first = await CountingHeartbeatsAsync(() => { }, firstPort);
            var disposed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            channel.ChannelRequestedForTests = address =>
            {
                if (address.Equals(endpoint.Address(0)) && !disposed.Task.IsCompleted)
                {
                    channel.Dispose(); // as the probe looks up the first address's channel
                    disposed.TrySetResult();
                }
            };

            await disposed.Task.WaitAsync(TimeSpan.FromSeconds(15));
            await E2E.EventuallyAsync(() => !channel.ProbingForTests(endpoint), TimeSpan.FromSeconds(15), "the probe ended");
            Assert.Equal(0, channel.OpenChannelsForTests);
            Assert.DoesNotContain(first.Paths, p => p == ProbePath); // no probe went out after Dispose
        }
        finally
        {
            channel.Dispose();
        }
    }

    // A Telemetry stream that answers the client's Settings, counting the streams opened.
    private static Func<IAsyncStreamReader<TelemetryCommand>, IServerStreamWriter<TelemetryCommand>, ServerCallContext, Task> Telemetry(Action opened) =>
        async (requests, responses, ctx) =>
        {
            opened();
            while (await requests.MoveNext(ctx.CancellationToken))
            {
                if (requests.Current.Settings is not null)
                {
                    await responses.WriteAsync(new TelemetryCommand { Status = new Status { Code = Code.Ok }, Settings = new Settings() });
                }
            }
        };
}
