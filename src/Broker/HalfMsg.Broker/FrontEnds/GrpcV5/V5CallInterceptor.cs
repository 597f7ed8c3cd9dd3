using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.Reflection;
using Grpc.AspNetCore.Server;
using Grpc.Core;
using Grpc.Core.Interceptors;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.FrontEnds;
using Microsoft.Extensions.Logging;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Runs around every MessagingService call: answers a caller that failed authentication, or whose namespace or client
/// id header is not one the broker takes (BAD_REQUEST; the client id's length since the late-night session of
/// 2026-12-07, <see cref="MessagingService.MaxClientIdLength"/>), and turns an exception that
/// escaped a handler into the RocketMQ convention instead of grpc-dotnet's bare UNKNOWN. Both answers are a
/// response whose only content is an <c>apache.rocketmq.v2.Status</c>, with grpc-status 0, as the proxy's
/// <c>GrpcMessagingApplication.writeResponse</c> does; Telemetry failures stay gRPC statuses (the proxy uses
/// INTERNAL there too).
/// </summary>
internal sealed partial class V5CallInterceptor(V5Authenticator authenticator, ILogger<V5CallInterceptor> logger, BrokerEngine? engine = null,
    V5BadInput? badInput = null, SendAdmission? admission = null) : Interceptor
{
    private readonly ILogger _logger = logger;

    public override async Task<TResponse> UnaryServerHandler<TRequest, TResponse>(TRequest request, ServerCallContext context,
        UnaryServerMethod<TRequest, TResponse> continuation)
    {
        if (authenticator.Enabled && authenticator.Check(context.GetHttpContext()) is { } denied)
        {
            return StatusOnly<TResponse>.Create(denied);
        }

        if (V5Namespace.Check(V5Namespace.Of(context)) is { } badNamespace) return StatusOnly<TResponse>.Create(badNamespace);
        if (MessagingService.ClientIdCheck(context.GetHttpContext()) is { } badClientId) return StatusOnly<TResponse>.Create(badClientId);

        // A broker whose log failed answers every call with the storage-failure status and its reason, never
        // INTERNAL: clients can tell "retry elsewhere or later" from a bug (the failure itself was logged once).
        if (engine?.StorageFault is { } failed) return StatusOnly<TResponse>.Create(V5Status.From(failed.ToError()));
        // Load shedding (RocketMQ's broker fast failure): a send that gets no slot in time is TOO_MANY_REQUESTS, which
        // the official clients back off from and retry, instead of joining a queue that makes everyone time out.
        bool admitted = false;
        if (admission is not null && context.Method.EndsWith("/SendMessage", StringComparison.Ordinal))
        {
            if (!await admission.TryEnterAsync(context.CancellationToken).ConfigureAwait(false))
                return StatusOnly<TResponse>.Create(V5Status.Of(Code.TooManyRequests, admission.BusyMessage));
            admitted = true;
        }
        try
        {
            return await continuation(request, context).ConfigureAwait(false);
        }
        catch (StorageFailureException ex)
        {
            return StatusOnly<TResponse>.Create(V5Status.From(ex.ToError()));
        }
        catch (Exception ex) when (IsHandlerFailure(ex, context))
        {
            LogHandlerFailed(ex, context.Method);
            return StatusOnly<TResponse>.Create(InternalError);
        }
        finally
        {
            if (admitted) admission!.Exit();
        }
    }

    public override async Task ServerStreamingServerHandler<TRequest, TResponse>(TRequest request, IServerStreamWriter<TResponse> responseStream,
        ServerCallContext context, ServerStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (authenticator.Enabled && authenticator.Check(context.GetHttpContext()) is { } denied)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(denied)).ConfigureAwait(false);
            return;
        }

        if (V5Namespace.Check(V5Namespace.Of(context)) is { } badNamespace)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(badNamespace)).ConfigureAwait(false);
            return;
        }

        if (MessagingService.ClientIdCheck(context.GetHttpContext()) is { } badClientId)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(badClientId)).ConfigureAwait(false);
            return;
        }

        if (engine?.StorageFault is { } failed)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(V5Status.From(failed.ToError()))).ConfigureAwait(false);
            return;
        }
        try
        {
            await continuation(request, responseStream, context).ConfigureAwait(false);
        }
        catch (StorageFailureException ex)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(V5Status.From(ex.ToError()))).ConfigureAwait(false);
        }
        catch (Exception ex) when (IsHandlerFailure(ex, context))
        {
            LogHandlerFailed(ex, context.Method);
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(InternalError)).ConfigureAwait(false);
        }
    }

    public override async Task DuplexStreamingServerHandler<TRequest, TResponse>(IAsyncStreamReader<TRequest> requestStream,
        IServerStreamWriter<TResponse> responseStream, ServerCallContext context, DuplexStreamingServerMethod<TRequest, TResponse> continuation)
    {
        if (authenticator.Enabled && authenticator.Check(context.GetHttpContext()) is { } denied)
        {
            // A status-only command makes the client reject its startup with this status.
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(denied)).ConfigureAwait(false);
            await AwaitHalfCloseAsync(requestStream, context).ConfigureAwait(false);
            return;
        }

        if (V5Namespace.Check(V5Namespace.Of(context)) is { } badNamespace)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(badNamespace)).ConfigureAwait(false);
            await AwaitHalfCloseAsync(requestStream, context).ConfigureAwait(false);
            return;
        }

        // Refused before a session keeps it (Telemetry): MessagingService.MaxClientIdLength.
        if (MessagingService.ClientIdCheck(context.GetHttpContext()) is { } badClientId)
        {
            await responseStream.WriteAsync(StatusOnly<TResponse>.Create(badClientId)).ConfigureAwait(false);
            await AwaitHalfCloseAsync(requestStream, context).ConfigureAwait(false);
            return;
        }

        try
        {
            await continuation(requestStream, responseStream, context).ConfigureAwait(false);
        }
        catch (InvalidProtocolBufferException ex)
        {
            // A stream message that is not protobuf is the client's fault, not ours: Debug, rate-limited.
            badInput?.Log(context.Method, ex);
            throw new RpcException(V5BadInput.InvalidMessage(context.Method));
        }
        catch (Exception ex) when (V5BadInput.IsBadFrame(ex))
        {
            // So is a message grpc-dotnet cannot read from its frame (V5BadInput.IsBadFrame): Debug, rate-limited, INVALID_ARGUMENT.
            badInput?.Log(context.Method, ex);
            throw new RpcException(V5BadInput.InvalidFrame(context.Method, ex.Message));
        }
        catch (Exception ex) when (IsHandlerFailure(ex, context))
        {
            LogHandlerFailed(ex, context.Method);
            throw new RpcException(new Grpc.Core.Status(StatusCode.Internal, "internal server error"));
        }
    }

    /// <summary>
    /// Ending a bidi call while the client is still sending makes Kestrel reset the stream, and the client may then see
    /// CANCELLED instead of the status just written. So wait (briefly, reading and dropping whatever comes; the body of
    /// a stranger is capped by <see cref="GrpcV5Extensions.MapGrpcV5"/>) for the client to half-close after its answer.
    /// </summary>
    internal static async Task AwaitHalfCloseAsync<TRequest>(IAsyncStreamReader<TRequest> requestStream, ServerCallContext context)
    {
        using var wait = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken);
        wait.CancelAfter(TimeSpan.FromSeconds(2));
        try
        {
            while (await requestStream.MoveNext(wait.Token).ConfigureAwait(false))
            {
            }
        }
        catch (Exception ex) when (ex is OperationCanceledException or IOException or InvalidOperationException)
        {
            // The client did not half-close in time or went away: end the call anyway.
        }
    }

    private static Status InternalError => V5Status.Of(Code.InternalServerError, "internal server error");

    /// <summary>A bug or I/O failure in our code, as opposed to a deliberate gRPC status or the client going away.</summary>
    private static bool IsHandlerFailure(Exception ex, ServerCallContext context) => ex switch
    {
        RpcException => false,
        // The client went away: a wait or read cancelled, the connection failed, or a write after the call ended (grpc-dotnet's
        // writer throws InvalidOperationException "the request is complete" then; until 2026-12-06 that was logged at Error).
        OperationCanceledException or IOException or InvalidOperationException when context.CancellationToken.IsCancellationRequested => false,
        // The client broke its HTTP/2 connection (a bad header block, a reset): Kestrel aborts the request stream, and a
        // read may see it before the call's token is cancelled (found by the network fuzzer under load, 2026-12-06).
        IOException { InnerException: Microsoft.AspNetCore.Connections.ConnectionAbortedException } => false,
        _ => true,
    };

    [LoggerMessage(Level = LogLevel.Error, Message = "gRPC call {Method} failed; answered INTERNAL_SERVER_ERROR")]
    private partial void LogHandlerFailed(Exception exception, string method);

    /// <summary>A response of type <typeparamref name="T"/> whose only field set is <c>status</c>: every
    /// MessagingService response (and TelemetryCommand) has one.</summary>
    internal static class StatusOnly<T>
    {
        private static readonly FieldDescriptor StatusField =
            ((IMessage)Activator.CreateInstance<T>()!).Descriptor.FindFieldByName("status")
            ?? throw new InvalidOperationException($"{typeof(T).Name} has no status field");

        public static T Create(Status status)
        {
            T message = Activator.CreateInstance<T>();
            StatusField.Accessor.SetValue((IMessage)message!, status);
            return message;
        }
    }
}
