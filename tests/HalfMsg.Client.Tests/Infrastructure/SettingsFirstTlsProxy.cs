using System.Net;
using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// A TLS server (ALPN h2) that sends its HTTP/2 SETTINGS before it has read a byte of the client's, as a Netty server
/// (grpc-java: Apache RocketMQ's proxy) does: it terminates TLS and relays to a cleartext HTTP/2 backend, to which it
/// sends the client connection preface itself at once (so the backend's SETTINGS come back and are relayed to the
/// client straight away), and drops the client's own preface from what it relays. Counts the connections whose SETTINGS
/// were sent before the client's first byte was read.
/// </summary>
public sealed class SettingsFirstTlsProxy(int backendPort, X509Certificate2 certificate) : LoopbackListener(0)
{
    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();
    private int _settingsFirst;

    /// <summary>Connections whose backend's first bytes reached the client before any byte of the client was read.</summary>
    public int SettingsFirst => Volatile.Read(ref _settingsFirst);

    protected override async Task HandleAsync(TcpClient client, CancellationToken stop)
    {
        var tls = new SslStream(client.GetStream(), leaveInnerStreamOpen: false);
        Track(tls);
        await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
        {
            ServerCertificate = certificate,
            ApplicationProtocols = [SslApplicationProtocol.Http2],
        }, stop);

        var backend = new TcpClient { NoDelay = true };
        Track(backend);
        await backend.ConnectAsync(IPAddress.Loopback, backendPort, stop);
        NetworkStream toBackend = backend.GetStream();
        await toBackend.WriteAsync(Preface, stop);

        // The backend's SETTINGS to the client before reading anything of it.
        byte[] first = new byte[4096];
        int read = await toBackend.ReadAsync(first, stop);
        if (read == 0)
        {
            return;
        }

        await tls.WriteAsync(first.AsMemory(0, read), stop);
        await tls.FlushAsync(stop);
        Interlocked.Increment(ref _settingsFirst);

        // The client's preface, already sent to the backend by the proxy: read and dropped.
        byte[] preface = new byte[Preface.Length];
        await tls.ReadExactlyAsync(preface, stop);
        if (!preface.AsSpan().SequenceEqual(Preface))
        {
            throw new IOException("The client did not start with the HTTP/2 preface.");
        }

        Task up = RelayAsync(tls, toBackend, stop);
        Task down = RelayAsync(toBackend, tls, stop);
        await Task.WhenAny(up, down);
        client.Dispose();
        backend.Dispose();
    }

    private static async Task RelayAsync(Stream from, Stream to, CancellationToken stop)
    {
        byte[] buffer = new byte[16384];
        try
        {
            int n;
            while ((n = await from.ReadAsync(buffer, stop)) > 0)
            {
                await to.WriteAsync(buffer.AsMemory(0, n), stop);
                await to.FlushAsync(stop);
            }
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException)
        {
        }
    }
}
