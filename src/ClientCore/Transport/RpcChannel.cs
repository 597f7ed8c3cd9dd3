using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Grpc.Core;
using Grpc.Core.Interceptors;
using Grpc.Net.Client;
using HalfMsg.Protocol.Grpc;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// The client's gRPC transport: one <see cref="GrpcChannel"/> per broker endpoint (cleartext HTTP/2, h2c, or TLS with
/// <see cref="ClientConfig.Tls"/>: for every call and stream, to every address), the
/// generated <see cref="MessagingService.MessagingServiceClient"/> on it, and <see cref="SigningInterceptor"/> adding
/// the RocketMQ metadata and signature to every call. Failures below the RocketMQ layer become
/// <see cref="TransportException"/>; the body <c>Status</c> is left to the caller (it knows which codes mean success).
/// </summary>
internal sealed class RpcChannel : IDisposable
{
    /// <summary>
    /// Largest body this client can receive: the largest a HalfMsgBroker may store (its <c>--max-message-size</c> is
    /// at most 64 MiB, <c>RecordLimits.MaxMessageSizeLimit</c>). The producer refuses a larger body even when a broker
    /// would take it, since no client of ours could then receive it (or its check-back).
    /// </summary>
    public const int MaxBodySize = 64 * 1024 * 1024;

    /// <summary>
    /// Largest response message accepted: <see cref="MaxBodySize"/> plus 1 MiB for everything else a message carries
    /// (keys, properties and names are bounded by the broker to well under that), as the broker's own receive limit is
    /// <c>--max-message-size</c> + 1 MiB. The broker bounds what it sends; this only has to admit the largest message
    /// it may store. Until 2026-12-05 this was 16 MiB for a broker that stores up to 64 MiB: a message over 16 MiB was
    /// stored and never received (ResourceExhausted on every receive, each one a delivery attempt, then the DLQ), and
    /// its half's check-back ended the producer's Telemetry stream on every pass (found by review).
    /// </summary>
    public const int MaxReceiveMessageSize = MaxBodySize + 1024 * 1024;

    /// <summary>
    /// HTTP/2 PING on every connection after this much silence, and give up on it when the answer takes longer than
    /// <see cref="KeepAlivePingTimeout"/>: a broker whose connection died without a reset is noticed in about 10 s
    /// (the long-lived Telemetry stream would otherwise wait for TCP to time out), and the Telemetry session reconnects.
    /// </summary>
    public static readonly TimeSpan KeepAlivePingDelay = TimeSpan.FromSeconds(5);
    public static readonly TimeSpan KeepAlivePingTimeout = TimeSpan.FromSeconds(5);

    // One channel per address and use: as one of several addresses (its connections then wait for the broker's answer
    // for ConnectTimeout only, see Open) or alone. An address used both ways (a route's endpoint that is also an
    // address of the access point) has a channel for each. Each made once (a Lazy: GetOrAdd may run its factory twice
    // and drop one result, a channel never disposed).
    private readonly ConcurrentDictionary<(Endpoint Address, bool WithAlternatives), Lazy<(GrpcChannel Channel, MessagingService.MessagingServiceClient Client,
        HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions)>> _channels = new();
    // The address each multi-address endpoint talks to now (absent: the first).
    private readonly ConcurrentDictionary<Endpoint, int> _current = new();
    private readonly ClientConfig _config;
    private readonly HttpMessageHandler? _handler;
    private readonly SigningInterceptor _signing;
    private readonly ILogger? _logger;
    private int _disposed;

    /// <param name="config">The client's identity, credentials and timeouts.</param>
    /// <param name="handler">For tests: the HTTP handler every channel uses (not disposed here).</param>
    public RpcChannel(ClientConfig config, HttpMessageHandler? handler = null)
    {
        _config = config;
        _handler = handler;
        _signing = new SigningInterceptor(config);
        _logger = config.LoggerFactory.CreateLogger("HalfMsg.Client");
    }

    public ClientConfig Config => _config;

    /// <summary>The generated client for <paramref name="endpoint"/>'s current address, on that address's channel (for a
    /// single address, its channel as an address alone).</summary>
    public MessagingService.MessagingServiceClient Client(Endpoint endpoint) => Channel(endpoint.Address(CurrentIndex(endpoint)), endpoint.AddressCount > 1).Client;

    /// <summary>HalfMsgBroker's own TransactionService client for <paramref name="endpoint"/>'s current address, on the same channel.</summary>
    public HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions(Endpoint endpoint) =>
        Channel(endpoint.Address(CurrentIndex(endpoint)), endpoint.AddressCount > 1).Transactions;

