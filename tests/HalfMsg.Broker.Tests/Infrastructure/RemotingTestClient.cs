using System.Buffers;
using System.Collections.Concurrent;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Channels;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// A raw Remoting connection for tests: requests matched to responses by opaque, one-way sends, raw bytes, and the
/// requests the broker starts (CHECK_TRANSACTION_STATE, NOTIFY_CONSUMER_IDS_CHANGED) in <see cref="ServerRequests"/>.
/// </summary>
public sealed class RemotingTestClient : IAsyncDisposable
{
    private static int s_opaque;
    private readonly TcpClient _tcp;
    private readonly Stream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly ConcurrentDictionary<int, TaskCompletionSource<RemotingCommand>> _pending = new();
    private readonly Channel<RemotingCommand> _serverRequests = Channel.CreateUnbounded<RemotingCommand>();
    private readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly Task _reader;
    // Set while the test holds the socket unread (PauseReading): the read loop waits on it before its next read.
    private volatile TaskCompletionSource? _readGate;

    private RemotingTestClient(TcpClient tcp, Stream? stream = null)
    {
        _tcp = tcp;
        _stream = stream ?? tcp.GetStream();
        _reader = Task.Run(ReadLoopAsync);
    }

    /// <param name="local">The client socket's own address (another loopback address, 127.0.0.2, is another peer to the
    /// broker); null: the system's choice.</param>
    public static async Task<RemotingTestClient> ConnectAsync(int port, System.Net.IPAddress? local = null)
    {
        var tcp = local is null ? new TcpClient() : new TcpClient(new System.Net.IPEndPoint(local, 0));
        await tcp.ConnectAsync("127.0.0.1", port);
        return new RemotingTestClient(tcp);
    }

    /// <summary>
    /// A Remoting connection over TLS, as a Java 4.x client with <c>-Dtls.enable=true</c> opens one: the handshake first,
    /// then the same frames. <paramref name="validate"/> sees the server's certificate (default: accept any, as the Java
    /// client's default <c>tls.test.mode.enable=true</c>). Throws if the handshake fails (e.g. <c>--remoting-tls off</c>).
    /// </summary>
    public static async Task<RemotingTestClient> ConnectTlsAsync(int port, System.Net.Security.RemoteCertificateValidationCallback? validate = null,
        TimeSpan? handshakeTimeout = null, System.Security.Cryptography.X509Certificates.X509Certificate2? clientCertificate = null)
    {
        var tcp = new TcpClient();
        try
        {
            await tcp.ConnectAsync("127.0.0.1", port);
            var ssl = new System.Net.Security.SslStream(tcp.GetStream(), leaveInnerStreamOpen: false, validate ?? ((_, _, _, _) => true));
            using var timeout = new CancellationTokenSource(handshakeTimeout ?? TimeSpan.FromSeconds(30));
            await ssl.AuthenticateAsClientAsync(new System.Net.Security.SslClientAuthenticationOptions
            {
                TargetHost = "localhost",
                // Presented whatever CA names the server lists (it lists none).
                LocalCertificateSelectionCallback = clientCertificate is null ? null : (_, _, _, _, _) => clientCertificate,
            }, timeout.Token);
            return new RemotingTestClient(tcp, ssl);
        }
        catch
        {
            tcp.Dispose();
            throw;
        }
    }

    /// <summary>MQVersion ordinal sent when a request sets none: V4_9_4 (401), as a current Java 4.x client.</summary>
    public const int JavaClientVersion = 401;

    public string ClientId { get; init; } = "127.0.0.1@test-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Responses received whose opaque matched no pending request (e.g. a wrongly answered one-way).</summary>
    public ConcurrentQueue<RemotingCommand> Unmatched { get; } = new();

    public ChannelReader<RemotingCommand> ServerRequests => _serverRequests.Reader;

    /// <summary>Requests sent and not answered yet. Answers are read in the order the broker wrote them: once a later
    /// request's answer came, an earlier request not counted here was answered before it.</summary>
    public int PendingRequests => _pending.Count;

