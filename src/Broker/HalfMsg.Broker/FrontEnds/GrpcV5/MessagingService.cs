using System.Net;
using System.Net.Sockets;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Protocol.Grpc;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// <c>apache.rocketmq.v2.MessagingService</c> over the <see cref="BrokerEngine"/>. One file per RPC
/// (<c>MessagingService.&lt;Rpc&gt;.cs</c>); handlers only translate between protobuf and the core's model, and
/// put the core's outcome in the response body's Status (<see cref="V5Status"/>).
/// </summary>
internal sealed partial class MessagingService
{
    private readonly BrokerEngine _engine;
    private readonly GrpcV5Options _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly TelemetrySessions _sessions = new();

    public MessagingService(BrokerEngine engine, GrpcV5Options options, ILogger<MessagingService> logger, TimeProvider? time = null)
    {
        _engine = engine;
        _options = options;
        _logger = logger;
        _time = time ?? TimeProvider.System;
    }

    /// <summary>The dispatch table. Methods the Node client never calls answer UNIMPLEMENTED (by being absent).</summary>
    public IEnumerable<GrpcMethod> Methods()
    {
        yield return Unary(GrpcMethods.QueryRoute, QueryRouteRequest.Parser, QueryRouteAsync, s => new QueryRouteResponse { Status = s });
        yield return Unary(GrpcMethods.Heartbeat, HeartbeatRequest.Parser, HeartbeatAsync, s => new HeartbeatResponse { Status = s });
        yield return Unary(GrpcMethods.SendMessage, SendMessageRequest.Parser, SendMessageAsync, s => new SendMessageResponse { Status = s });
        yield return Unary(GrpcMethods.QueryAssignment, QueryAssignmentRequest.Parser, QueryAssignmentAsync, s => new QueryAssignmentResponse { Status = s });
        yield return GrpcMethod.ServerStreaming<ReceiveMessageRequest>(GrpcMethods.ReceiveMessage, ReceiveMessageRequest.Parser, async (request, call) =>
        {
            if (Authenticate(call) is { } denied)
            {
                await call.WriteMessageAsync(new ReceiveMessageResponse { Status = denied }).ConfigureAwait(false);
                return;
            }

            if (_engine.StorageFault is { } failed)
            {
                await WriteReceiveEndAsync(call, V5Status.From(failed.ToError())).ConfigureAwait(false);
                return;
            }

            try
            {
                await ReceiveMessageAsync(request, call).ConfigureAwait(false);
            }
            catch (StorageFailureException ex)
            {
                await WriteReceiveEndAsync(call, V5Status.From(ex.ToError())).ConfigureAwait(false);
            }
        });
        yield return Unary(GrpcMethods.AckMessage, AckMessageRequest.Parser, AckMessageAsync, s => new AckMessageResponse { Status = s });
        yield return Unary(GrpcMethods.ForwardMessageToDeadLetterQueue, ForwardMessageToDeadLetterQueueRequest.Parser,
            ForwardMessageToDeadLetterQueueAsync, s => new ForwardMessageToDeadLetterQueueResponse { Status = s });
        yield return Unary(GrpcMethods.EndTransaction, EndTransactionRequest.Parser, EndTransactionAsync, s => new EndTransactionResponse { Status = s });
        yield return GrpcMethod.DuplexStreaming(GrpcMethods.Telemetry, async call =>
        {
            if (Authenticate(call) is { } denied)
            {
                // A status-only command makes the client reject its startup with this status.
                await call.WriteMessageAsync(new TelemetryCommand { Status = denied }).ConfigureAwait(false);
                return;
            }

            await TelemetryAsync(call).ConfigureAwait(false);
        });
        yield return Unary(GrpcMethods.NotifyClientTermination, NotifyClientTerminationRequest.Parser, NotifyClientTerminationAsync,
            s => new NotifyClientTerminationResponse { Status = s });
        yield return Unary(GrpcMethods.ChangeInvisibleDuration, ChangeInvisibleDurationRequest.Parser, ChangeInvisibleDurationAsync,
            s => new ChangeInvisibleDurationResponse { Status = s });
        // PullMessage, UpdateOffset, GetOffset, QueryOffset, RecallMessage and SyncLiteSubscription are not served:
        // the dispatcher answers UNIMPLEMENTED (12). The official clients only call them for pull/lite consumers and recall.
    }

    private GrpcMethod Unary<TRequest, TResponse>(string path, MessageParser<TRequest> parser,
        Func<TRequest, GrpcCall, ValueTask<TResponse>> handler, Func<Status, TResponse> statusOnly)
        where TRequest : class, IMessage<TRequest>
        where TResponse : IMessage
        => GrpcMethod.Unary<TRequest, TResponse>(path, parser, (request, call) =>
            Authenticate(call) is { } denied ? ValueTask.FromResult(statusOnly(denied)) : WithStorageStatusAsync(request, call, handler, statusOnly));

