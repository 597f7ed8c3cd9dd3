using System.Globalization;
using Apache.Rocketmq.V2;
using Grpc.Core;
using BrokerMessagingService = HalfMsg.Broker.FrontEnds.GrpcV5.MessagingService;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A Telemetry stream's session keeps its answer to the client's Settings (a copy of them) for the stream's life, so
/// the Settings it takes are bounded (<see cref="BrokerMessagingService.MaxSettingsBytes"/>). Until the late-night session of
/// 2026-12-07 any Settings up to the 5 MiB message limit was kept, on each of a connection's 200 streams.
/// </summary>
public sealed class TelemetrySettingsBoundTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    private static TelemetryCommand Publishing(int topics, int nameLength)
    {
        var publishing = new Publishing();
        for (int i = 0; i < topics; i++)
            publishing.Topics.Add(new Resource { Name = i.ToString("D6", CultureInfo.InvariantCulture) + new string('t', nameLength - 6) });
        return new TelemetryCommand { Settings = new Settings { ClientType = ClientType.Producer, Publishing = publishing } };
    }

    [Fact]
    public async Task Settings_larger_than_a_stream_may_keep_are_refused_and_the_largest_a_producer_needs_are_answered()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-settingsbound-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", "0"]);
            using var client = new GrpcTestClient($"127.0.0.1:{grpcPort}");

            // 4,000 topics of 255 characters: about 1 MB, four times the most topics a producer's stream registers.
            var tooLarge = Publishing(4000, 255);
            Assert.True(tooLarge.Settings.CalculateSize() > BrokerMessagingService.MaxSettingsBytes);
            var refused = await client.ServerStreamAsync(GrpcMethods.Telemetry, tooLarge, TelemetryCommand.Parser);
            Assert.Equal((int)Grpc.Core.StatusCode.InvalidArgument, refused.GrpcStatus);
            Assert.Contains(BrokerMessagingService.MaxSettingsBytes.ToString(CultureInfo.InvariantCulture), refused.GrpcMessage, StringComparison.Ordinal);
            Assert.DoesNotContain(refused.Responses, r => r.Settings is not null);

            // The most a producer registers (1,024 topics) with the longest names is still answered with its Settings.
            var largest = Publishing(1024, 255);
            var answered = await client.ServerStreamAsync(GrpcMethods.Telemetry, largest, TelemetryCommand.Parser);
            Assert.Equal(0, answered.GrpcStatus);
            Assert.Contains(answered.Responses, r => r.Settings is { Publishing: not null });
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// The Settings the streams of one connection keep are bounded in all
    /// (<see cref="BrokerMessagingService.MaxKeptSettingsBytesPerConnection"/>, four of the largest), and given back when
    /// a stream ends. Until the late-night session of 2026-12-07 each stream's were bounded only: 200 streams of 512 KiB
    /// each were kept for the connection's life.
    /// </summary>
    [Fact]
    public async Task Settings_a_connections_streams_would_keep_past_its_bound_end_their_stream_until_one_of_its_streams_ends()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-settingsbound-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next();
        var open = new List<AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand>>();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", "0"]);
            // One client, one HTTP/2 connection: its streams are far fewer than the connection's stream limit.
            using var client = new GrpcTestClient($"127.0.0.1:{grpcPort}");

            // 1,900 topics of 255 characters: just under the bound of one stream's Settings, so four fit the connection's.
            var large = Publishing(1900, 255);
            int size = large.Settings.CalculateSize();
            Assert.InRange(size, BrokerMessagingService.MaxSettingsBytes * 9 / 10, BrokerMessagingService.MaxSettingsBytes);
            int fit = BrokerMessagingService.MaxKeptSettingsBytesPerConnection / BrokerMessagingService.MaxSettingsBytes;
            Assert.True((fit + 1L) * size > BrokerMessagingService.MaxKeptSettingsBytesPerConnection);

            for (int i = 0; i < fit; i++)
            {
                // Each stream its own client id: a second stream of one id would replace (end) the first.
                var call = client.Duplex<TelemetryCommand, TelemetryCommand>(GrpcMethods.Telemetry, TelemetryCommand.Parser,
                    new Dictionary<string, string> { [RocketMqHeaders.ClientId] = $"kept-{i}@1@0@x" }, timeout: TimeSpan.FromMinutes(2));
                open.Add(call);
                await call.RequestStream.WriteAsync(large);
                Assert.True(await call.ResponseStream.MoveNext());
                Assert.Equal(Code.Ok, call.ResponseStream.Current.Status.Code);
                Assert.NotNull(call.ResponseStream.Current.Settings?.Publishing);
            }

            // One more stream of such Settings would pass the connection's bound: it ends, with the bound in its status.
            var extra = new Dictionary<string, string> { [RocketMqHeaders.ClientId] = "kept-extra@1@0@x" };
            var refused = await client.ServerStreamAsync(GrpcMethods.Telemetry, large, TelemetryCommand.Parser, extra);
            Assert.Equal((int)Grpc.Core.StatusCode.ResourceExhausted, refused.GrpcStatus);
            Assert.Contains(BrokerMessagingService.MaxKeptSettingsBytesPerConnection.ToString(CultureInfo.InvariantCulture), refused.GrpcMessage, StringComparison.Ordinal);
            Assert.DoesNotContain(refused.Responses, r => r.Settings is not null);

            // Small Settings still fit beside them (the bound is in bytes, not streams).
            var small = await client.ServerStreamAsync(GrpcMethods.Telemetry, Publishing(3, 20), TelemetryCommand.Parser,
                new Dictionary<string, string> { [RocketMqHeaders.ClientId] = "kept-small@1@0@x" });
            Assert.Equal(0, small.GrpcStatus);

            // A stream that ends gives back what it kept: the refused Settings are answered now. (The stream's status
            // comes after its session closed, so no wait is needed.)
            await open[0].RequestStream.CompleteAsync();
            while (await open[0].ResponseStream.MoveNext())
            {
            }

            var answered = await client.ServerStreamAsync(GrpcMethods.Telemetry, large, TelemetryCommand.Parser, extra);
            Assert.Equal(0, answered.GrpcStatus);
            Assert.Contains(answered.Responses, r => r.Settings is { Publishing: not null });
        }
        finally
        {
            foreach (var call in open) call.Dispose();
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Settings read by a stream whose session was ended meanwhile (here replaced by a newer stream of its client id)
    /// end the stream with ABORTED and why, as the read loop does, keeping nothing: until the late-night session of
    /// 2026-12-07 they ended it with RESOURCE_EXHAUSTED naming the connection's bound of kept Settings, which nothing
    /// had passed (found by review).
    /// </summary>
    [Fact]
    public async Task Settings_of_a_session_ended_meanwhile_end_its_stream_with_why_it_ended_not_the_connections_bound()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-settingsended-" + Guid.NewGuid().ToString("N"));
        var engine = await HalfMsg.Broker.Core.BrokerEngine.OpenAsync(new HalfMsg.Broker.Core.CoreOptions { DataDir = dataDir, QueuesPerTopic = 1 });
        try
        {
            var service = new BrokerMessagingService(engine, new HalfMsg.Broker.FrontEnds.GrpcV5.GrpcV5Options(),
                new ListLogger<BrokerMessagingService>());
            var budget = new HalfMsg.Broker.FrontEnds.GrpcV5.KeptSettingsBudget(BrokerMessagingService.MaxKeptSettingsBytesPerConnection);
            var session = new HalfMsg.Broker.FrontEnds.GrpcV5.TelemetrySession("ended@1@0@x", 16 * 1024 * 1024) { KeptSettings = budget };
            session.End("replaced by a newer Telemetry stream with the same client id");

            var ex = Assert.Throws<RpcException>(() => service.OnSettings(session, Publishing(3, 20).Settings));

            Assert.Equal(StatusCode.Aborted, ex.StatusCode);
            Assert.Contains("replaced", ex.Status.Detail, StringComparison.Ordinal);
            Assert.Equal(0, budget.Held);
            Assert.Empty(engine.Producers.Snapshot());
        }
        finally
        {
            await engine.DisposeAsync();
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }
}