    /// <summary>Completes when the broker closes the connection.</summary>
    public Task Closed => _closed.Task;

    /// <summary>Stops reading the socket (after the read under way, at most one buffer more) until
    /// <see cref="ResumeReading"/>: a client that is busy or slow, whose socket buffers fill.</summary>
    public void PauseReading() => _readGate ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Reads the socket again after <see cref="PauseReading"/>.</summary>
    public void ResumeReading()
    {
        var gate = _readGate;
        _readGate = null;
        gate?.TrySetResult();
    }

    private async Task ReadLoopAsync()
    {
        var reader = PipeReader.Create(_stream);
        try
        {
            while (true)
            {
                if (_readGate is { } gate) await gate.Task;
                var result = await reader.ReadAsync();
                var buffer = result.Buffer;
                while (RemotingFrame.TryReadFrame(ref buffer, 64 * 1024 * 1024, out var cmd))
                {
                    if (!cmd.IsResponse) _serverRequests.Writer.TryWrite(cmd);
                    else if (_pending.TryRemove(cmd.Opaque, out var tcs)) tcs.TrySetResult(cmd);
                    else Unmatched.Enqueue(cmd);
                }
                reader.AdvanceTo(buffer.Start, buffer.End);
                if (result.IsCompleted) break;
            }
        }
        catch (Exception)
        {
        }
        finally
        {
            _closed.TrySetResult();
            foreach (var p in _pending.Values) p.TrySetException(new IOException("connection closed"));
        }
    }

    public async Task<RemotingCommand> InvokeAsync(RemotingCommand request, TimeSpan? timeout = null)
    {
        if (request.Opaque == 0) request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = JavaClientVersion;
        var tcs = new TaskCompletionSource<RemotingCommand>(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[request.Opaque] = tcs;
        await SendRawAsync(RemotingFrame.ToArray(request));
        return await tcs.Task.WaitAsync(timeout ?? TimeSpan.FromSeconds(30));
    }

    public Task<RemotingCommand> InvokeAsync(int code, Dictionary<string, string>? ext = null, byte[]? body = null, TimeSpan? timeout = null)
        => InvokeAsync(RemotingCommand.Request(code, ext, body ?? ReadOnlyMemory<byte>.Empty), timeout);

    public async Task SendOnewayAsync(RemotingCommand request)
    {
        if (request.Opaque == 0) request.Opaque = Interlocked.Increment(ref s_opaque);
        if (request.Version == 0) request.Version = JavaClientVersion;
        request.Flag |= RemotingCommand.OnewayFlag;
        await SendRawAsync(RemotingFrame.ToArray(request));
    }

    public async Task SendRawAsync(ReadOnlyMemory<byte> bytes)
    {
        await _writeLock.WaitAsync();
        try
        {
            await _stream.WriteAsync(bytes);
            await _stream.FlushAsync();
        }
        finally
        {
            _writeLock.Release();
        }
    }

    /// <summary>The next broker-initiated request with <paramref name="code"/> (others are skipped).</summary>
    public async Task<RemotingCommand> NextServerRequestAsync(int code, TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        while (true)
        {
            var cmd = await _serverRequests.Reader.ReadAsync(cts.Token);
            if (cmd.Code == code) return cmd;
        }
    }

    public async ValueTask DisposeAsync()
    {
        ResumeReading(); // a paused read loop ends with the socket
        _tcp.Dispose();
        try { await _reader.WaitAsync(TimeSpan.FromSeconds(5)); } catch (TimeoutException) { }
        if (_stream is not NetworkStream) await _stream.DisposeAsync(); // TLS: the reader is done with it
    }
}

/// <summary>
/// What Java's <c>DefaultMQProducerImpl</c> does on the wire for transactions: HEART_BEAT with its producer group, a
/// half send (TRAN_MSG/PGROUP properties, sysFlag PREPARED), a one-way END_TRANSACTION, and END_TRANSACTION
/// fromTransactionCheck=true in answer to CHECK_TRANSACTION_STATE.
/// </summary>
public sealed class RemotingTransactionProducer(RemotingTestClient client, string group)
{
    public RemotingTestClient Client => client;

