using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using Xunit;

namespace HalfMsg.Client.Tests;

/// <summary>A simple consumer that cannot work says so at once, as a push consumer does: options and arguments a broker
/// would refuse or cap are refused with an <see cref="ArgumentException"/> naming them.</summary>
public sealed class SimpleConsumerOptionsTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private string Endpoint => fixture.Broker.Endpoint;

    public static TheoryData<string, SimpleConsumerOptions> InvalidOptions => new()
    {
        // "AwaitDuration": "20" in appsettings.json binds to 20 days (TimeSpan.Parse).
        { "AwaitDuration", SimpleConsumerOptions.Default with { AwaitDuration = TimeSpan.Parse("20") } },
        { "AwaitDuration", SimpleConsumerOptions.Default with { AwaitDuration = TimeSpan.FromSeconds(-1) } },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task StartAsync_refuses_options_that_cannot_work_naming_the_option(string option, SimpleConsumerOptions invalid)
    {
        string topic = E2E.Unique("sopts");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        SimpleConsumer? started = null;
        Exception? error = await Record.ExceptionAsync(async () => started = await SimpleConsumer.StartAsync(invalid with
        {
            Endpoints = Endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
        }));
        if (started is not null) await started.DisposeAsync();
        Assert.True(error is ArgumentException && error.Message.Contains(option, StringComparison.Ordinal),
            $"StartAsync with an invalid {option} gave {(error is null ? "a started consumer" : error.GetType().Name + ": " + error.Message)}");
    }
}
