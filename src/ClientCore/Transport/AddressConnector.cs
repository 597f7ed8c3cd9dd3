using System.Net;
using System.Net.Sockets;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// How the client's channels open a connection (<see cref="SocketsHttpHandler.ConnectCallback"/>): TCP within the
/// connect timeout and, for cleartext HTTP/2, the broker's answer to the connection preface (its SETTINGS frame) within
/// the same bound, before any request is written. An address that accepts connections and then says nothing (a hung
/// process, a load balancer with no backend, a half-open path) fails as a connection, like a refused one: the request
/// never left, so <see cref="RpcChannel"/> may take it to the next address within the call and later calls go there
/// too. Until the midday session of 2026-12-07 such an address held every call until its deadline (the connection was
/// "made", and the request written into it), and no call moved away from it.
/// With TLS, only TCP is done in the connect callback (the handler does TLS after it, within its own connect timeout);
/// the broker's answer after the handshake is awaited by <see cref="PlaintextFilter"/> (the handler's
/// <see cref="SocketsHttpHandler.PlaintextStreamFilter"/>, run after TLS and before HTTP/2), with the same bound and for
/// the same addresses. Until the afternoon session of 2026-12-07 a TLS address that completed the handshake and then
/// said nothing (a TLS-terminating load balancer without a backend, a hung broker) held the call until its deadline, or
/// until the HTTP/2 keep-alive ping gave up on it (Internal), and no call moved away from it.
/// </summary>
internal static class AddressConnector
{
    /// <summary>The HTTP/2 client connection preface (RFC 9113, 3.4).</summary>
    private static ReadOnlySpan<byte> Preface => "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8;

    /// <summary>A connect callback bounded by <paramref name="timeout"/>; when <paramref name="awaitAnswer"/> says so at
    /// the connection (cleartext, an address with another to go to) it also waits for the broker's first bytes after
    /// the preface.</summary>
    public static Func<SocketsHttpConnectionContext, CancellationToken, ValueTask<Stream>> Callback(TimeSpan timeout, Func<bool> awaitAnswer) =>
        (context, ct) => ConnectAsync(context.DnsEndPoint, timeout, awaitAnswer(), ct);

    /// <summary>A plaintext stream filter that, when <paramref name="awaitAnswer"/> says so at the connection (TLS, an
    /// address with another to go to) and HTTP/2 was negotiated, sends the HTTP/2 preface over the TLS connection and
    /// waits for the broker's first bytes (its SETTINGS) within <paramref name="timeout"/>; otherwise the stream as it is.
    /// Every HTTP/2 connection over TLS is watched (<see cref="WatchedStream"/>) until its first request left and the
    /// broker answered, so that a connection ended before then says so by its type.</summary>
    public static Func<SocketsHttpPlaintextStreamFilterContext, CancellationToken, ValueTask<Stream>> PlaintextFilter(TimeSpan timeout, Func<bool> awaitAnswer) =>
        (context, ct) =>
        {
            if (context.NegotiatedHttpVersion != HttpVersion.Version20)
            {
                return ValueTask.FromResult(context.PlaintextStream);
            }

            string address = context.InitialRequestMessage.RequestUri is { } uri ? $"{uri.Host}:{uri.Port}" : "the broker";
            return awaitAnswer()
                ? AwaitAnswerAsync(context.PlaintextStream, address, timeout, ct)
                : ValueTask.FromResult<Stream>(new WatchedStream(context.PlaintextStream, default, prefaceSent: false, address, tls: true));
        };