    public async Task HeartbeatAsync()
    {
        var body = System.Text.Json.JsonSerializer.SerializeToUtf8Bytes(new
        {
            clientID = client.ClientId,
            producerDataSet = new[] { new { groupName = group }, new { groupName = "CLIENT_INNER_PRODUCER" } },
            consumerDataSet = Array.Empty<object>(),
        });
        var r = await client.InvokeAsync(RequestCode.HeartBeat, body: body);
        Assert.Equal(ResponseCode.Success, r.Code);
    }

    /// <summary>Sends a half; returns the UNIQ_KEY, the response (msgId = offset msg id, queueOffset = tranStateTableOffset).</summary>
    public Task<(string UniqKey, RemotingCommand Response)> SendHalfAsync(string topic, string body, string? tag = null, params (string Key, string Value)[] more)
        => SendHalfWithKeyAsync(Guid.NewGuid().ToString("N").ToUpperInvariant(), topic, body, tag, more);

    /// <summary>Sends a half with the UNIQ_KEY <paramref name="uniq"/> (a Java producer that sends a message again reuses it).</summary>
    public async Task<(string UniqKey, RemotingCommand Response)> SendHalfWithKeyAsync(string uniq, string topic, string body, string? tag = null, params (string Key, string Value)[] more)
    {
        var props = new List<KeyValuePair<string, string?>>
        {
            new(MessageConst.UniqueKey, uniq), new(MessageConst.TransactionPrepared, "true"), new(MessageConst.ProducerGroup, group),
            new(MessageConst.Tags, tag), new(MessageConst.WaitStoreMsgOk, "true"),
        };
        props.AddRange(more.Select(m => new KeyValuePair<string, string?>(m.Key, m.Value)));
        var r = await client.InvokeAsync(RequestCode.SendMessageV2, RemotingBroker.SendHeader(group, topic, MessageProperties.Encode(props), MessageSysFlag.TransactionPreparedType),
            System.Text.Encoding.UTF8.GetBytes(body));
        return (uniq, r);
    }

    public Task EndAsync(string uniqKey, RemotingCommand sendResponse, int commitOrRollback, bool oneway = true)
        => EndAsync(uniqKey, sendResponse.Get("queueOffset")!, sendResponse.Get("msgId")!, commitOrRollback, fromCheck: false, oneway);

    public async Task<RemotingCommand?> EndAsync(string uniqKey, string tranStateTableOffset, string offsetMsgId, int commitOrRollback, bool fromCheck, bool oneway = true)
    {
        Assert.True(OffsetMessageId.TryDecode(offsetMsgId, out _, out long commitLogOffset));
        var cmd = RemotingCommand.Request(RequestCode.EndTransaction)
            .Set("producerGroup", group)
            .Set("tranStateTableOffset", tranStateTableOffset)
            .Set("commitLogOffset", commitLogOffset)
            .Set("commitOrRollback", commitOrRollback)
            .Set("fromTransactionCheck", fromCheck)
            .Set("msgId", uniqKey)
            .Set("transactionId", uniqKey);
        if (oneway)
        {
            await client.SendOnewayAsync(cmd);
            return null;
        }
        return await client.InvokeAsync(cmd);
    }

    /// <summary>Waits for a CHECK_TRANSACTION_STATE and answers it as Java's ClientRemotingProcessor does.</summary>
    public async Task<(RemotingCommand Check, RemotingMessage Message)> AnswerCheckAsync(int commitOrRollback, TimeSpan timeout)
    {
        var check = await client.NextServerRequestAsync(RequestCode.CheckTransactionState, timeout);
        Assert.True(check.IsOneway);
        var message = Assert.Single(StoredMessageCodec.DecodeAll(check.Body.Span));
        string uniq = message.Properties[MessageConst.UniqueKey];
        await EndAsync(uniq, check.Get("tranStateTableOffset")!, check.Get("offsetMsgId")!, commitOrRollback, fromCheck: true);
        return (check, message);
    }
}
