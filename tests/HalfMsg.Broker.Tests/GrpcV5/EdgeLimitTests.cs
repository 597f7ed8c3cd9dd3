using System.Diagnostics;
using System.Globalization;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// The gRPC port's limits, each against a real broker process (with credentials, so a caller can be a stranger):
/// streams per connection, connections, flow-control windows, the minimum data rate, the 64 KiB cut for an
/// unauthenticated caller, and the review's attack (100 streams × 4.9 MB on one unauthenticated connection) measured
/// in the broker's resident memory.
/// </summary>
public sealed class EdgeLimitTests(AuthBrokerFixture fixture, ITestOutputHelper output) : IClassFixture<AuthBrokerFixture>
{
    private static readonly Dictionary<string, string> Stranger = new() { [RocketMqHeaders.ClientId] = "stranger" };

    private Dictionary<string, string> Signed()
    {
        string dateTime = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
        return new Dictionary<string, string>
        {
            [RocketMqHeaders.ClientId] = "friend",
            [RocketMqHeaders.DateTime] = dateTime,
            [RocketMqHeaders.Authorization] = MqSignature.Sign(AuthBrokerFixture.AccessKey, fixture.Secret, dateTime),
        };
    }

    private static async Task<RawHttp2.Frame> NextFrameAsync(RawHttp2 h2, Func<RawHttp2.Frame, bool> wanted, TimeSpan within)
    {
        using var cts = new CancellationTokenSource(within);
        while (true)
        {
            RawHttp2.Frame? frame = await h2.ReadFrameAsync(cts.Token);
            Assert.True(frame is not null, "the server closed the connection");
            if (wanted(frame.Value))
            {
                return frame.Value;
            }
        }
    }

    private static Task<RawHttp2.Frame> ServerSettingsAsync(RawHttp2 h2) =>
        NextFrameAsync(h2, f => f.Type == RawHttp2.Settings && (f.Flags & 0x1) == 0, TimeSpan.FromSeconds(20));

    [Fact]
    public async Task The_gRPC_port_advertises_200_streams_a_256_KiB_stream_window_and_a_1_MiB_connection_window()
    {
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(fixture.Broker.GrpcPort);
        Dictionary<ushort, uint> settings = (await ServerSettingsAsync(h2)).SettingsValues();
        RawHttp2.Frame window = await NextFrameAsync(h2, f => f.Type == RawHttp2.WindowUpdate && f.StreamId == 0, TimeSpan.FromSeconds(20));

        Assert.Equal(200u, settings[RawHttp2.SettingsMaxConcurrentStreams]);
        Assert.Equal(256u * 1024, settings[RawHttp2.SettingsInitialWindowSize]);
        // The connection window starts at 65,535 (RFC 9113 §6.9.2); the server raises it to 1 MiB.
        Assert.Equal(1024u * 1024, 65_535 + (System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(window.Payload) & 0x7fffffff));
    }

    [Fact]
    public async Task A_201st_concurrent_stream_on_one_connection_is_refused_and_the_200_others_are_not()
    {
        await using RawHttp2 h2 = await RawHttp2.ConnectAsync(fixture.Broker.GrpcPort);
        await ServerSettingsAsync(h2);
        await h2.SendSettingsAckAsync();

        // 201 unary calls whose bodies never come: each stays open until the minimum data rate ends it (seconds).
        for (int i = 0; i < 201; i++)
        {
            await h2.SendGrpcHeadersAsync(1 + (2 * i), GrpcMethods.Heartbeat);
        }

        RawHttp2.Frame reset = await NextFrameAsync(h2, f => f.Type == RawHttp2.RstStream, TimeSpan.FromSeconds(20));
        Assert.Equal(401, reset.StreamId);
        Assert.Equal(RawHttp2.RefusedStream, reset.ErrorCode);

        // Still serving other callers.
        using var client = new GrpcTestClient(fixture.Broker.Endpoint);
        var heartbeat = await client.UnaryAsync(GrpcMethods.Heartbeat, new HeartbeatRequest(), HeartbeatResponse.Parser);
        Assert.Equal(0, heartbeat.GrpcStatus);
    }