    private (GrpcChannel Channel, MessagingService.MessagingServiceClient Client, HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions) Channel(Endpoint address, bool withAlternatives)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        ChannelRequestedForTests?.Invoke(address);
        var key = (address, withAlternatives);
        var made = _channels.GetOrAdd(key, static (k, self) => new(() => self.Open(k.Address, k.WithAlternatives), LazyThreadSafetyMode.ExecutionAndPublication), this);
        (GrpcChannel Channel, MessagingService.MessagingServiceClient Client, HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient Transactions) opened;
        try
        {
            opened = made.Value;
        }
        catch (Exception)
        {
            // Not kept: the next look-up tries again (a Lazy keeps its factory's exception).
            _channels.TryRemove(new KeyValuePair<(Endpoint, bool), Lazy<(GrpcChannel, MessagingService.MessagingServiceClient,
                HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient)>>(key, made));
            throw;
        }

        if (Volatile.Read(ref _disposed) != 0)
        {
            // Dispose ran between the check above and now (a failback probe's channel, or a call's, made as the client
            // was disposed): it may not have seen this channel. Disposed here (GrpcChannel.Dispose may run twice), so
            // that no channel outlives the client. Until the evening session of 2026-12-07 that one channel stayed, with
            // its connection and handler, after Dispose.
            _channels.TryRemove(new KeyValuePair<(Endpoint, bool), Lazy<(GrpcChannel, MessagingService.MessagingServiceClient,
                HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient)>>(key, made));
            opened.Channel.Dispose();
            ObjectDisposedException.ThrowIf(true, this);
        }

