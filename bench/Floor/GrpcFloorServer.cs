using System.Net;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Bench.Floor;

/// <summary>
/// The transport floor (issues 9 and 10): the RocketMQ 5 MessagingService on the same stack as the broker (Kestrel
/// HTTP/2, grpc-dotnet, the generated base class, the broker's HTTP/2 limits) with no broker behind it. A half send is
/// answered OK, a commit counts one message as deliverable, a receive hands out up to its batch of the counted messages
/// (a canned 1 KiB message each, same shape as the broker's) after a long poll, an ack is answered OK. No storage, no
/// state beyond two counters, no logging, no MD5, no authentication.
/// <para>Whatever CPU this process spends per transaction, the broker cannot spend less on this stack: it is the floor
/// under the broker's "CPU per transaction" column, and broker − floor is what the broker itself costs.</para>
/// <para>Run as a child of the bench: <c>HalfMsg.Bench.dll internal-grpc-floor PORT</c>; prints <c>READY</c>.</para>
/// </summary>
public static class GrpcFloorServer
{
    public const string Verb = "internal-grpc-floor";

    public static async Task<int> MainAsync(string[] args)
    {
        int port = int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture);
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k =>
        {
            // The broker's gRPC port settings (src/Broker/HalfMsg.Broker/Hosting/GrpcEndpoint.cs).
            k.Listen(IPAddress.Loopback, port, l => l.Protocols = HttpProtocols.Http2);
            k.Limits.MaxRequestBufferSize = 1024 * 1024;
            k.Limits.Http2.MaxStreamsPerConnection = 200;
            k.Limits.Http2.InitialConnectionWindowSize = 1024 * 1024;
            k.Limits.Http2.InitialStreamWindowSize = 256 * 1024;
            k.Limits.Http2.KeepAlivePingDelay = TimeSpan.FromSeconds(10);
            k.Limits.Http2.KeepAlivePingTimeout = TimeSpan.FromSeconds(10);
        });
        builder.Services.AddGrpc(o => o.MaxReceiveMessageSize = 5 * 1024 * 1024);
        builder.Services.AddSingleton<FloorService>();
        builder.Services.AddSingleton<FloorTransactions>();
        await using var app = builder.Build();
        app.MapGrpcService<FloorService>();
        app.MapGrpcService<FloorTransactions>();
        await app.StartAsync();
        Console.WriteLine("READY");
        // Stopped by the bench with SIGTERM (or stdin closing).
        var stdinClosed = Task.Run(() => Console.In.ReadToEnd());
        await Task.WhenAny(stdinClosed, app.WaitForShutdownAsync());
        await app.StopAsync();
        return 0;
    }

    /// <summary>HalfMsgBroker's own batch of decisions, as empty as <see cref="FloorService"/>: each commit makes one
    /// message deliverable.</summary>
    private sealed class FloorTransactions(FloorService messaging) : HalfMsg.Protocol.V1.TransactionService.TransactionServiceBase
    {
        public override async Task<HalfMsg.Protocol.V1.EndTransactionsResponse> EndTransactions(HalfMsg.Protocol.V1.EndTransactionsRequest request, ServerCallContext context)
        {
            var response = new HalfMsg.Protocol.V1.EndTransactionsResponse { Status = FloorService.Ok };
            foreach (EndTransactionRequest decision in request.Decisions)
            {
                response.Entries.Add((await messaging.EndTransaction(decision, context)).Status);
            }

            return response;
        }
    }

    private sealed class FloorService : MessagingService.MessagingServiceBase
    {
        internal static readonly Status Ok = new() { Code = Code.Ok, Message = "OK" };
        private static readonly ByteString Body = ByteString.CopyFrom(new byte[1024]);
        private readonly SemaphoreSlim _deliverable = new(0);
        private long _counter;

        public override Task<SendMessageResponse> SendMessage(SendMessageRequest request, ServerCallContext context)
        {
            var response = new SendMessageResponse { Status = Ok };
            foreach (Message m in request.Messages)
            {
                long n = Interlocked.Increment(ref _counter);
                response.Entries.Add(new SendResultEntry
                {
                    Status = Ok, MessageId = m.SystemProperties.MessageId, TransactionId = "T" + n.ToString(System.Globalization.CultureInfo.InvariantCulture), Offset = n,
                });
            }

            return Task.FromResult(response);
        }

        public override Task<EndTransactionResponse> EndTransaction(EndTransactionRequest request, ServerCallContext context)
        {
            if (request.Resolution == TransactionResolution.Commit)
            {
                _deliverable.Release();
            }

            return Task.FromResult(new EndTransactionResponse { Status = Ok });
        }

        public override async Task ReceiveMessage(ReceiveMessageRequest request, IServerStreamWriter<ReceiveMessageResponse> responseStream, ServerCallContext context)
        {
            // The broker's long poll: wait for the first deliverable message, then take what else is there up to the batch.
            int taken = 0;
            TimeSpan poll = request.LongPollingTimeout?.ToTimeSpan() ?? TimeSpan.FromSeconds(20);
            try
            {
                if (await _deliverable.WaitAsync(poll, context.CancellationToken))
                {
                    taken = 1;
                    while (taken < Math.Max(1, request.BatchSize) && _deliverable.Wait(0))
                    {
                        taken++;
                    }
                }
            }
            catch (OperationCanceledException)
            {
                return;
            }

            if (taken == 0)
            {
                await responseStream.WriteAsync(new ReceiveMessageResponse { Status = new Status { Code = Code.MessageNotFound, Message = "no new message" } });
            }
            else
            {
                await responseStream.WriteAsync(new ReceiveMessageResponse { Status = Ok });
                string topic = request.MessageQueue?.Topic?.Name ?? "";
                for (int i = 0; i < taken; i++)
                {
                    long n = Interlocked.Increment(ref _counter);
                    string id = n.ToString("X32", System.Globalization.CultureInfo.InvariantCulture);
                    await responseStream.WriteAsync(new ReceiveMessageResponse
                    {
                        Message = new Message
                        {
                            Topic = new Resource { Name = topic },
                            Body = Body,
                            SystemProperties = new SystemProperties
                            {
                                MessageId = id,
                                ReceiptHandle = "floor-" + id,
                                BodyEncoding = Encoding.Identity,
                                MessageType = MessageType.Transaction,
                                BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                                BornHost = "bench",
                                StoreTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                                QueueOffset = n,
                                DeliveryAttempt = 1,
                            },
                        },
                    });
                }
            }

            await responseStream.WriteAsync(new ReceiveMessageResponse { DeliveryTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow) });
        }

        public override Task<AckMessageResponse> AckMessage(AckMessageRequest request, ServerCallContext context)
        {
            var response = new AckMessageResponse { Status = Ok };
            foreach (AckMessageEntry e in request.Entries)
            {
                response.Entries.Add(new AckMessageResultEntry { MessageId = e.MessageId, ReceiptHandle = e.ReceiptHandle, Status = Ok });
            }

            return Task.FromResult(response);
        }
    }
}
