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
                        AcceptMessageTypes = { MessageType.Normal, MessageType.Transaction },
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
            s.OnHeartbeat = (_, _) => Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        });
}