        return opened;
    }

    /// <summary>For tests: called in every channel look-up after the disposed check, before the channel is found or made
    /// (where a Dispose on another thread used to leave the channel made undisposed).</summary>
    internal Action<Endpoint>? ChannelRequestedForTests { get; set; }

    /// <summary>For tests: the channels open now (none after <see cref="Dispose"/>).</summary>
    internal int OpenChannelsForTests => _channels.Count;

    /// <summary>For tests: whether a failback probe of <paramref name="endpoint"/> runs now.</summary>
    internal bool ProbingForTests(Endpoint endpoint) => _failback.TryGetValue(endpoint, out Failback? failback) && Volatile.Read(ref failback.Probing) != 0;

    /// <summary>Raised (on the failing call's thread, or the failback probe's) when a multi-address endpoint moves to
    /// another address, so that a long-lived stream on the old one (Telemetry) can follow.</summary>
    public event Action<Endpoint>? AddressChanged;

    /// <summary>Which address of <paramref name="endpoint"/> calls go to now (0 for a single-address endpoint). Cheap:
    /// a dictionary read; the move back to an earlier address is the failback timer's (<see cref="ArmFailback"/>).</summary>
    public int CurrentIndex(Endpoint endpoint)
    {
        if (endpoint.AddressCount == 1)
        {
            return 0;
        }

        return _current.TryGetValue(endpoint, out int index) ? index : 0;
    }

    /// <summary>The failback timer of a multi-address endpoint that moved away from its first address, and whether a
    /// probe of the addresses before the current one is running.</summary>
    private sealed class Failback
    {
        public Timer? Timer;
        public int Probing;
    }

    private readonly ConcurrentDictionary<Endpoint, Failback> _failback = new();

    // A call to a service no broker has: any answer from the broker (UNIMPLEMENTED from grpc-dotnet and grpc-java
    // servers alike) says the address is up, at no cost to the broker and without RocketMQ meaning.
    internal static readonly Method<byte[], byte[]> ProbeMethod = new(MethodType.Unary, "halfmsg.client.v1.AddressProbe", "Probe",
        Marshallers.Create(static b => b, static b => b), Marshallers.Create(static b => b, static b => b));

    /// <summary>
    /// Starts (or restarts) <paramref name="endpoint"/>'s failback timer: <see cref="ClientConfig.FailbackInterval"/>
    /// from now it probes the addresses before the current one (<see cref="ProbeBackAsync"/>). The timer is the
    /// client's own, not a call's: a client that makes no calls (a producer holding only its Telemetry stream for
    /// check-backs, an idle consumer) moves back too. Armed only while the endpoint is away from its first address,
    /// never for a single address, never after <see cref="Dispose"/>. Until the afternoon session of 2026-12-07 the
    /// probe was started by a call, and a client that made none stayed on the address it had moved to.
    /// </summary>
    private void ArmFailback(Endpoint endpoint)
    {
        if (_config.FailbackInterval == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        Failback failback = _failback.GetOrAdd(endpoint, static _ => new Failback());
        lock (failback)
        {
            if (Volatile.Read(ref _disposed) != 0)
            {
                return;
            }

            if (failback.Timer is null)
            {
                // Made by the call whose failure moved the endpoint away: without its execution context, which a timer
                // would otherwise run every probe in (that call's trace, as every probe's traceparent, and its
                // AsyncLocals, held for the client's lifetime). The afternoon session of 2026-12-07.
                bool suppress = !ExecutionContext.IsFlowSuppressed();
                if (suppress)
                {
                    ExecutionContext.SuppressFlow();
                }

                try
                {
                    failback.Timer = new Timer(_ => OnFailbackDue(endpoint, failback), null, Timeout.Infinite, Timeout.Infinite);
                }
                finally
                {
                    if (suppress)
                    {
                        ExecutionContext.RestoreFlow();
                    }
                }
            }

            // A Timer takes at most 0xfffffffe ms; a longer interval (weeks) waits for that long.
            failback.Timer.Change(TimeSpan.FromMilliseconds(Math.Min(_config.FailbackInterval.TotalMilliseconds, int.MaxValue)), Timeout.InfiniteTimeSpan);
        }
    }

    private void OnFailbackDue(Endpoint endpoint, Failback failback)
    {
        if (Volatile.Read(ref _disposed) != 0 || !_current.TryGetValue(endpoint, out int index) || index == 0
            || Interlocked.CompareExchange(ref failback.Probing, 1, 0) != 0)
        {
            return; // back on the first address, or a probe runs (it re-arms the timer when done)
        }

        _ = ProbeBackAsync(endpoint, failback);
    }

    /// <summary>
    /// Tries the addresses before <paramref name="endpoint"/>'s current one, in order (each on its own channel, so a
    /// connection made stays for the calls that follow): calls go to the first whose broker answers, and the Telemetry
    /// stream follows (<see cref="AddressChanged"/>); when none does (refused, or silent for
    /// <see cref="ClientConfig.ConnectTimeout"/>), they are tried again after <see cref="ClientConfig.FailbackInterval"/>.
    /// Only the probe waits; no call is held. With three addresses, a client on the third whose second came back moves
    /// to the second while the first stays down, and to the first once it answers: until the afternoon session of
    /// 2026-12-07 only the first was probed, and such a client stayed on the third.
    /// The official Java client's channel (round robin over the addresses, reconnecting each failed one with a backoff of
    /// up to 2 min) also comes back to an address that returns; ours prefers the earlier address, as an access point
    /// lists its preferred broker first.
    /// </summary>
    private async Task ProbeBackAsync(Endpoint endpoint, Failback failback)
    {
        try
        {
            for (int i = 0; Volatile.Read(ref _disposed) == 0 && i < CurrentIndex(endpoint); i++)
            {
                (bool alive, string? reason) = await ProbeAsync(endpoint.Address(i)).ConfigureAwait(false);
                if (!alive)
                {
                    _logger?.LogDebug("{Address} of {Endpoint} still does not answer ({Reason})", endpoint.Address(i), endpoint, reason);
                    continue;
                }

                if (MoveBack(endpoint, i, out int from))
                {
                    _logger?.LogInformation("{Address} of {Endpoint} answers again; using it instead of {Current}", endpoint.Address(i), endpoint,
                        endpoint.Address(from));
                    AddressChanged?.Invoke(endpoint);
                }

                break;
            }
        }
        catch (Exception ex)
        {
            // Never an unobserved fault of a background task; the next interval tries again.
            _logger?.LogDebug(ex, "Failback probe of {Endpoint} failed", endpoint);
        }
        finally
        {
            Volatile.Write(ref failback.Probing, 0);
            if (CurrentIndex(endpoint) != 0)
            {
                ArmFailback(endpoint);
            }
        }
    }

    // Calls of endpoint go to address `to` when they go to a later one now (not after the client was disposed).
    private bool MoveBack(Endpoint endpoint, int to, out int from)
    {
        while (Volatile.Read(ref _disposed) == 0 && _current.TryGetValue(endpoint, out from) && from > to)
        {
            if (_current.TryUpdate(endpoint, to, from))
            {
                return true;
            }
        }

        from = 0;
        return false;
    }

    // One probe of one address: alive when a broker answered, with any gRPC status.
    private async Task<(bool Alive, string? Reason)> ProbeAsync(Endpoint address)
    {
        try
        {
            var invoker = Channel(address, withAlternatives: true).Channel.CreateCallInvoker();
            using AsyncUnaryCall<byte[]> call = invoker.AsyncUnaryCall(ProbeMethod, null,
                new CallOptions(deadline: DateTime.UtcNow + 3 * _config.ConnectTimeout), []); // past the handler's TLS bound (2x)
            await call.ResponseAsync.ConfigureAwait(false);
            return (true, null);
        }
        catch (RpcException ex) when (ex.StatusCode is not (StatusCode.Unavailable or StatusCode.DeadlineExceeded or StatusCode.Cancelled
            or StatusCode.Internal or StatusCode.Unknown) && !IsNotGrpcAnswer(ex))
        {
            return (true, null); // the broker answered, with its status for a service it does not have
        }
        catch (Exception ex) when (ex is RpcException or ObjectDisposedException or InvalidOperationException)
        {
            return (false, ex is RpcException rpc ? $"{rpc.StatusCode}: {rpc.Status.Detail}" : ex.Message);
        }
    }

    /// <summary>
    /// True when <paramref name="ex"/>'s status is grpc-dotnet's reading of an answer that no gRPC server gave: a bare
    /// HTTP status (a 404 reads as UNIMPLEMENTED, the status the probe takes from a broker), an HTTP/1.1 answer, a
    /// response that is not application/grpc. Such an address has something in front of it (an ingress's or a load
    /// balancer's default backend) but no broker behind: the probe does not move back to it. Until review on
    /// 2026-12-07 it did, and every call then failed there with UNIMPLEMENTED, which moves no call away again.
    /// </summary>
    internal static bool IsNotGrpcAnswer(RpcException ex) => ex.Status.Detail.StartsWith("Bad gRPC response", StringComparison.Ordinal);

    /// <summary>
    /// A call to address <paramref name="index"/> of <paramref name="endpoint"/> failed at the transport (unavailable):
    /// later calls go to the next address, as a gRPC channel over an address list (the Java client's) picks another
    /// address once its connection fails. Nothing changes when another call moved away from that address already, or
    /// for a single address. The move is for every caller: a dead address is tried again only after all the others.
    /// </summary>
    public void MarkFailed(Endpoint endpoint, int index, Exception? reason)
    {
        if (endpoint.AddressCount == 1)
        {
            return;
        }

        int next = (index + 1) % endpoint.AddressCount;
        bool moved = index == 0
            ? _current.TryAdd(endpoint, next) || _current.TryUpdate(endpoint, next, 0)
            : _current.TryUpdate(endpoint, next, index);
        if (moved)
        {
            if (next != 0)
            {
                // Away from the first address: the earlier ones are tried again after the failback interval.
                ArmFailback(endpoint);
            }

            _logger?.LogWarning("{Address} of {Endpoint} failed ({Reason}); using {Next}", endpoint.Address(index), endpoint,
                reason?.Message, endpoint.Address(next));
            AddressChanged?.Invoke(endpoint);
        }
    }

    private (GrpcChannel, MessagingService.MessagingServiceClient, HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient) Open(Endpoint endpoint, bool withAlternatives)
    {
        HttpMessageHandler? handler = _handler;
        if (handler is null)
        {
            var sockets = new SocketsHttpHandler
            {
                EnableMultipleHttp2Connections = true,
                // TCP (and, in cleartext, the broker's answer to the HTTP/2 preface) within ConnectTimeout is the
                // callback's bound, and its failure a connection's; with TLS the handler's bound, twice as long, covers
                // the handshake after it. Not the same bound: when both fire, the handler's wins and the failure is a
                // cancellation. Until the midday session of 2026-12-07 this was 5 s, longer than the default call
                // deadline, and an address that accepted connections without answering was never passed over.
                // The answer is awaited only on the channel of an address used as one of a multi-address endpoint's: an
                // address alone has no other to pass over to, and a broker slow to answer its connection (a WAN, a
                // load balancer connecting its backend, a busy process) is waited for within the call's deadline, as
                // before. Until review on 2026-12-07 a single address that answered later than ConnectTimeout (by
                // default half the RequestTimeout) failed every call, Unavailable, though it would have answered in time.
                // Until the evening session of 2026-12-07 an address had one channel, whose connections waited for
                // ConnectTimeout only once any multi-address endpoint had it, also for the calls made to it alone (a
                // route's endpoint that is also an address of the access point): those failed as above.
                ConnectTimeout = _config.Tls is null ? Timeout.InfiniteTimeSpan : _config.ConnectTimeout + _config.ConnectTimeout,
                ConnectCallback = AddressConnector.Callback(_config.ConnectTimeout, () => _config.Tls is null && withAlternatives),
                // With TLS the same wait for the broker's answer, after the handshake (the connect callback runs before
                // it): a broker that completes the handshake and then says nothing fails as a connection, like one
                // silent in cleartext. The afternoon session of 2026-12-07. An address alone is not waited for; its
                // connection is only watched until set up (AddressConnector.WatchedStream, for what TlsFailure says of
                // one that ends first). Cleartext has no filter.
                PlaintextStreamFilter = _config.Tls is null ? null : AddressConnector.PlaintextFilter(_config.ConnectTimeout, () => withAlternatives),
                PooledConnectionIdleTimeout = TimeSpan.FromMinutes(5),
                KeepAlivePingDelay = KeepAlivePingDelay,
                KeepAlivePingTimeout = KeepAlivePingTimeout,
                KeepAlivePingPolicy = HttpKeepAlivePingPolicy.WithActiveRequests,
                UseProxy = false,
            };
            _config.Tls?.Apply(sockets);
            handler = sockets;
        }

        var channel = GrpcChannel.ForAddress(endpoint.BaseUriFor(_config.Tls is not null), new GrpcChannelOptions
        {
            HttpHandler = handler,
            DisposeHttpClient = _handler is null,
            MaxReceiveMessageSize = MaxReceiveMessageSize,
            MaxSendMessageSize = null,
        });
        CallInvoker signed = channel.Intercept(_signing);
        return (channel, new MessagingService.MessagingServiceClient(signed), new HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient(signed));
    }

    /// <summary>Call options with a deadline of <paramref name="timeout"/> (the request timeout when null).</summary>
    public CallOptions Options(TimeSpan? timeout, CancellationToken ct)
        => new(deadline: DateTime.UtcNow + (timeout ?? _config.RequestTimeout), cancellationToken: ct);

    /// <summary>A unary call: <c>(client, options) =&gt; client.SendMessageAsync(request, options)</c>. To an endpoint of
    /// several addresses it goes to the current one; when that one cannot be connected to (the request never left),
    /// to the next, within the same deadline, until one answers or every address failed to connect.</summary>
    public Task<TResponse> UnaryAsync<TResponse>(Endpoint endpoint,
        Func<MessagingService.MessagingServiceClient, CallOptions, AsyncUnaryCall<TResponse>> call, TimeSpan? timeout, CancellationToken ct)
        => endpoint.AddressCount == 1
            ? UnaryAsync(call(Client(endpoint), Options(timeout, ct)), ct, _config.Tls)
            : FailoverUnaryAsync(endpoint, (address, options) => call(Channel(address, withAlternatives: true).Client, options), timeout, ct);

    /// <summary>A unary call of HalfMsgBroker's own TransactionService (see <c>halfmsg/v1/transactions.proto</c>).</summary>
    public Task<TResponse> TransactionsUnaryAsync<TResponse>(Endpoint endpoint,
        Func<HalfMsg.Protocol.V1.TransactionService.TransactionServiceClient, CallOptions, AsyncUnaryCall<TResponse>> call, TimeSpan? timeout, CancellationToken ct)
        => endpoint.AddressCount == 1
            ? UnaryAsync(call(Transactions(endpoint), Options(timeout, ct)), ct, _config.Tls)
            : FailoverUnaryAsync(endpoint, (address, options) => call(Channel(address, withAlternatives: true).Transactions, options), timeout, ct);

    private async Task<TResponse> FailoverUnaryAsync<TResponse>(Endpoint endpoint, Func<Endpoint, CallOptions, AsyncUnaryCall<TResponse>> call,
        TimeSpan? timeout, CancellationToken ct)
    {
        CallOptions options = Options(timeout, ct); // one deadline for the call, whichever address answers it
        List<string>? refused = null;
        for (int tried = 1; ; tried++)
        {
            int index = CurrentIndex(endpoint);
            Endpoint address = endpoint.Address(index);
            try
            {
                return await UnaryAsync(call(address, options), ct, _config.Tls).ConfigureAwait(false);
            }
            // A failed TLS handshake is Internal in grpc-dotnet, not Unavailable: the request never left either.
            catch (TransportException ex) when (ex.GrpcStatus == StatusCode.Unavailable || IsConnectFailure(ex))
            {
                MarkFailed(endpoint, index, ex);
                if (!IsConnectFailure(ex))
                {
                    throw; // the request may have reached the broker: the caller's own retry policy decides
                }

                (refused ??= []).Add($"{address}: {ex.Message}");
                if (tried >= endpoint.AddressCount)
                {
                    throw new TransportException(StatusCode.Unavailable,
                        $"No address of {endpoint} could be connected to ({string.Join("; ", refused)})", ex.RequestId, ex);
                }
            }
        }
    }

    /// <summary>True when <paramref name="ex"/> says the connection could not be made (refused, unreachable, name not
    /// resolved, or its TLS handshake failed): the request was never sent, so it may go to another address. A socket
    /// error under an HTTP failure that is not a connection's (the request was being sent, or its answer awaited, when
    /// the connection failed: "no route to host" on a connection already made) is not one: the broker may have the
    /// request. Until review on 2026-12-07 any unreachable or refused socket error anywhere in the chain counted, and
    /// such a request (a half, a commit) went again to the next address within the call.</summary>
    internal static bool IsConnectFailure(Exception ex)
    {
        bool sending = false; // below an HttpRequestException that is not a connection failure
        for (Exception? e = ex; e is not null; e = e is RpcException { Status.DebugException: { } debug } ? debug : e.InnerException)
        {
            switch (e)
            {
                // Our connect step's: the broker did not answer the HTTP/2 preface (cleartext, or after TLS), before
                // anything of the request was written, under whatever the handler wrapped it in.
                case AddressConnector.NoAnswerException:
                    return true;
                // The connection ended before the handler wrote its first request on it (the broker answered the preface
                // and then closed or reset it, say): nothing of the request left. The evening session of 2026-12-07.
                case AddressConnector.ConnectionEndedException { RequestWritten: false }:
                    return true;
                case AddressConnector.ConnectionEndedException:
                    sending = true;
                    break;
                case HttpRequestException { HttpRequestError: HttpRequestError.ConnectionError or HttpRequestError.NameResolutionError
                    or HttpRequestError.SecureConnectionError }:
                    return true;
                // A new HTTP/2 connection that shut down before the pool gave it its first request (with TLS 1.3, a
                // broker refusing the client's certificate after the handshake): no stream of it was used.
                case HttpRequestException when IsHttp2NotEstablished(e):
                    return true;
                case HttpRequestException:
                    sending = true;
                    break;
                // The handler's ConnectTimeout (a TLS handshake the broker did not answer): an OperationCanceledException
                // over a TimeoutException, with no request sent.
                case TimeoutException when !sending:
                    return true;
                case System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionRefused
                    or System.Net.Sockets.SocketError.HostUnreachable or System.Net.Sockets.SocketError.NetworkUnreachable
                    or System.Net.Sockets.SocketError.HostNotFound or System.Net.Sockets.SocketError.TryAgain } when !sending:
                    return true;
            }
        }

        return false;
    }

    private static async Task<TResponse> UnaryAsync<TResponse>(AsyncUnaryCall<TResponse> started, CancellationToken ct, ClientTls? tls)
    {
        using AsyncUnaryCall<TResponse> pending = started;
        try
        {
            return await pending.ResponseAsync.ConfigureAwait(false);
        }
        catch (Exception ex) when (Translate(ex, ct, tls) is { } translated)
        {
            throw translated;
        }
    }

    /// <summary>A server-streaming call with a deadline of <paramref name="timeout"/>.
    /// To an endpoint of several addresses it goes to the current one; a transport failure moves later calls to the
    /// next (the caller retries).</summary>
    public StreamingCall<TResponse> ServerStreaming<TResponse>(Endpoint endpoint,
        Func<MessagingService.MessagingServiceClient, CallOptions, AsyncServerStreamingCall<TResponse>> call, TimeSpan timeout, CancellationToken ct)
    {
        int index = CurrentIndex(endpoint);
        return new(call(Channel(endpoint.Address(index), endpoint.AddressCount > 1).Client, Options(timeout, ct)), ct, OnStreamFailure(endpoint, index), _config.Tls);
    }

    /// <summary>The Telemetry stream to <paramref name="endpoint"/>'s current address (<paramref name="index"/>): no
    /// deadline, as the official clients do. A transport failure moves later calls (the reconnect) to the next address.</summary>
    public StreamingCall<TelemetryCommand> Telemetry(Endpoint endpoint, CancellationToken ct, out int index)
    {
        index = CurrentIndex(endpoint);
        return new(Channel(endpoint.Address(index), endpoint.AddressCount > 1).Client.Telemetry(new CallOptions(cancellationToken: ct)), ct, OnStreamFailure(endpoint, index), _config.Tls);
    }

    /// <summary>The Telemetry stream to <paramref name="endpoint"/>'s current address.</summary>
    public StreamingCall<TelemetryCommand> Telemetry(Endpoint endpoint, CancellationToken ct) => Telemetry(endpoint, ct, out _);

    private Action<Exception>? OnStreamFailure(Endpoint endpoint, int index) => endpoint.AddressCount == 1
        ? null
        : ex =>
        {
            if (ex is TransportException { GrpcStatus: StatusCode.Unavailable } || (ex is TransportException && IsConnectFailure(ex)))
            {
                MarkFailed(endpoint, index, ex);
            }
        };

    /// <summary>
    /// A failed TLS connection in <paramref name="ex"/>'s chain, said plainly with what to do (the gRPC status detail
    /// buries it under "Error starting gRPC call"); null when the failure was not one. <paramref name="tls"/>: the
    /// channel's TLS, null for cleartext.
    /// </summary>
    internal static string? TlsFailure(Exception ex, ClientTls? tls)
    {
        if (tls is null)
        {
            return null;
        }

        // The handshake failed: the broker's certificate refused by the client's check (ClientTls's, by its type; until
        // the evening session of 2026-12-07 by the runtime's text "remote certificate"), or anything else (a broker
        // without TLS, or refusing the client's certificate with TLS 1.2).
        bool brokerRefused = false;
        System.Security.Authentication.AuthenticationException? failed = null;
        for (Exception? e = ex; e is not null; e = e is RpcException { Status.DebugException: { } debug } ? debug : e.InnerException)
        {
            if (e is BrokerCertificateRejectedException)
            {
                brokerRefused = true;
            }

            if (e is System.Security.Authentication.AuthenticationException auth)
            {
                failed ??= auth;
            }
        }

        if (failed is not null)
        {
            string hint = brokerRefused
                ? " The broker's certificate is not trusted, or does not name the host connected to: trust it (or its CA) with Tls.TrustedCertificateFile."
                : " A broker without TLS (--grpc-tls off) needs UseTls off; one that requires a client certificate (--tls-client-auth require) needs Tls.ClientCertificate(File), issued by its --tls-client-ca.";
            return $"TLS handshake failed: {failed.Message.TrimEnd('.')}{(failed.InnerException is { } inner ? " (" + inner.Message + ")" : string.Empty)}.{hint}";
        }

        // With TLS 1.3 the client's side of the handshake ends before the broker has checked the client's certificate:
        // a refused one shows as the connection closed, reset or disposed before the broker's first bytes (in several
        // shapes, depending on when the client notices). Every TLS HTTP/2 connection is watched until then
        // (AddressConnector.WatchedStream), so its end before the broker answered says so by its type; one that ended
        // after the broker answered (its SETTINGS read) is no refused certificate, and gets no hint. Until the evening
        // session of 2026-12-07 the hint was given for any failure of a call's start that was not a connection's
        // (matched on grpc-dotnet's status text), also when the broker had answered, or had reset the connection
        // after taking the request. One shape carries no cause: the handler's new HTTP/2 connection shut down (the
        // broker's alert read) before its first request was given to it, a bare HttpRequestException (the afternoon
        // session of 2026-12-07), told by its text only (IsHttp2NotEstablished).
        if (HasBeforeAnswerEnd(ex) || HasHttp2NotEstablished(ex))
        {
            return "the TLS connection was closed before the broker answered. If the broker requires client certificates (--tls-client-auth require), this is how it refuses a client "
                + (tls.HasClientCertificate
                    ? "whose certificate its --tls-client-ca did not issue (or that is expired, or not for client authentication): check Tls.ClientCertificate(File)."
                    : "without one: set Tls.ClientCertificate(File) to a certificate issued by its --tls-client-ca.")
                + $" ({ex.GetBaseException().Message})";
        }

        return null;
    }

    private static bool HasBeforeAnswerEnd(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e is RpcException { Status.DebugException: { } debug } ? debug : e.InnerException)
        {
            if (e is AddressConnector.ConnectionEndedException { BeforeAnswer: true })
            {
                return true;
            }
        }

        return false;
    }

    private static bool HasHttp2NotEstablished(Exception ex)
    {
        for (Exception? e = ex; e is not null; e = e is RpcException { Status.DebugException: { } debug } ? debug : e.InnerException)
        {
            if (IsHttp2NotEstablished(e))
            {
                return true;
            }
        }

        return false;
    }

    // SocketsHttpHandler's failure of a new HTTP/2 connection that could not take its first request (it shut down
    // first): an HttpRequestException with nothing under it and no error code of its own, told apart by its text only
    // (SR.net_http_http2_connection_not_established, as the runtime's resources give it, or its key when the app is
    // trimmed with UseSystemResourceKeys, or the English text). The last resort, kept because the runtime exposes no
    // type, HttpRequestError or HTTP/2 error code for it and drops the cause (our ConnectionEndedException) that every
    // other shape carries: about one TLS 1.3 client-certificate refusal in fifteen still arrives so (the evening
    // session of 2026-12-07, TlsClientCertificateRefusalTests).
    private static bool IsHttp2NotEstablished(Exception e) =>
        e is HttpRequestException { InnerException: null, HttpRequestError: HttpRequestError.Unknown } http
        && (http.Message.Contains("net_http_http2_connection_not_established", StringComparison.Ordinal)
            || http.Message.Contains("did not complete the HTTP/2 handshake", StringComparison.Ordinal)
            || (Http2NotEstablishedText.Value is { Length: > 0 } text && http.Message == text));

    private static readonly Lazy<string?> Http2NotEstablishedText = new(static () =>
    {
        try
        {
            return new System.Resources.ResourceManager("FxResources.System.Net.Http.SR", typeof(HttpRequestException).Assembly)
                .GetString("net_http_http2_connection_not_established");
        }
        catch (Exception ex) when (ex is System.Resources.MissingManifestResourceException or InvalidOperationException)
        {
            return null;
        }
    });

    /// <summary>Turns gRPC failures into <see cref="TransportException"/>; null to rethrow unchanged (client
    /// exceptions, or cancellation requested by the caller).</summary>
    internal static Exception? Translate(Exception ex, CancellationToken callerToken, ClientTls? tls = null) => ex switch
    {
        ClientException => null,
        OperationCanceledException when callerToken.IsCancellationRequested => null,
        RpcException { StatusCode: StatusCode.Cancelled } when callerToken.IsCancellationRequested => new OperationCanceledException(callerToken),
        RpcException rpc => new TransportException(rpc.StatusCode, $"grpc-status {(int)rpc.StatusCode} ({rpc.StatusCode}): {TlsFailure(rpc, tls) ?? rpc.Status.Detail}",
            rpc.Trailers.GetValue(RocketMqHeaders.RequestId), rpc),
        HttpRequestException or IOException or ObjectDisposedException => new TransportException(StatusCode.Unavailable, TlsFailure(ex, tls) ?? ex.Message, null, ex),
        _ => null,
    };

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        foreach (Failback failback in _failback.Values)
        {
            lock (failback)
            {
                failback.Timer?.Dispose();
                failback.Timer = null;
            }
        }

        // Each removed before it is disposed: a channel made after this (a look-up that passed the disposed check
        // before it was set) is disposed by that look-up (see Channel).
        foreach (var key in _channels.Keys)
        {
            if (_channels.TryRemove(key, out var made) && made.IsValueCreated)
            {
                made.Value.Channel.Dispose();
            }
        }
    }
}

