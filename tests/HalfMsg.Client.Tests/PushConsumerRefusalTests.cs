using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using Microsoft.Extensions.Logging;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>Records every log entry (level and formatted message, with the exception's message).</summary>
internal sealed class RecordingLoggerFactory : ILoggerFactory, ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();
    public ILogger CreateLogger(string categoryName) => this;
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }
    public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
    public bool IsEnabled(LogLevel logLevel) => true;
    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        => Entries.Enqueue((logLevel, formatter(state, exception) + (exception is null ? "" : " | " + exception.Message)));

    public IReadOnlyList<string> AtLeast(LogLevel level, string containing) =>
        Entries.Where(e => e.Level >= level && e.Message.Contains(containing, StringComparison.Ordinal)).Select(e => e.Message).ToList();

    public string Dump() => string.Join("\n", Entries.Select(e => $"{e.Level}: {e.Message}"));
}

/// <summary>A push consumer that cannot work says so: options the broker would refuse fail StartAsync, refusals that
/// retrying cannot fix and ack/nack failures are logged at Warning (rate-limited).</summary>
[Trait("Category", "E2E")]
public sealed class PushConsumerRefusalTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    private string Endpoint => fixture.Broker.Endpoint;

    /// <summary>As <see cref="E2E.EventuallyAsync(Func{bool}, TimeSpan, string)"/>, with what was logged in the failure.</summary>
    private static async Task WaitAsync(Func<bool> condition, TimeSpan within, string what, RecordingLoggerFactory logs)
    {
        try
        {
            await E2E.EventuallyAsync(condition, within, what);
        }
        catch (TimeoutException ex)
        {
            throw new TimeoutException(ex.Message + "; logged:\n" + logs.Dump());
        }
    }

    private static Task<ConsumeResult> Succeed(ReceivedMessage m, CancellationToken ct) => Task.FromResult(ConsumeResult.Success);

    public static TheoryData<string, PushConsumerOptions> InvalidOptions => new()
    {
        // "InvisibleDuration": "30" in appsettings.json binds to 30 days (TimeSpan.Parse), beyond the broker's 12 h.
        { "InvisibleDuration", PushConsumerOptions.Default with { InvisibleDuration = TimeSpan.Parse("30") } },
        { "InvisibleDuration", PushConsumerOptions.Default with { InvisibleDuration = TimeSpan.Zero } },
        // Below the broker's shortest lease (1 s): every receive would be refused ILLEGAL_INVISIBLE_TIME.
        { "InvisibleDuration", PushConsumerOptions.Default with { InvisibleDuration = TimeSpan.FromMilliseconds(500) } },
        { "AwaitDuration", PushConsumerOptions.Default with { AwaitDuration = TimeSpan.FromSeconds(-1) } },
        { "AwaitDuration", PushConsumerOptions.Default with { AwaitDuration = TimeSpan.Parse("20") } },
        { "RetryBackoff", PushConsumerOptions.Default with { RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(-1), TimeSpan.FromSeconds(60), 2) } },
        { "RetryBackoff.Initial", PushConsumerOptions.Default with { RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(5), 2) } },
        { "RetryBackoff.Multiplier", PushConsumerOptions.Default with { RetryBackoff = new RetryBackoff(TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(5), 0.5) } },
        { "MaxAttempts", PushConsumerOptions.Default with { MaxAttempts = 0 } },
    };

    [Theory]
    [MemberData(nameof(InvalidOptions))]
    public async Task StartAsync_refuses_options_the_broker_would_refuse_naming_the_option(string option, PushConsumerOptions invalid)
    {
        string topic = E2E.Unique("opts");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        PushConsumer? started = null;
        Exception? error = await Record.ExceptionAsync(async () => started = await PushConsumer.StartAsync(invalid with
        {
            Endpoints = Endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "*" },
            Handler = Succeed,
        }));
        if (started is not null) await started.DisposeAsync();
        Assert.True(error is ArgumentException && error.Message.Contains(option, StringComparison.Ordinal),
            $"StartAsync with an invalid {option} gave {(error is null ? "a started consumer" : error.GetType().Name + ": " + error.Message)}");
    }

    [Fact]
    public async Task A_push_consumer_whose_every_receive_is_refused_logs_a_warning()
    {
        // The broker refuses every receive of a SQL92 subscription that does not parse with ILLEGAL_FILTER_EXPRESSION.
        string topic = E2E.Unique("refused");
        await using Producer producer = await E2E.ProducerAsync(Endpoint, topic);
        await producer.SendAsync(new ProducerMessage(topic, "x"));
        var logs = new RecordingLoggerFactory();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = Endpoint,
            ConsumerGroup = E2E.Unique("g"),
            Subscriptions = new Dictionary<string, string> { [topic] = "SQL92:a >" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = Succeed,
        });

        await WaitAsync(() => logs.AtLeast(LogLevel.Warning, nameof(Code.IllegalFilterExpression)).Count > 0, TimeSpan.FromSeconds(15), "a Warning naming IllegalFilterExpression", logs);
    }

    [Fact]
    public async Task A_refusal_repeated_every_second_is_logged_once_a_minute()
    {
        int receives = 0;
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(new Settings(), s =>
        {
            s.OnReceive = async (_, stream, _) =>
            {
                Interlocked.Increment(ref receives);
                await stream.WriteAsync(new ReceiveMessageResponse { Status = new Status { Code = Code.Forbidden, Message = "no permission" } });
            };
        });
        var logs = new RecordingLoggerFactory();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = Succeed,
        });

        await WaitAsync(() => logs.AtLeast(LogLevel.Warning, "Forbidden").Count > 0, TimeSpan.FromSeconds(15), "a Warning naming Forbidden", logs);
        int seen = Volatile.Read(ref receives);
        await E2E.EventuallyAsync(() => Volatile.Read(ref receives) >= seen + 3, TimeSpan.FromSeconds(15), "three more refused receives");
        Assert.Single(logs.AtLeast(LogLevel.Warning, "Forbidden"));
    }

    [Fact]
    public async Task A_refused_ack_is_logged_at_warning()
    {
        int delivered = 0;
        int acks = 0;
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(new Settings(), s =>
        {
            s.OnReceive = (_, stream, ctx) => FakeBrokers.AnswerReceiveAsync(stream, ctx,
                Interlocked.Exchange(ref delivered, 1) == 0 ? [FakeBrokers.Delivered("t", "id-1", "rh-1")] : [], TimeSpan.FromMilliseconds(500));
            s.OnAckMessage = (_, _) => Task.FromResult(Interlocked.Increment(ref acks) == 1
                ? new AckMessageResponse { Status = new Status { Code = Code.Forbidden, Message = "no permission" } } // the retry is accepted
                : new AckMessageResponse { Status = new Status { Code = Code.Ok } });
        });
        var logs = new RecordingLoggerFactory();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = Succeed,
        });

        await E2E.EventuallyAsync(() => Volatile.Read(ref acks) > 0, TimeSpan.FromSeconds(15), "an ack");
        await WaitAsync(() => logs.AtLeast(LogLevel.Warning, "id-1").Count > 0, TimeSpan.FromSeconds(5), "a Warning about the refused ack of id-1", logs);
    }

    [Fact]
    public async Task A_failed_message_is_nacked_even_when_the_brokers_backoff_is_negative()
    {
        int delivered = 0;
        var nacks = new ConcurrentQueue<ChangeInvisibleDurationRequest>();
        var settings = new Settings
        {
            BackoffPolicy = new RetryPolicy
            {
                MaxAttempts = 16,
                ExponentialBackoff = new ExponentialBackoff { Initial = Duration.FromTimeSpan(TimeSpan.FromSeconds(-1)), Max = Duration.FromTimeSpan(TimeSpan.FromSeconds(60)), Multiplier = 2 },
            },
        };
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(settings, s =>
        {
            s.OnReceive = (_, stream, ctx) => FakeBrokers.AnswerReceiveAsync(stream, ctx,
                Interlocked.Exchange(ref delivered, 1) == 0 ? [FakeBrokers.Delivered("t", "id-1", "rh-1")] : [], TimeSpan.FromMilliseconds(500));
            s.OnChangeInvisibleDuration = (request, _) =>
            {
                nacks.Enqueue(request);
                return Task.FromResult(new ChangeInvisibleDurationResponse { Status = new Status { Code = Code.Ok }, ReceiptHandle = "rh-2" });
            };
        });
        var logs = new RecordingLoggerFactory();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = (_, _) => Task.FromResult(ConsumeResult.Failure),
        });

        await WaitAsync(() => !nacks.IsEmpty, TimeSpan.FromSeconds(15), "the nack (ChangeInvisibleDuration) of the failed message", logs);
        Assert.True(nacks.Single().InvisibleDuration.ToTimeSpan() >= TimeSpan.Zero);
    }

    /// <summary>
    /// A broker that announces a customized backoff (the Apache proxy's default, and this broker's since 2026-12-06): a
    /// failed delivery is nacked for the announced delay of its attempt, the last one repeating, as the official clients
    /// read it. Until then the consumer read only an exponential backoff and nacked for its default (1 s doubling).
    /// </summary>
    [Theory]
    [InlineData(2, 11)]
    [InlineData(5, 13)]
    public async Task A_failed_message_is_nacked_for_the_brokers_customized_delay_of_its_attempt(int attempt, int expectedSeconds)
    {
        int delivered = 0;
        var nacks = new ConcurrentQueue<ChangeInvisibleDurationRequest>();
        var settings = new Settings
        {
            BackoffPolicy = new RetryPolicy
            {
                MaxAttempts = 16,
                CustomizedBackoff = new CustomizedBackoff
                {
                    Next = { Duration.FromTimeSpan(TimeSpan.FromSeconds(7)), Duration.FromTimeSpan(TimeSpan.FromSeconds(11)), Duration.FromTimeSpan(TimeSpan.FromSeconds(13)) },
                },
            },
        };
        await using TestGrpcServer server = await FakeBrokers.ConsumingAsync(settings, s =>
        {
            s.OnReceive = (_, stream, ctx) => FakeBrokers.AnswerReceiveAsync(stream, ctx,
                Interlocked.Exchange(ref delivered, 1) == 0 ? [FakeBrokers.Delivered("t", "id-1", "rh-1", attempt)] : [], TimeSpan.FromMilliseconds(500));
            s.OnChangeInvisibleDuration = (request, _) =>
            {
                nacks.Enqueue(request);
                return Task.FromResult(new ChangeInvisibleDurationResponse { Status = new Status { Code = Code.Ok }, ReceiptHandle = "rh-2" });
            };
        });
        var logs = new RecordingLoggerFactory();
        await using PushConsumer consumer = await PushConsumer.StartAsync(PushConsumerOptions.Default with
        {
            Endpoints = server.Endpoint,
            ConsumerGroup = "g",
            Subscriptions = new Dictionary<string, string> { ["t"] = "*" },
            AwaitDuration = TimeSpan.FromSeconds(1),
            LoggerFactory = logs,
            Handler = (_, _) => Task.FromResult(ConsumeResult.Failure),
        });

        await WaitAsync(() => !nacks.IsEmpty, TimeSpan.FromSeconds(15), "the nack (ChangeInvisibleDuration) of the failed message", logs);
        Assert.Equal(TimeSpan.FromSeconds(expectedSeconds), nacks.Single().InvisibleDuration.ToTimeSpan());
    }
}