    /// <summary>
    /// A broker whose log failed answers every call with the storage-failure status (and the reason), never INTERNAL:
    /// clients can tell "retry elsewhere / later" from a bug, and the error log is not flooded per request.
    /// </summary>
    private async ValueTask<TResponse> WithStorageStatusAsync<TRequest, TResponse>(TRequest request, GrpcCall call,
        Func<TRequest, GrpcCall, ValueTask<TResponse>> handler, Func<Status, TResponse> statusOnly)
    {
        if (_engine.StorageFault is { } failed)
        {
            return statusOnly(V5Status.From(failed.ToError()));
        }

        try
        {
            return await handler(request, call).ConfigureAwait(false);
        }
        catch (StorageFailureException ex)
        {
            return statusOnly(V5Status.From(ex.ToError()));
        }
    }

    private static readonly TimeSpan MaxClockSkew = TimeSpan.FromMinutes(15);

    /// <summary>Null when the call may proceed; otherwise the UNAUTHORIZED status to answer with.</summary>
    private Status? Authenticate(GrpcCall call)
    {
        if (_options.Credentials.Count == 0)
        {
            return null;
        }

        string? authorization = call.Header(RocketMqHeaders.Authorization);
        string? dateTime = call.Header(RocketMqHeaders.DateTime);
        if (authorization is null || dateTime is null)
        {
            return V5Status.Of(Code.Unauthorized, "authorization and x-mq-date-time headers are required");
        }

        // The signature covers only x-mq-date-time: without a freshness window a captured header would work forever.
        if (!MqSignature.TryParseDateTime(dateTime, out DateTimeOffset signedAt) || (_time.GetUtcNow() - signedAt).Duration() > MaxClockSkew)
        {
            return V5Status.Of(Code.Unauthorized, $"x-mq-date-time must be a UTC time (yyyyMMdd'T'HHmmss'Z') within {MaxClockSkew.TotalMinutes:0} minutes of the broker's clock");
        }

        if (MqSignature.TryParse(authorization, out string accessKey, out _)
            && _options.Credentials.TryGetValue(accessKey, out string? secret)
            && MqSignature.Verify(authorization, dateTime, accessKey, secret))
        {
            return null;
        }

        // Never log the secret or the signature; the access key alone identifies the misconfigured client.
        LogAuthFailed(accessKey);
        return V5Status.Of(Code.Unauthorized, "invalid credentials");
    }

    private static string ClientId(GrpcCall call) => call.Header(RocketMqHeaders.ClientId) ?? string.Empty;

    /// <summary>This broker's endpoints as clients must reach them: the advertised host, or the local address of the
    /// connection the request arrived on (what the client could reach).</summary>
    private Endpoints LocalEndpoints(GrpcCall call)
    {
        var connection = call.HttpContext.Connection;
        int port = _options.Port > 0 ? _options.Port : connection.LocalPort;
        string host;
        AddressScheme scheme;
        if (_options.AdvertisedHost is { Length: > 0 } advertised)
        {
            host = advertised;
            scheme = IPAddress.TryParse(advertised, out IPAddress? ip)
                ? (ip.AddressFamily == AddressFamily.InterNetworkV6 ? AddressScheme.Ipv6 : AddressScheme.Ipv4)
                : AddressScheme.DomainName;
        }
        else
        {
            IPAddress local = connection.LocalIpAddress ?? IPAddress.Loopback;
            if (local.IsIPv4MappedToIPv6)
            {
                local = local.MapToIPv4();
            }

            host = local.ToString();
            scheme = local.AddressFamily == AddressFamily.InterNetworkV6 ? AddressScheme.Ipv6 : AddressScheme.Ipv4;
        }

        return new Endpoints { Scheme = scheme, Addresses = { new Address { Host = host, Port = port } } };
    }

    private const string BrokerName = "halfmsg-broker";

    private MessageQueue Queue(string topic, int id, Endpoints endpoints) => new()
    {
        Topic = new Resource { Name = topic },
        Id = id,
        Permission = Permission.ReadWrite,
        Broker = new Apache.Rocketmq.V2.Broker { Name = BrokerName, Id = 0, Endpoints = endpoints },
        AcceptMessageTypes = { MessageType.Normal, MessageType.Fifo, MessageType.Delay, MessageType.Transaction },
    };

    [LoggerMessage(Level = LogLevel.Information, Message = "Rejected a gRPC call: bad credentials for access key '{AccessKey}'")]
    private partial void LogAuthFailed(string accessKey);
}
