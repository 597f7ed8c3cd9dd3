using System.Net;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using HalfMsg.Broker.Core.Storage;
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
/// <para>With <c>--log DIR</c> it is the floor plus the broker's log: the same answers, but every step stores in a
/// <see cref="RecordLog"/> (the broker's own log class, sync flush, the broker's settings) what the broker stores for it and
/// waits where the broker waits. A half send appends its message (durable before the reply); a decision appends a small
/// record (durable before the reply) and a commit makes that half deliverable; a receive appends one small record per
/// message handed out (not waited for) and reads each body back from the log; an ack call appends one small record per
/// entry (durable before the reply). Four appends and three durable waits per transaction, like the broker; no engine,
/// no index, no lock, no validation. What this process costs per transaction, a broker that keeps its state in this log
/// cannot go below on this stack.</para>
/// <para>To see what each part of the log costs, <c>HALFMSG_FLOOR_LOG_OMIT</c> (comma-separated) leaves parts out:
/// <c>reads</c> (hand out a canned body instead of reading it back), <c>deliveries</c> (no delivery record), <c>acks</c>
/// (no ack record and no wait), <c>waits</c> (no reply waits for a commit; each step asks for one; needs <c>reads</c>, since a body is readable only once durable). And
/// <c>HALFMSG_FLOOR_YIELD=1</c> makes the empty server's half send, decision and ack replies asynchronous (one thread-pool
/// hop before the reply), as a reply that waits for a commit is, without a log.</para>
/// <para>Run as a child of the bench: <c>HalfMsg.Bench.dll internal-grpc-floor PORT [--log DIR]</c>; prints <c>READY</c>.</para>
/// </summary>
public static class GrpcFloorServer
{
    public const string Verb = "internal-grpc-floor";