    [Fact]
    public async Task A_connection_over_the_configured_limit_is_closed_at_once_and_the_other_ports_are_not_affected()
    {
        var clock = Stopwatch.StartNew();
        await using BrokerProcess broker = await BrokerProcess.StartAsync("--grpc-max-connections", "3");
        output.WriteLine($"broker up after {clock.Elapsed.TotalSeconds:0.0} s");
        var open = new List<RawHttp2>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                RawHttp2 accepted = await RawHttp2.ConnectAsync(broker.GrpcPort);
                open.Add(accepted);
                await ServerSettingsAsync(accepted); // served: the server speaks first
            }

            await using (RawHttp2 fourth = await RawHttp2.ConnectAsync(broker.GrpcPort))
            {
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                Assert.Null(await fourth.ReadFrameAsync(cts.Token)); // closed without a word
            }

            output.WriteLine($"fourth refused after {clock.Elapsed.TotalSeconds:0.0} s");

            // The admin port has its own limit.
            using (var http = new HttpClient())
            {
                Assert.True((await http.GetAsync($"http://127.0.0.1:{broker.HttpPort}/health")).IsSuccessStatusCode);
            }

            // One goes away: a new connection is served again.
            await open[0].DisposeAsync();
            open.RemoveAt(0);
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (true)
            {
                RawHttp2 again = await RawHttp2.ConnectAsync(broker.GrpcPort);
                using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
                RawHttp2.Frame? first = await again.ReadFrameAsync(cts.Token);
                if (first is not null)
                {
                    open.Add(again);
                    Assert.Equal(RawHttp2.Settings, first.Value.Type);
                    output.WriteLine($"served again after {clock.Elapsed.TotalSeconds:0.0} s");
                    break;
                }

                await again.DisposeAsync();
                Assert.True(DateTime.UtcNow < deadline, "a connection slot was not freed after a client left");
            }

