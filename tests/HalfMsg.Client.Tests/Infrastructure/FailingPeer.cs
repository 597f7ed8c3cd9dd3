using System.Net.Security;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>
/// An address whose connection set-up fails at a chosen moment, as a broker process that dies, a proxy that drops the
/// connection, or a TLS layer that refuses: it accepts on 127.0.0.1 and (with <paramref name="certificate"/>) completes
/// the TLS handshake (ALPN h2), then ends the connection at <paramref name="at"/>, with a TCP reset or a close
/// (<paramref name="reset"/>). Counts the connections accepted; a request never reaches it.
/// </summary>
public sealed class FailingPeer(FailingPeer.Moment at, bool reset, X509Certificate2? certificate = null) : LoopbackListener(0)
{
    public enum Moment
    {
        /// <summary>Right after accept (before any TLS).</summary>
        Accepted,
        /// <summary>After the TLS handshake (or accept, in cleartext), before reading anything.</summary>
        Handshaken,
        /// <summary>After reading the client's HTTP/2 connection preface (24 bytes), before answering it.</summary>
        Preface,
        /// <summary>While answering the client's preface: the first 5 of its SETTINGS frame's 9 bytes written (the
        /// client has the broker's first bytes, and writes no request before the whole frame).</summary>
        Answering,
        /// <summary>After answering the client's preface with an empty SETTINGS frame: the connection's set-up done
        /// (the client may write its first request at once).</summary>
        Answered,
        /// <summary>After a request's HEADERS frame arrived (the broker may have it).</summary>
        Request,
    }

    private static readonly byte[] ClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();

    protected override async Task HandleAsync(TcpClient client, CancellationToken stop)
    {
        if (at != Moment.Accepted)
        {
            Stream stream = client.GetStream();
            if (certificate is not null)
            {
                var tls = new SslStream(stream, leaveInnerStreamOpen: false);
                Track(tls);
                await tls.AuthenticateAsServerAsync(new SslServerAuthenticationOptions
                {
                    ServerCertificate = certificate,
                    ApplicationProtocols = [SslApplicationProtocol.Http2],
                }, stop);
                stream = tls;
            }

            if (at >= Moment.Preface)
            {
                await stream.ReadExactlyAsync(new byte[ClientPreface.Length], stop);
            }

            if (at == Moment.Answering)
            {
                await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 0 }, stop); // SETTINGS, cut short
                await stream.FlushAsync(stop);
            }

            if (at >= Moment.Answered)
            {
                await stream.WriteAsync(new byte[] { 0, 0, 0, 4, 0, 0, 0, 0, 0 }, stop); // SETTINGS, empty, stream 0
                await stream.FlushAsync(stop);
            }

            if (at == Moment.Request)
            {
                // Frames until a HEADERS one (type 1).
                byte[] header = new byte[9];
                while (true)
                {
                    await stream.ReadExactlyAsync(header, stop);
                    int length = (header[0] << 16) | (header[1] << 8) | header[2];
                    await stream.ReadExactlyAsync(new byte[length], stop);
                    if (header[3] == 1)
                    {
                        break;
                    }
                }
            }
        }

        if (reset)
        {
            client.Client.LingerState = new LingerOption(true, 0);
        }

        client.Client.Close();
    }
}
