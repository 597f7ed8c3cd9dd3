using System.Globalization;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Microsoft.Extensions.Configuration;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary><c>--grpc-retry-delays</c>: the delays announced to push consumers (Apache's default policy unless set; see
/// <see cref="HandlerTests"/>).</summary>
public sealed class RetryDelaysTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Fact]
    public async Task Configured_retry_delays_and_max_delivery_attempts_are_announced_to_push_consumers()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-retrydelays-" + Guid.NewGuid().ToString("N"));
        int grpcPort = FreePorts.Next();
        try
        {
            await using var host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", P(grpcPort), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", "0", "--grpc-retry-delays", "500ms, 2s 1m", "--max-delivery-attempts", "5"]);
            using var client = new GrpcTestClient($"127.0.0.1:{grpcPort}");
            var result = await client.ServerStreamAsync(GrpcMethods.Telemetry, new TelemetryCommand
            {
                Settings = new Settings
                {
                    ClientType = ClientType.PushConsumer,
                    Subscription = new Subscription { Group = new Resource { Name = "g" } },
                },
            }, TelemetryCommand.Parser);

            RetryPolicy policy = result.Responses[0].Settings.BackoffPolicy;
            Assert.Equal(5, policy.MaxAttempts);
            Assert.Equal([TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(2), TimeSpan.FromMinutes(1)],
                policy.CustomizedBackoff.Next.Select(d => d.ToTimeSpan()));
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    [Theory]
    [InlineData("")]
    [InlineData(" , ")]
    [InlineData("1s 5")]
    [InlineData("1s 13h")]
    [InlineData("1s -1s")]
    public void Retry_delays_that_are_not_1_to_64_durations_of_at_most_12h_are_refused_naming_the_flag(string value)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(
            new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(["--grpc-retry-delays", value])).Build()));
        Assert.Contains("--grpc-retry-delays", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Sixty_five_retry_delays_are_refused()
    {
        string value = string.Join(' ', Enumerable.Repeat("1s", BrokerConfiguration.MaxRetryDelays + 1));
        Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(
            new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(["--grpc-retry-delays", value])).Build()));
    }
}
