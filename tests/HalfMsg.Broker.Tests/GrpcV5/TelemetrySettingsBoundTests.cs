using System.Globalization;
using Apache.Rocketmq.V2;
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
}