    private static async ValueTask<Stream> AwaitAnswerAsync(Stream stream, string address, TimeSpan timeout, CancellationToken ct)
    {
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bound.CancelAfter(timeout);
        try
        {
            return await PrefaceAsync(stream, address, bound.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The handler's own bound (its ConnectTimeout) or the request's: its token, so that the handler reports it as
            // it does its own (a connect timeout), not as a failure of the filter.
            ct.ThrowIfCancellationRequested();
            throw;
        }
        catch (OperationCanceledException)
        {
            string message = $"{address} completed the TLS handshake but did not answer the HTTP/2 connection preface within {timeout.TotalMilliseconds:0} ms (ConnectTimeout).";
            throw new NoAnswerException(message, new TimeoutException(message));
        }
        catch (Exception ex) when (ex is IOException or System.Security.Authentication.AuthenticationException or ObjectDisposedException
            && ex is not NoAnswerException)
        {
            // Reset, or a TLS alert after the handshake (with TLS 1.3 a broker refuses a client certificate only then):
            // no request was written either. The cause stays in the chain, for what RpcChannel.TlsFailure says of it.
            throw new NoAnswerException($"{address} failed after the TLS handshake, before answering the HTTP/2 connection preface: {ex.Message}.{TlsClosedHint}", ex);
        }
    }

    // What a TLS connection closed or reset right after the handshake may mean (with TLS 1.3 the client's side of the
    // handshake ends before the broker has checked the client's certificate).
    private const string TlsClosedHint = " A broker that requires client certificates (--tls-client-auth require) ends the connection so for a client"
        + " without one, or with one its --tls-client-ca did not issue: check Tls.ClientCertificate(File).";

    // Sends the preface and reads the broker's first frame (its SETTINGS, RFC 9113 3.4; of a frame longer than the
    // default largest, its header only): the stream, with the bytes read, for the handler. The whole frame, so that a
    // broker that ends the connection within it fails here, as a connection, before the handler has the stream and
    // writes its first request; until the evening session of 2026-12-07 its first bytes were enough, and such a call
    // failed without going to the next address.
    private static async ValueTask<Stream> PrefaceAsync(Stream stream, string address, CancellationToken ct)
    {
        await stream.WriteAsync(Preface.ToArray(), ct).ConfigureAwait(false);
        await stream.FlushAsync(ct).ConfigureAwait(false);
        byte[] first = new byte[256];
        int read = 0;
        int wanted = 9;
        while (read < wanted)
        {
            int n;
            try
            {
                n = await stream.ReadAsync(first.AsMemory(read), ct).ConfigureAwait(false);
            }
            catch (IOException ex) when (read > 0)
            {
                throw new NoAnswerException($"{address} ended the connection within its answer to the HTTP/2 connection preface: {ex.Message}", ex);
            }

            if (n == 0)
            {
                throw new NoAnswerException(read == 0
                    ? $"{address} closed the connection without answering the HTTP/2 connection preface." + (stream is System.Net.Security.SslStream ? TlsClosedHint : string.Empty)
                    : $"{address} closed the connection within its answer to the HTTP/2 connection preface.");
            }

            read += n;
            if (wanted == 9 && read >= 9)
            {
                int length = (first[0] << 16) | (first[1] << 8) | first[2];
                wanted = length <= 16384 ? 9 + length : 9;
                if (wanted > first.Length)
                {
                    Array.Resize(ref first, wanted);
                }
            }
        }

        return new WatchedStream(stream, first.AsMemory(0, read), prefaceSent: true, address, stream is System.Net.Security.SslStream);
    }

    /// <summary>
    /// An address that did not answer its connection (the HTTP/2 preface) in time, or closed it first: no request was
    /// written, so the call may go to another address (<see cref="RpcChannel.IsConnectFailure"/>), however the handler
    /// wraps it (a connection failure from the connect callback, a failure of the plaintext filter from the filter).
    /// </summary>
    internal sealed class NoAnswerException(string message, Exception? inner = null) : IOException(message, inner);

    /// <summary>
    /// A connection that ended (closed, reset, disposed) before its set-up was through: before the handler wrote its
    /// first request (<see cref="RequestWritten"/> false: the broker cannot have it, so the call may go to another
    /// address, <see cref="RpcChannel.IsConnectFailure"/>), or before the broker's first bytes (<see cref="BeforeAnswer"/>:
    /// with TLS, how a broker refuses a client certificate after a TLS 1.3 handshake, <see cref="RpcChannel.TlsFailure"/>).
    /// Thrown by <see cref="WatchedStream"/>, which knows what went over the connection, so that neither is read from
    /// the handler's exception text. The evening session of 2026-12-07.
    /// </summary>
    internal sealed class ConnectionEndedException(string message, Exception? inner, bool requestWritten, bool beforeAnswer) : IOException(message, inner)
    {
        public bool RequestWritten { get; } = requestWritten;

        public bool BeforeAnswer { get; } = beforeAnswer;
    }

    public static async ValueTask<Stream> ConnectAsync(DnsEndPoint address, TimeSpan timeout, bool awaitAnswer, CancellationToken ct)
    {
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(ct);
        bound.CancelAfter(timeout);
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        bool handedOver = false;
        string step = "connect";
        try
        {
            await socket.ConnectAsync(address, bound.Token).ConfigureAwait(false);
            var network = new NetworkStream(socket, ownsSocket: true);
            if (!awaitAnswer)
            {
                handedOver = true;
                return network;
            }

            step = "answer the HTTP/2 connection preface";
            Stream answered = await PrefaceAsync(network, $"{address.Host}:{address.Port}", bound.Token).ConfigureAwait(false);
            handedOver = true;
            return answered;
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            // Not an OperationCanceledException: the handler makes other exceptions connection failures
            // (HttpRequestError.ConnectionError), which RpcChannel takes to the next address; an IOException, which
            // grpc-dotnet reports as Unavailable (Internal otherwise), as it does a refused connection.
            string message = $"{address.Host}:{address.Port} did not {step} within {timeout.TotalMilliseconds:0} ms (ConnectTimeout).";
            throw new NoAnswerException(message, new TimeoutException(message));
        }
        finally
        {
            if (!handedOver)
            {
                socket.Dispose();
            }
        }
    }

    /// <summary>
    /// An HTTP/2 connection watched until its set-up is through (its first request written and the broker's first bytes
    /// read): a failure before then (a read or write failing, or the broker closing) is a
    /// <see cref="ConnectionEndedException"/> saying which of the two had happened; after it, the connection as it is.
    /// With <c>prefaceSent</c> (the preface was sent and the broker's first bytes, <c>answered</c>, read while waiting for
    /// its answer) the handler's own preface (the first 24 bytes it writes) is not sent again, and the broker's first
    /// bytes are read first.
    /// Until the evening session of 2026-12-07 a broker that answered the preface and then closed or reset the
    /// connection before the first request was written failed the call (the handler's "HTTP/2 connection could not be
    /// established", under an HttpRequestException that is not a connection failure) without taking it to the next
    /// address, and with TLS said it might be a refused client certificate, which cannot come after the broker answered.
    /// </summary>
    private sealed class WatchedStream(Stream inner, ReadOnlyMemory<byte> answered, bool prefaceSent, string address, bool tls) : Stream
    {
        private ReadOnlyMemory<byte> _answered = answered;
        private int _prefaceLeft = prefaceSent ? Preface.Length : 0;
        // Set-up: no HEADERS frame written yet / none of the broker's bytes read yet.
        private volatile bool _requestWritten;
        private volatile bool _brokerAnswered = !answered.IsEmpty;
        // The frame the handler's writes are in (before its first HEADERS): the preface's bytes left, then the frame
        // header's bytes read so far and the payload's bytes left.
        private int _observeSkip = Preface.Length;
        private readonly byte[] _frameHeader = new byte[9];
        private int _frameHeaderFill;
        private int _payloadLeft;

        private bool SettingUp => !_requestWritten || !_brokerAnswered;

        private ConnectionEndedException Ended(Exception? cause)
        {
            bool before = !_brokerAnswered;
            string what = _requestWritten
                ? $"{address} ended the connection after the first request was written, before answering"
                : before
                    ? $"{address} ended the connection before answering the HTTP/2 connection preface"
                    : $"{address} ended the connection after answering the HTTP/2 connection preface, before any request was written";
            return new ConnectionEndedException(what + (cause is null ? " (closed)." : $" ({cause.Message.TrimEnd('.')}).") + (tls && before ? TlsClosedHint : string.Empty),
                cause, _requestWritten, before);
        }

        public override bool CanRead => true;
        public override bool CanWrite => true;
        public override bool CanSeek => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Read(buffer.AsSpan(offset, count));

        public override int Read(Span<byte> buffer)
        {
            if (!_answered.IsEmpty)
            {
                return TakeAnswered(buffer);
            }

            if (!SettingUp)
            {
                return inner.Read(buffer);
            }

            int read;
            try
            {
                read = inner.Read(buffer);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException && ex is not ConnectionEndedException)
            {
                throw Ended(ex);
            }

            return Answered(read, buffer.Length);
        }

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
            !_answered.IsEmpty ? ValueTask.FromResult(TakeAnswered(buffer.Span))
            : SettingUp ? WatchedReadAsync(buffer, cancellationToken)
            : inner.ReadAsync(buffer, cancellationToken);

        private async ValueTask<int> WatchedReadAsync(Memory<byte> buffer, CancellationToken cancellationToken)
        {
            int read;
            try
            {
                read = await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException && ex is not ConnectionEndedException)
            {
                throw Ended(ex);
            }

            return Answered(read, buffer.Length);
        }

        // A read during set-up: the broker's bytes, or its end of the connection.
        private int Answered(int read, int asked)
        {
            if (read > 0)
            {
                _brokerAnswered = true;
            }
            else if (asked > 0)
            {
                throw Ended(null);
            }

            return read;
        }

        private int TakeAnswered(Span<byte> buffer)
        {
            int n = Math.Min(buffer.Length, _answered.Length);
            _answered.Span[..n].CopyTo(buffer);
            _answered = _answered[n..];
            return n;
        }

        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

        public override void Write(ReadOnlySpan<byte> buffer)
        {
            bool settingUp = SettingUp;
            Observe(buffer);
            try
            {
                inner.Write(buffer[SkipPreface(buffer)..]);
            }
            catch (Exception ex) when (settingUp && ex is IOException or ObjectDisposedException && ex is not ConnectionEndedException)
            {
                throw Ended(ex);
            }
        }

        public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
            WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        public override ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
        {
            bool settingUp = SettingUp;
            Observe(buffer.Span);
            int skip = SkipPreface(buffer.Span);
            return skip == buffer.Length ? ValueTask.CompletedTask
                : settingUp ? WatchedWriteAsync(buffer[skip..], cancellationToken)
                : inner.WriteAsync(buffer[skip..], cancellationToken);
        }

        private async ValueTask WatchedWriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken)
        {
            try
            {
                await inner.WriteAsync(buffer, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException && ex is not ConnectionEndedException)
            {
                throw Ended(ex);
            }
        }

        // Follows the handler's frames until its first HEADERS frame (a request's), counted as written once handed to
        // the connection (whether or not that write succeeds: the broker may have it).
        private void Observe(ReadOnlySpan<byte> data)
        {
            while (!data.IsEmpty && !_requestWritten)
            {
                if (_observeSkip > 0)
                {
                    int skip = Math.Min(_observeSkip, data.Length);
                    _observeSkip -= skip;
                    data = data[skip..];
                }
                else if (_payloadLeft > 0)
                {
                    int skip = Math.Min(_payloadLeft, data.Length);
                    _payloadLeft -= skip;
                    data = data[skip..];
                }
                else
                {
                    int take = Math.Min(_frameHeader.Length - _frameHeaderFill, data.Length);
                    data[..take].CopyTo(_frameHeader.AsSpan(_frameHeaderFill));
                    _frameHeaderFill += take;
                    data = data[take..];
                    if (_frameHeaderFill == _frameHeader.Length)
                    {
                        _frameHeaderFill = 0;
                        _payloadLeft = (_frameHeader[0] << 16) | (_frameHeader[1] << 8) | _frameHeader[2];
                        if (_frameHeader[3] == 0x1) // HEADERS (RFC 9113, 6.2)
                        {
                            _requestWritten = true;
                        }
                    }
                }
            }
        }
        // How many of buffer's first bytes are the rest of the handler's preface (already sent): skipped.
        private int SkipPreface(ReadOnlySpan<byte> buffer)
        {
            if (_prefaceLeft == 0)
            {
                return 0;
            }

            int done = Preface.Length - _prefaceLeft;
            int n = Math.Min(_prefaceLeft, buffer.Length);
            if (!buffer[..n].SequenceEqual(Preface.Slice(done, n)))
            {
                throw new IOException("The HTTP handler did not start the connection with the HTTP/2 preface.");
            }

            _prefaceLeft -= n;
            return n;
        }

        public override void Flush() => inner.Flush();
        public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }

        public override ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
