using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using HalfMsg.Protocol.Grpc;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>A producer's Telemetry stream as the official clients drive it: Settings first, then check-backs, which it
/// answers (Commit), reads and ignores, leaves unread, or answers once told to start reading.</summary>
public sealed class TelemetryTestProducer : IAsyncDisposable
{
    /// <summary>AnswerWhenReleased: reads nothing after the Settings reply until <see cref="StartReading"/>, then answers
    /// as Answer does (a client that reads, only later than a burst of checks came).</summary>
    public enum Behaviour { Answer, Ignore, StopReading, AnswerWhenReleased }

    private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private readonly AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand> _call;
    private readonly Task _reader = Task.CompletedTask;

    public GrpcTestClient Client { get; }
    public ConcurrentQueue<RecoverOrphanedTransactionCommand> Checks { get; } = new();
    public ConcurrentQueue<string> Decided { get; } = new();
    /// <summary>What went wrong while answering: a refused answer's status, or the exception that ended the reader.</summary>
    public ConcurrentQueue<string> Errors { get; } = new();

    private TelemetryTestProducer(GrpcTestClient client, AsyncDuplexStreamingCall<TelemetryCommand, TelemetryCommand> call, Behaviour behaviour)
    {
        Client = client;
        _call = call;
        if (behaviour == Behaviour.AnswerWhenReleased)
        {
            _reader = Task.Run(async () =>
            {
                await _release.Task;
                await ReadAsync(answer: true);
            });
        }
        else if (behaviour != Behaviour.StopReading)
        {
            _reader = Task.Run(() => ReadAsync(behaviour == Behaviour.Answer));
        }
    }

    /// <summary>An AnswerWhenReleased producer starts reading (and answering) its stream.</summary>
    public void StartReading() => _release.TrySetResult();

    /// <param name="ns">Sent as <c>x-mq-namespace</c> on every call of this producer, when not null.</param>
    /// <param name="userAgent">The Settings' user agent, when not null.</param>
    /// <param name="headers">Sent on every call of this producer (replacing the defaults of the same name), when not null.</param>
    public static async Task<TelemetryTestProducer> StartAsync(string endpoint, string topic, Behaviour behaviour, string? ns = null,
        IReadOnlyDictionary<string, string>? headers = null, UA? userAgent = null)
    {
        var client = new GrpcTestClient(endpoint, clientId: behaviour + "@" + Guid.NewGuid().ToString("N")[..8]);
        if (ns is not null) client.DefaultHeaders[RocketMqHeaders.Namespace] = ns;
        foreach (var (name, value) in headers ?? new Dictionary<string, string>()) client.DefaultHeaders[name] = value;
        // No deadline, as the official clients' streams: with the 30 s of the other test calls, a test whose steps took
        // that long on a loaded machine saw both instances' streams end (DeadlineExceeded) before its check pass, so no
        // check reached either (TelemetryUnsentChecksTests: "0 of 7 decided", found in the afternoon session of 2026-12-07).
        var call = client.Duplex<TelemetryCommand, TelemetryCommand>(GrpcMethods.Telemetry, TelemetryCommand.Parser, timeout: Timeout.InfiniteTimeSpan);
        await call.RequestStream.WriteAsync(new TelemetryCommand
        {
            Settings = new Settings
            {
                ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = topic } } }, UserAgent = userAgent,
            },
        });
        Assert.True(await call.ResponseStream.MoveNext());
        Assert.Equal(Code.Ok, call.ResponseStream.Current.Status.Code); // registered; a StopReading one reads no more
        return new TelemetryTestProducer(client, call, behaviour);
    }

    private async Task ReadAsync(bool answer)
    {
        try
        {
            while (await _call.ResponseStream.MoveNext())
            {
                if (_call.ResponseStream.Current.RecoverOrphanedTransactionCommand is not { } check)
                {
                    continue;
                }

                Checks.Enqueue(check);
                if (!answer)
                {
                    continue;
                }

                var end = await Client.UnaryAsync(GrpcMethods.EndTransaction, new EndTransactionRequest
                {
                    Topic = check.Message.Topic,
                    MessageId = check.Message.SystemProperties.MessageId,
                    TransactionId = check.TransactionId,
                    Resolution = Apache.Rocketmq.V2.TransactionResolution.Commit,
                    Source = TransactionSource.SourceServerCheck,
                }, EndTransactionResponse.Parser);
                if (end.Response?.Status.Code == Code.Ok)
                {
                    Decided.Enqueue(check.TransactionId);
                }
                else
                {
                    Errors.Enqueue($"{check.TransactionId}: {end.Response?.Status.Code} {end.Response?.Status.Message}");
                }
            }
        }
        catch (RpcException e)
        {
            // The stream ended (test over, or ended by the broker).
            Errors.Enqueue("reader ended: " + e.Status);
        }
        catch (ObjectDisposedException)
        {
            // Disposed while answering (a test that failed, or ended, while a check was being answered).
            Errors.Enqueue("reader ended: disposed");
        }
    }

    public async Task<string> SendHalfAsync(string topic, int bodySize = 16)
    {
        var message = new Message
        {
            Topic = new Resource { Name = topic },
            Body = ByteString.CopyFrom(new byte[bodySize]),
            SystemProperties = new SystemProperties
            {
                MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                MessageType = MessageType.Transaction,
                BodyEncoding = V2Encoding.Identity,
                BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                BornHost = "test-host",
            },
        };
        var sent = await Client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
        SendResultEntry entry = Assert.Single(sent.Response!.Entries);
        Assert.Equal(Code.Ok, entry.Status.Code);
        return entry.TransactionId;
    }

    public async ValueTask DisposeAsync()
    {
        _call.Dispose();
        _release.TrySetResult(); // a reader never released meets the disposed call and ends
        await _reader;
        Client.Dispose();
    }
}
