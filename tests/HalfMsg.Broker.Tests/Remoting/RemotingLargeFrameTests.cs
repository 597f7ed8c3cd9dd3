using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// Review 2026-12-02, edges 6 and 7. The broker raised Kestrel's socket read buffer to 16 MiB so that a Remoting frame
/// could wait whole in the transport's pipe: a setting shared by every port, so the gRPC and admin ports got 16 MiB input
/// buffers too. And any peer could park a 16 MiB frame per connection by sending it slowly. Now the read buffer keeps
/// its default, and large frames are collected by the session against a budget for all connections, and must keep coming.
/// </summary>
public sealed class RemotingLargeFrameTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-largeframe-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;

    public async Task InitializeAsync() => _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 2 });

    public async Task DisposeAsync()
    {
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    /// <summary>A session on pipes (the pipe into it with the socket transport's 1 MiB pause threshold).</summary>
    private sealed class Connection : IAsyncDisposable
    {
        public readonly Pipe ToServer = new(new PipeOptions(pauseWriterThreshold: 1024 * 1024, resumeWriterThreshold: 512 * 1024));
        public readonly Pipe ToClient = new();
        public readonly Task Run;

        public Connection(RemotingServer server)
            => Run = new RemotingSession(new DuplexPipe(ToServer.Reader, ToClient.Writer), server, null, null, nameServerOnly: false).RunAsync(CancellationToken.None);

        /// <summary>Writes in 64 KiB pieces, as the socket transport fills its pipe.</summary>
        public async Task WriteAsync(ReadOnlyMemory<byte> bytes)
        {
            for (int at = 0; at < bytes.Length; at += 64 * 1024)
                await ToServer.Writer.WriteAsync(bytes[at..Math.Min(bytes.Length, at + 64 * 1024)]).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }

        public async Task<RemotingCommand> ReadResponseAsync()
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            while (true)
            {
                var result = await ToClient.Reader.ReadAsync(cts.Token);
                var buffer = result.Buffer;
                if (RemotingFrame.TryReadFrame(ref buffer, RemotingFrame.DefaultMaxFrameLength, out var frame))
                {
                    ToClient.Reader.AdvanceTo(buffer.Start);
                    return frame;
                }
                Assert.False(result.IsCompleted, "the connection closed before answering");
                ToClient.Reader.AdvanceTo(buffer.Start, buffer.End);
            }
        }

        public async ValueTask DisposeAsync()
        {
            await ToServer.Writer.CompleteAsync();
            await Run.WaitAsync(TimeSpan.FromSeconds(30));
        }
    }

    private static byte[] SendFrame(int bodyBytes)
    {
        var request = RemotingCommand.Request(RequestCode.SendMessageV2, RemotingBroker.SendHeader("PG", "large", RemotingBroker.Props()), new byte[bodyBytes]);
        request.Opaque = 7;
        request.Version = RemotingTestClient.JavaClientVersion;
        return RemotingFrame.ToArray(request).ToArray();
    }

    [Fact]
    public async Task The_broker_leaves_the_socket_read_buffer_of_every_port_at_Kestrels_default()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-largeframe-host-" + Guid.NewGuid().ToString("N"));
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(), "--http-port", P(), "--remoting-port", P(), "--namesrv-port", "0"]);
        try
        {
            long? configured = host.Services.GetRequiredService<IOptions<SocketTransportOptions>>().Value.MaxReadBufferSize;
            Assert.Equal(new SocketTransportOptions().MaxReadBufferSize, configured);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }

        static string P() => FreePorts.Next().ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task A_frame_larger_than_the_socket_read_buffer_is_read_and_answered_over_tcp()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-largeframe-tcp-" + Guid.NewGuid().ToString("N"));
        int remotingPort = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
            "--remoting-port", P(remotingPort), "--namesrv-port", "0", "--max-message-size", "12MiB"]);
        try
        {
            await using var client = await RemotingTestClient.ConnectAsync(remotingPort);
            var r = await client.InvokeAsync(RequestCode.SendMessageV2, RemotingBroker.SendHeader("PG", "large", RemotingBroker.Props()), new byte[10 * 1024 * 1024]);
            Assert.Equal(ResponseCode.Success, r.Code);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }

        static string P(int port) => port.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    [Fact]
    public async Task A_large_frame_arriving_in_pieces_is_collected_answered_and_its_bytes_given_back()
    {
        var server = new RemotingServer(_engine, new RemotingOptions(), NullLoggerFactory.Instance);
        await using var c = new Connection(server);
        await c.WriteAsync(SendFrame(3 * 1024 * 1024));
        var response = await c.ReadResponseAsync();
        Assert.Equal(ResponseCode.Success, response.Code);
        Assert.Equal(0, server.PartialFrames.Used);
    }

    [Fact]
    public async Task A_large_frame_that_stops_arriving_closes_its_connection_and_gives_its_bytes_back()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { FrameStallTimeout = TimeSpan.FromMilliseconds(300) }, NullLoggerFactory.Instance);
        var c = new Connection(server);
        var frame = SendFrame(8 * 1024 * 1024);
        await c.WriteAsync(frame.AsMemory(0, 600 * 1024));
        await c.Run.WaitAsync(TimeSpan.FromSeconds(30));         // closed by the broker, not by the test
        Assert.Equal(0, server.PartialFrames.Used);
    }

    [Fact]
    public async Task A_large_frame_that_arrives_too_slowly_closes_its_connection()
    {
        var clock = new ManualClock();
        var server = new RemotingServer(_engine, new RemotingOptions { FrameGracePeriod = TimeSpan.FromSeconds(10) }, NullLoggerFactory.Instance) { Time = clock };
        var c = new Connection(server);
        var frame = SendFrame(8 * 1024 * 1024);
        await c.WriteAsync(frame.AsMemory(0, 400 * 1024));
        clock.Advance(TimeSpan.FromSeconds(5));                  // within the grace period: fine
        await c.WriteAsync(frame.AsMemory(400 * 1024, 100 * 1024));
        Assert.False(c.Run.IsCompleted);
        clock.Advance(TimeSpan.FromSeconds(60));                 // 600 KiB in 65 s: below 64 KiB/s
        await c.WriteAsync(frame.AsMemory(500 * 1024, 100 * 1024));
        await c.Run.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(0, server.PartialFrames.Used);
    }

    [Fact]
    public async Task Large_frames_past_the_budget_for_all_connections_close_theirs_and_the_others_go_on()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxPartialFrameBytes = 1024 * 1024 }, NullLoggerFactory.Instance);
        await using var first = new Connection(server);
        var second = new Connection(server);
        var big = SendFrame(2 * 1024 * 1024);
        // The first holds at most twice what it sent (its buffer doubles), 600 KiB; the second's 800 KiB cannot fit beside it.
        await first.WriteAsync(big.AsMemory(0, 300 * 1024));
        await WaitUntilAsync(() => server.PartialFrames.Used >= 300 * 1024);
        await second.WriteAsync(big.AsMemory(0, 800 * 1024));
        await second.Run.WaitAsync(TimeSpan.FromSeconds(30));    // over the budget: closed
        Assert.False(first.Run.IsCompleted);
        // The closed connection gave its bytes back; the first one's are still held.
        await WaitUntilAsync(() => server.PartialFrames.Used <= 600 * 1024);
        Assert.InRange(server.PartialFrames.Used, 300 * 1024, 600 * 1024);
    }

    [Fact]
    public async Task Inflated_bodies_count_against_the_connections_in_flight_limit()
    {
        // Review 2026-12-02, edges 6: the in-flight limit counted bodies as received, so 4 KiB zlib bodies that inflate
        // to the maximum message size (4 MiB) each got around it. One such body alone is past a 2 MiB limit (until
        // 2026-12-03 this test sent four pipelined against 8 MiB, which passed whenever the first was durable before the
        // third was read); a body that inflates to less is stored.
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = 2L * 1024 * 1024 }, NullLoggerFactory.Instance);
        await using var c = new Connection(server);
        static byte[] Zip(int inflated)
        {
            var zipped = new MemoryStream();
            using (var z = new System.IO.Compression.ZLibStream(zipped, System.IO.Compression.CompressionLevel.SmallestSize, leaveOpen: true))
                z.Write(new byte[inflated]);
            Assert.True(zipped.Length < 16 * 1024);
            return zipped.ToArray();
        }

        var codes = new List<int>();
        foreach (var (body, opaque) in new[] { (Zip(4 * 1024 * 1024 - 1024), 100), (Zip(1024 * 1024), 101) })
        {
            var request = RemotingCommand.Request(RequestCode.SendMessageV2,
                RemotingBroker.SendHeader("PG", "zipped", RemotingBroker.Props(), sysFlag: MessageSysFlag.Compressed | MessageSysFlag.CompressionZlib), body);
            request.Opaque = opaque;
            request.Version = RemotingTestClient.JavaClientVersion;
            await c.WriteAsync(RemotingFrame.ToArray(request));
            codes.Add((await c.ReadResponseAsync()).Code);
        }
        Assert.Equal([ResponseCode.SystemBusy, ResponseCode.Success], codes);
    }

    private static async Task WaitUntilAsync(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not met within 30 s");
            await Task.Delay(10);
        }
    }
}