/// <summary>
/// Adds what every RocketMQ 5 call carries (<c>x-mq-client-id</c>, language, protocol, version, request id, namespace)
/// and, with credentials, the MQv2-HMAC-SHA1 signature over a fresh <c>x-mq-date-time</c>: in one place, for every
/// kind of call.
/// </summary>
internal sealed class SigningInterceptor(ClientConfig config) : Interceptor
{
    public override AsyncUnaryCall<TResponse> AsyncUnaryCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncUnaryCallContinuation<TRequest, TResponse> continuation)
        => continuation(request, Signed(context));

    public override AsyncServerStreamingCall<TResponse> AsyncServerStreamingCall<TRequest, TResponse>(TRequest request,
        ClientInterceptorContext<TRequest, TResponse> context, AsyncServerStreamingCallContinuation<TRequest, TResponse> continuation)
        => continuation(request, Signed(context));

    public override AsyncDuplexStreamingCall<TRequest, TResponse> AsyncDuplexStreamingCall<TRequest, TResponse>(
        ClientInterceptorContext<TRequest, TResponse> context, AsyncDuplexStreamingCallContinuation<TRequest, TResponse> continuation)
        => continuation(Signed(context));

    private ClientInterceptorContext<TRequest, TResponse> Signed<TRequest, TResponse>(ClientInterceptorContext<TRequest, TResponse> context)
        where TRequest : class
        where TResponse : class
    {
        var headers = new Metadata();
        if (context.Options.Headers is { } existing)
        {
            foreach (Metadata.Entry entry in existing)
            {
                headers.Add(entry);
            }
        }

        // x-mq-date-time has a resolution of one second and the signature covers only it: both are computed once a
        // second, not per call (an HMAC-SHA1 and two string formats per RPC on the hot path before).
        Stamp stamp = CurrentStamp();
        headers.Add(RocketMqHeaders.ClientId, config.ClientId);
        headers.Add(RocketMqHeaders.Language, "DOTNET");
        headers.Add(RocketMqHeaders.AcceptDigest, RocketMqHeaders.DigestCrc32);
        if (config.AcceptsCheckTokens)
        {
            headers.Add(CheckTokenIds.AcceptHeader, CheckTokenIds.AcceptValue);
        }

        headers.Add(RocketMqHeaders.Protocol, RocketMqHeaders.ProtocolValue);
        headers.Add(RocketMqHeaders.ClientVersion, ClientConfig.Version);
        headers.Add(RocketMqHeaders.DateTime, stamp.DateTime);
        headers.Add(RocketMqHeaders.RequestId, Guid.NewGuid().ToString());
        if (config.Namespace is { } ns)
        {
            headers.Add(RocketMqHeaders.Namespace, ns);
        }

        if (stamp.Authorization is { } authorization)
        {
            headers.Add(RocketMqHeaders.Authorization, authorization);
        }

        return new ClientInterceptorContext<TRequest, TResponse>(context.Method, context.Host, context.Options.WithHeaders(headers));
    }

    private sealed record Stamp(long Second, string DateTime, string? Authorization);

    private Stamp? _stamp;

    private Stamp CurrentStamp()
    {
        DateTimeOffset now = DateTimeOffset.UtcNow;
        long second = now.ToUnixTimeSeconds();
        Stamp? stamp = Volatile.Read(ref _stamp);
        if (stamp is not null && stamp.Second == second)
        {
            return stamp;
        }

        string dateTime = MqSignature.FormatDateTime(now);
        stamp = new Stamp(second, dateTime, config.Credentials is { } c ? MqSignature.Sign(c.AccessKey, c.AccessSecret, dateTime) : null);
        Volatile.Write(ref _stamp, stamp);
        return stamp;
    }
}