            Assert.Contains("gRPC connection refused: 3 connections already open", broker.Output);
        }
        finally
        {
            foreach (RawHttp2 h2 in open)
            {
                await h2.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task An_authenticated_sender_that_stalls_inside_a_message_is_cut_off_by_the_minimum_data_rate()
    {
        // Authenticated, so the 64 KiB cut does not apply: only the data rate (64 KiB/s after a 5 s grace) ends it.
        using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        RawGrpc.UploadOutcome outcome = await RawGrpc.StalledUploadAsync(http, fixture.Broker.Endpoint, GrpcMethods.SendMessage,
            1_000_000, 1_000, Signed(), TimeSpan.FromSeconds(60));

        output.WriteLine($"{outcome.Ended} after {outcome.Elapsed.TotalSeconds:0.0} s");
        Assert.NotNull(outcome.Ended);
        Assert.DoesNotContain("grpc-status 0", outcome.Ended, StringComparison.Ordinal);
        Assert.True(outcome.Elapsed >= TimeSpan.FromSeconds(4), "ended before the grace period: not the data rate");
    }

    [Fact]
    public async Task An_unauthenticated_sender_is_cut_off_after_64_KiB_of_a_large_message()
    {
        using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        RawGrpc.UploadOutcome outcome = await RawGrpc.StalledUploadAsync(http, fixture.Broker.Endpoint, GrpcMethods.SendMessage,
            5_000_000, 4_900_000, Stranger, TimeSpan.FromSeconds(60));

        output.WriteLine($"{outcome.Ended} after {outcome.Elapsed.TotalSeconds:0.0} s, {outcome.BytesWritten} bytes written");
        Assert.Equal("HTTP 200 grpc-status 16", outcome.Ended); // UNAUTHENTICATED, not grpc-dotnet's UNKNOWN
        // The server read 64 KiB and reset the stream: what the client could hand over is that plus the flow-control
        // window in flight and the client's own send buffers (measured: 240-500 KiB), far from the 4.9 MB it meant to send.
        Assert.InRange(outcome.BytesWritten, 0, 1024 * 1024);
    }

    [Fact]
    public async Task The_reviews_attack_100_streams_of_4_9_MB_on_one_unauthenticated_connection_keeps_broker_memory_bounded()
    {
        var resident = PeakResident.Start(fixture.Broker.Pid);

        // One HttpClient, one HTTP/2 connection (SocketsHttpHandler opens a second only when told to).
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = false }) { Timeout = Timeout.InfiniteTimeSpan };
        var started = Stopwatch.StartNew();
        RawGrpc.UploadOutcome[] outcomes = await Task.WhenAll(Enumerable.Range(0, 100).Select(_ =>
            RawGrpc.StalledUploadAsync(http, fixture.Broker.Endpoint, GrpcMethods.SendMessage, 5_000_000, 4_900_000, Stranger,
                TimeSpan.FromSeconds(90))));
        started.Stop();
        (long before, long peak) = await resident.StopAsync();
        long after = ResidentKiB(fixture.Broker.Pid);

        long written = outcomes.Sum(o => o.BytesWritten);
        string summary = string.Join(", ", outcomes.GroupBy(o => o.Ended?.Split(':')[0] ?? "(still open)").Select(g => $"{g.Key} x{g.Count()}"));
        output.WriteLine(FormattableString.Invariant(
            $"VmRSS before {before / 1024.0:0.0} MiB, peak {peak / 1024.0:0.0} MiB, after {after / 1024.0:0.0} MiB; {written / 1048576.0:0.0} MiB written by the client in {started.Elapsed.TotalSeconds:0.0} s; outcomes: {summary}"));

        Assert.All(outcomes, o => Assert.NotNull(o.Ended));                                    // every call ended...
        Assert.All(outcomes, o => Assert.DoesNotContain("grpc-status 0", o.Ended!, StringComparison.Ordinal)); // ...none completed
        Assert.All(outcomes, o => Assert.InRange(o.BytesWritten, 0, 1024 * 1024));            // none got far
        Assert.True(peak - before < 64 * 1024, $"broker memory grew by {(peak - before) / 1024} MiB (the review saw 493 MiB)");
    }

    [Fact]
    public async Task The_same_attack_by_an_authenticated_caller_is_held_to_the_connections_request_body_budget()
    {
        // An authenticated caller (or any caller with authentication off) is not cut at 64 KiB: what bounds it is the
        // connection's budget for unfinished requests (64 MiB by default), not 100 x 4.9 MB of partial messages.
        var resident = PeakResident.Start(fixture.Broker.Pid);

        var friend = Signed();
        using var http = new HttpClient(new SocketsHttpHandler { EnableMultipleHttp2Connections = false }) { Timeout = Timeout.InfiniteTimeSpan };
        RawGrpc.UploadOutcome[] outcomes = await Task.WhenAll(Enumerable.Range(0, 100).Select(_ =>
            RawGrpc.StalledUploadAsync(http, fixture.Broker.Endpoint, GrpcMethods.SendMessage, 5_000_000, 4_900_000, friend,
                TimeSpan.FromSeconds(30))));
        (long before, long peak) = await resident.StopAsync();

        int reset = outcomes.Count(o => o.Ended?.StartsWith("reset", StringComparison.Ordinal) == true);
        string summary = string.Join(", ", outcomes.GroupBy(o => o.Ended?.Split(':')[0] ?? "(still open)").Select(g => $"{g.Key} x{g.Count()}"));
        output.WriteLine(FormattableString.Invariant(
            $"VmRSS before {before / 1024.0:0.0} MiB, peak {peak / 1024.0:0.0} MiB; {outcomes.Sum(o => o.BytesWritten) / 1048576.0:0.0} MiB written; outcomes: {summary}"));

        Assert.All(outcomes, o => Assert.DoesNotContain("grpc-status 0", o.Ended ?? "", StringComparison.Ordinal)); // none completed
        Assert.True(reset >= 70, $"only {reset} of 100 streams were reset by the budget: {summary}");
        Assert.True(peak - before < 160 * 1024, $"broker memory grew by {(peak - before) / 1024} MiB (64 MiB budget; 500 MiB without it)");
    }

    /// <summary>Samples a process's VmRSS every 20 ms until stopped: the value at the start and the highest seen.</summary>
    private sealed class PeakResident
    {
        private readonly CancellationTokenSource _stop = new();
        private long _before;
        private long _peak;
        private Task _sampler = Task.CompletedTask;

        public static PeakResident Start(int pid)
        {
            var r = new PeakResident();
            r._before = r._peak = ResidentKiB(pid);
            r._sampler = Task.Run(async () =>
            {
                while (!r._stop.IsCancellationRequested)
                {
                    r._peak = Math.Max(r._peak, ResidentKiB(pid));
                    await Task.Delay(20); // the sampling interval, not a wait for a condition
                }
            });
            return r;
        }

        public async Task<(long Before, long Peak)> StopAsync()
        {
            await _stop.CancelAsync();
            await _sampler;
            _stop.Dispose();
            return (_before, _peak);
        }
    }

    private static long ResidentKiB(int pid)
    {
        foreach (string line in File.ReadLines($"/proc/{pid}/status"))
        {
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
            {
                return long.Parse(line["VmRSS:".Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture);
            }
        }

        throw new InvalidOperationException("no VmRSS in /proc/" + pid + "/status");
    }
}