    public static async Task<int> MainAsync(string[] args)
    {
        int port = int.Parse(args[1], System.Globalization.CultureInfo.InvariantCulture);
        string? logDir = args.Length > 3 && args[2] == "--log" ? args[3] : null;
        if (logDir is not null && FloorLog.OmitWaits && !FloorLog.OmitReads)
        {
            // A body is readable only once durable; without the waits a receive could come before the commit.
            Console.Error.WriteLine("HALFMSG_FLOOR_LOG_OMIT: 'waits' needs 'reads' too");
            return 2;
        }

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
        await using FloorLog? log = logDir is null ? null : new FloorLog(logDir);
        builder.Services.AddSingleton(new FloorLogHolder(log));
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
            // All decisions of the call are appended, then waited for once, as the broker's batch entry point does.
            var response = new HalfMsg.Protocol.V1.EndTransactionsResponse { Status = FloorService.Ok };
            foreach (Status status in await messaging.DecideAsync(request.Decisions, context.CancellationToken))
            {
                response.Entries.Add(status);
            }

            return response;
        }
    }

    /// <summary>The optional log, as a service (null without <c>--log</c>).</summary>
    private sealed record FloorLogHolder(FloorLog? Log);

    /// <summary>
    /// What the broker stores per step, in the broker's log class, without the broker: a record is a one-byte kind, an
    /// eight-byte number and, for a half, the body. Committed halves wait in a queue for a receive.
    /// </summary>
    private sealed class FloorLog : IAsyncDisposable
    {
        private const int Header = 9;
        private readonly RecordLog _log;
        private readonly string _dir;
        private readonly System.Collections.Concurrent.ConcurrentQueue<(long Address, int Size)> _committed = new();
        private readonly System.Collections.Concurrent.ConcurrentDictionary<long, int> _halfSizes = new();
        private static readonly string[] Omit = (Environment.GetEnvironmentVariable("HALFMSG_FLOOR_LOG_OMIT") ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        internal static readonly bool OmitReads = Omit.Contains("reads");
        private static readonly bool OmitDeliveries = Omit.Contains("deliveries");
        private static readonly bool OmitAcks = Omit.Contains("acks");
        internal static readonly bool OmitWaits = Omit.Contains("waits");

        public FloorLog(string dir)
        {
            _dir = dir;
            // The broker's defaults (src/Broker/HalfMsg.Broker.Core/CoreOptions.cs): 256 MiB segments, 64 MiB in memory.
            _log = new RecordLog(dir, HalfMsg.Broker.Core.FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 28, memorySizeBits: 26);
        }

        /// <summary>Appends each half; returns their addresses once the last is durable.</summary>
        public async Task<long[]> AppendHalvesAsync(IReadOnlyList<Message> halves, CancellationToken ct)
        {
            await _log.WaitForRoomAsync(ct);
            var addresses = new long[halves.Count];
            byte[] buffer = System.Buffers.ArrayPool<byte>.Shared.Rent(Header + halves.Max(h => h.Body.Length));
            try
            {
                for (int i = 0; i < halves.Count; i++)
                {
                    ReadOnlySpan<byte> body = halves[i].Body.Span;
                    int size = Header + body.Length;
                    Write(buffer, 1, i);
                    body.CopyTo(buffer.AsSpan(Header));
                    addresses[i] = _log.Append(buffer.AsSpan(0, size));
                    _halfSizes[addresses[i]] = size;
                }
            }
            finally
            {
                System.Buffers.ArrayPool<byte>.Shared.Return(buffer);
            }

            await DurableAsync(addresses[^1], ct);
            return addresses;
        }

        /// <summary>Appends a decision per known half (address −1: skipped), waits once for the last; then the committed
        /// halves become deliverable. Returns which halves were known.</summary>
        public async Task<bool[]> DecideAsync(long[] halves, Func<int, bool> commit, CancellationToken ct)
        {
            await _log.WaitForRoomAsync(ct);
            var known = new bool[halves.Length];
            var sizes = new int[halves.Length];
            long last = -1;
            for (int i = 0; i < halves.Length; i++)
            {
                if (halves[i] < 0 || !_halfSizes.TryRemove(halves[i], out sizes[i])) continue;
                known[i] = true;
                last = AppendSmall(commit(i) ? (byte)2 : (byte)3, halves[i]);
            }

            if (last >= 0) await DurableAsync(last, ct);
            for (int i = 0; i < halves.Length; i++)
            {
                if (known[i] && commit(i)) _committed.Enqueue((halves[i], sizes[i]));
            }

            return known;
        }

        /// <summary>Takes a committed half for delivery and appends its delivery record (not waited for, as the broker's).</summary>
        public bool TryTake(out (long Address, int Size) half)
        {
            if (!_committed.TryDequeue(out half)) return false;
            if (!OmitDeliveries) AppendSmall(4, half.Address);
            return true;
        }

        /// <summary>Reads a half's body back from the log, as the broker reads each delivered body.</summary>
        public async Task<ByteString> ReadBodyAsync((long Address, int Size) half, CancellationToken ct)
        {
            if (OmitReads) return FloorService.Body;
            byte[] record = await _log.ReadAsync(half.Address, half.Size, ct) ?? throw new InvalidOperationException($"half at {half.Address} not readable");
            return UnsafeByteOperations.UnsafeWrap(record.AsMemory(Header));
        }

        /// <summary>Appends one record per acked message; returns once the last is durable.</summary>
        public async Task AckAsync(int count, CancellationToken ct)
        {
            if (count == 0 || OmitAcks) return;
            await _log.WaitForRoomAsync(ct);
            long last = -1;
            for (int i = 0; i < count; i++) last = AppendSmall(5, i);
            await DurableAsync(last, ct);
        }

        /// <summary>Waits until <paramref name="address"/> is durable; with <c>waits</c> omitted it only asks for a commit
        /// (the log still commits as often, but no reply waits for it).</summary>
        private ValueTask DurableAsync(long address, CancellationToken ct)
        {
            if (!OmitWaits) return _log.WaitDurableAsync(address, ct);
            _log.RequestCommit();
            return ValueTask.CompletedTask;
        }

        private long AppendSmall(byte kind, long value)
        {
            Span<byte> record = stackalloc byte[Header];
            Write(record, kind, value);
            return _log.Append(record);
        }

        private static void Write(Span<byte> record, byte kind, long value)
        {
            record[0] = kind;
            System.Buffers.Binary.BinaryPrimitives.WriteInt64LittleEndian(record[1..], value);
        }

        public async ValueTask DisposeAsync()
        {
            await _log.DisposeAsync();
            try { Directory.Delete(_dir, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private sealed class FloorService(FloorLogHolder holder) : MessagingService.MessagingServiceBase
    {
        internal static readonly Status Ok = new() { Code = Code.Ok, Message = "OK" };
        private static readonly Status Unknown = new() { Code = Code.InvalidTransactionId, Message = "unknown transaction" };
        internal static readonly ByteString Body = ByteString.CopyFrom(new byte[1024]);
        private readonly FloorLog? _log = holder.Log;
        private readonly SemaphoreSlim _deliverable = new(0);
        private long _counter;
        // HALFMSG_FLOOR_YIELD applies to the empty server only: with the log, the replies wait for commits anyway.
        private readonly bool _yieldBeforeReply = holder.Log is null && Environment.GetEnvironmentVariable("HALFMSG_FLOOR_YIELD") == "1";

        public override async Task<SendMessageResponse> SendMessage(SendMessageRequest request, ServerCallContext context)
        {
            var response = new SendMessageResponse { Status = Ok };
            if (_yieldBeforeReply) await Task.Yield();
            long[]? addresses = _log is null ? null : await _log.AppendHalvesAsync(request.Messages, context.CancellationToken);
            for (int i = 0; i < request.Messages.Count; i++)
            {
                long n = addresses?[i] ?? Interlocked.Increment(ref _counter);
                response.Entries.Add(new SendResultEntry
                {
                    Status = Ok, MessageId = request.Messages[i].SystemProperties.MessageId, TransactionId = "T" + n.ToString(System.Globalization.CultureInfo.InvariantCulture), Offset = n,
                });
            }

            return response;
        }

        public override async Task<EndTransactionResponse> EndTransaction(EndTransactionRequest request, ServerCallContext context)
            => new() { Status = (await DecideAsync([request], context.CancellationToken))[0] };

        /// <summary>Decides each; with the log, all decisions are appended and then waited for once.</summary>
        internal async Task<Status[]> DecideAsync(IReadOnlyList<EndTransactionRequest> decisions, CancellationToken ct)
        {
            if (_yieldBeforeReply) await Task.Yield();
            var statuses = new Status[decisions.Count];
            var halves = new long[decisions.Count];
            for (int i = 0; i < decisions.Count; i++)
            {
                statuses[i] = Ok;
                halves[i] = -1;
                if (_log is not null && !long.TryParse(decisions[i].TransactionId.AsSpan(Math.Min(1, decisions[i].TransactionId.Length)), System.Globalization.CultureInfo.InvariantCulture, out halves[i]))
                {
                    statuses[i] = Unknown;
                }
            }

            if (_log is not null)
            {
                bool[] known = await _log.DecideAsync(halves, i => decisions[i].Resolution == TransactionResolution.Commit, ct);
                for (int i = 0; i < known.Length; i++)
                {
                    if (!known[i]) statuses[i] = Unknown;
                }
            }

            for (int i = 0; i < decisions.Count; i++)
            {
                if (statuses[i] == Ok && decisions[i].Resolution == TransactionResolution.Commit) _deliverable.Release();
            }

            return statuses;
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
                    ByteString body = Body;
                    if (_log is not null)
                    {
                        // Each count released by a commit has its half queued before the release.
                        if (!_log.TryTake(out var half)) throw new InvalidOperationException("a deliverable count without its half");
                        body = await _log.ReadBodyAsync(half, context.CancellationToken);
                        n = half.Address;
                    }

                    string id = n.ToString("X32", System.Globalization.CultureInfo.InvariantCulture);
                    await responseStream.WriteAsync(new ReceiveMessageResponse
                    {
                        Message = new Message
                        {
                            Topic = new Resource { Name = topic },
                            Body = body,
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

        public override async Task<AckMessageResponse> AckMessage(AckMessageRequest request, ServerCallContext context)
        {
            if (_yieldBeforeReply) await Task.Yield();
            if (_log is not null) await _log.AckAsync(request.Entries.Count, context.CancellationToken);
            var response = new AckMessageResponse { Status = Ok };
            foreach (AckMessageEntry e in request.Entries)
            {
                response.Entries.Add(new AckMessageResultEntry { MessageId = e.MessageId, ReceiptHandle = e.ReceiptHandle, Status = Ok });
            }

            return response;
        }
    }
}
