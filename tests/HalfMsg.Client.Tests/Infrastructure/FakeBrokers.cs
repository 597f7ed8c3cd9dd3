using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>Fake brokers for the producer's decision paths.</summary>
internal static class FakeBrokers
{
    /// <summary>A fake broker with MessagingService only: its route points at itself, its Settings reply is
    /// <paramref name="settings"/> (a HalfMsgBroker's user agent makes the producer coalesce decisions; none makes a plain
    /// RocketMQ), every half is stored (transaction id "tx-" + message id), and every EndTransaction is recorded.</summary>
    /// <param name="afterSettings">Commands pushed on a Telemetry stream after the Settings reply (check-backs).</param>
    public static Task<TestGrpcServer> RecordingDecisionsAsync(ConcurrentQueue<EndTransactionRequest> decisions, Settings settings,
        IReadOnlyList<TelemetryCommand>? afterSettings = null) =>
        TestGrpcServer.StartAsync(s =>
        {
            Serve(s, settings, afterSettings, MessageType.Normal, MessageType.Transaction);
            s.OnSendMessage = (request, _) =>
            {
                var response = new SendMessageResponse { Status = new Status { Code = Code.Ok } };
                response.Entries.AddRange(request.Messages.Select(m => new SendResultEntry
                {
                    Status = new Status { Code = Code.Ok },
                    MessageId = m.SystemProperties.MessageId,
                    TransactionId = "tx-" + m.SystemProperties.MessageId,
                }));
                return Task.FromResult(response);
            };
            s.OnEndTransaction = (request, _) =>
            {
                decisions.Enqueue(request);
                return Task.FromResult(new EndTransactionResponse { Status = new Status { Code = Code.Ok } });
            };
        });

    /// <summary>A fake broker for consumers: its route points at itself (one ReadWrite queue), its Settings reply is
    /// <paramref name="settings"/>, heartbeats are answered; receive, ack and the rest are whatever
    /// <paramref name="configure"/> sets (QueryAssignment is unimplemented, so a push consumer uses the route).</summary>
    public static Task<TestGrpcServer> ConsumingAsync(Settings settings, Action<FakeMessagingService> configure) =>
        TestGrpcServer.StartAsync(s =>
        {
            Serve(s, settings, null, MessageType.Normal, MessageType.Fifo);
            configure(s);
        });

    // What every fake answers: a route of one ReadWrite queue on itself, the Settings reply (and then any commands),
    // heartbeats.
    private static void Serve(FakeMessagingService s, Settings settings, IReadOnlyList<TelemetryCommand>? afterSettings, params MessageType[] accepts)
    {
        s.OnQueryRoute = (request, _) => Task.FromResult(new QueryRouteResponse
        {
            Status = new Status { Code = Code.Ok },
            MessageQueues =
            {
                new MessageQueue
                {
                    Topic = request.Topic,
                    Id = 0,
                    Permission = Permission.ReadWrite,
                    Broker = new Apache.Rocketmq.V2.Broker { Name = "fake", Endpoints = request.Endpoints }, // the access point is this server
                    AcceptMessageTypes = { accepts },
                },
            },
        });
        s.OnTelemetry = async (requests, responses, ctx) =>
        {
            while (await requests.MoveNext(ctx.CancellationToken))
            {
                if (requests.Current.Settings is not null)
                {
                    await responses.WriteAsync(new TelemetryCommand { Status = new Status { Code = Code.Ok }, Settings = settings });
                    foreach (TelemetryCommand command in afterSettings ?? [])
                    {
                        await responses.WriteAsync(command);
                    }
                }
            }
        };
        s.OnHeartbeat = (_, _) => Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
    }

    /// <summary>A message as a receive delivers it.</summary>
    public static Apache.Rocketmq.V2.Message Delivered(string topic, string messageId, string receiptHandle, int attempt = 1, string? group = null)
    {
        var m = new Apache.Rocketmq.V2.Message
        {
            Topic = new Resource { Name = topic },
            Body = Google.Protobuf.ByteString.CopyFromUtf8("x"),
            SystemProperties = new SystemProperties { MessageId = messageId, ReceiptHandle = receiptHandle, DeliveryAttempt = attempt },
        };
        if (group is not null) m.SystemProperties.MessageGroup = group;
        return m;
    }

    /// <summary>Writes a receive's answer: OK and <paramref name="messages"/>, or MESSAGE_NOT_FOUND after
    /// <paramref name="idle"/> (the long poll) when there are none.</summary>
    public static async Task AnswerReceiveAsync(Grpc.Core.IServerStreamWriter<ReceiveMessageResponse> stream, Grpc.Core.ServerCallContext ctx,
        IReadOnlyList<Apache.Rocketmq.V2.Message> messages, TimeSpan idle)
    {
        if (messages.Count == 0)
        {
            try { await Task.Delay(idle, ctx.CancellationToken); } catch (OperationCanceledException) { return; }
            await stream.WriteAsync(new ReceiveMessageResponse { Status = new Status { Code = Code.MessageNotFound } });
            return;
        }

        await stream.WriteAsync(new ReceiveMessageResponse { Status = new Status { Code = Code.Ok } });
        foreach (Apache.Rocketmq.V2.Message m in messages)
        {
            await stream.WriteAsync(new ReceiveMessageResponse { Message = m });
        }
    }
}