/// <summary>
/// Malformed protobuf: the caller gets INVALID_ARGUMENT saying so, the broker keeps serving, and the log gets at most
/// <c>BadInputLogsPerMinute</c> Debug lines in our own category however many bad requests come.
/// </summary>
public sealed class MalformedRequestTests(AuthBrokerFixture fixture) : IClassFixture<AuthBrokerFixture>
{
    // Field 1, wire type 2 (length-delimited), length 100, then 2 bytes: truncated.
    private static readonly byte[] Truncated = [0x0A, 100, 1, 2];

    private Dictionary<string, string> Signed()
    {
        string dateTime = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
        return new Dictionary<string, string>
        {
            [RocketMqHeaders.DateTime] = dateTime,
            [RocketMqHeaders.Authorization] = MqSignature.Sign(AuthBrokerFixture.AccessKey, fixture.Secret, dateTime),
        };
    }

    [Fact]
    public async Task Malformed_requests_get_INVALID_ARGUMENT_and_a_rate_limited_Debug_line_in_our_category()
    {
        using var client = new GrpcTestClient(fixture.Broker.Endpoint);
        for (int i = 0; i < 25; i++)
        {
            var (status, message) = await client.RawUnaryAsync(GrpcMethods.SendMessage, Truncated, Signed());
            Assert.Equal((int)Grpc.Core.StatusCode.InvalidArgument, status);
            Assert.Contains("is not a valid protobuf message", message, StringComparison.Ordinal);
        }

        var (streamStatus, streamMessage) = await client.RawDuplexAsync(GrpcMethods.Telemetry, Truncated, Signed());
        Assert.Equal((int)Grpc.Core.StatusCode.InvalidArgument, streamStatus);
        Assert.Contains("is not a valid protobuf message", streamMessage, StringComparison.Ordinal);

        var heartbeat = await client.UnaryAsync(GrpcMethods.Heartbeat, new HeartbeatRequest(), HeartbeatResponse.Parser, Signed());
        Assert.Equal(Code.Ok, heartbeat.Response!.Status.Code);

        const string category = "dbug: HalfMsg.Broker.FrontEnds.GrpcV5.V5BadInput";
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!fixture.Broker.Output.Contains(category, StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        string output = fixture.Broker.Output;
        int lines = output.Split('\n').Count(l => l.Contains(category, StringComparison.Ordinal));
        Assert.InRange(lines, 1, 10); // 26 malformed requests, at most 10 lines a minute
        Assert.Contains("Malformed gRPC request to /apache.rocketmq.v2.MessagingService/SendMessage answered INVALID_ARGUMENT", output);
        Assert.DoesNotContain("fail:", output, StringComparison.Ordinal);
    }
}
