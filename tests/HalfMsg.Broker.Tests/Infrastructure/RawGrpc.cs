using System.Buffers.Binary;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;
using System.Text;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// The one place where tests write gRPC framing by hand, for what a well-behaved client never sends: a length prefix
/// that promises more than is sent, or no HTTP/2 at all. Everything else goes through grpc-dotnet.
/// </summary>
public static class RawGrpc
{
    /// <summary>How a stalled upload ended: <see cref="Ended"/> as <see cref="StalledUploadAsync(string, string, int, int, IReadOnlyDictionary{string, string}, TimeSpan)"/>
    /// returns it, the body bytes the server let the client write, and the time until the end.</summary>
    public sealed record UploadOutcome(string? Ended, long BytesWritten, TimeSpan Elapsed);

    /// <summary>
    /// POSTs to <paramref name="path"/> over h2c a message prefix declaring <paramref name="declaredLength"/> bytes,
    /// then <paramref name="sentLength"/> bytes of it, then stalls. Returns how the call ended (grpc-status from the
    /// trailers, or the failure) once the server ends it, or null if it had not after <paramref name="wait"/>.
    /// </summary>
    public static async Task<string?> StalledUploadAsync(string endpoint, string path, int declaredLength, int sentLength,
        IReadOnlyDictionary<string, string> headers, TimeSpan wait)
    {
        using var http = new HttpClient { Timeout = Timeout.InfiniteTimeSpan };
        return (await StalledUploadAsync(http, endpoint, path, declaredLength, sentLength, headers, wait)).Ended;
    }

    /// <summary>As above on a caller's <paramref name="http"/> client: many calls on one client share one HTTP/2
    /// connection (SocketsHttpHandler opens a second only when told to).</summary>
    public static async Task<UploadOutcome> StalledUploadAsync(HttpClient http, string endpoint, string path, int declaredLength, int sentLength,
        IReadOnlyDictionary<string, string> headers, TimeSpan wait)
    {
        var content = new StalledContent(declaredLength, sentLength);
        using var request = new HttpRequestMessage(HttpMethod.Post, $"http://{endpoint}{path}")
        {
            Version = HttpVersion.Version20,
            VersionPolicy = HttpVersionPolicy.RequestVersionExact,
            Content = content,
        };
        request.Headers.TE.ParseAdd("trailers");
        foreach (var (k, v) in headers)
        {
            request.Headers.TryAddWithoutValidation(k, v);
        }

        var started = System.Diagnostics.Stopwatch.StartNew();
        using var cts = new CancellationTokenSource(wait);
        string? ended;
        try
        {
            using HttpResponseMessage response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            await response.Content.ReadAsByteArrayAsync(cts.Token);
            string? status = response.TrailingHeaders.TryGetValues("grpc-status", out var t) ? t.First()
                : response.Headers.TryGetValues("grpc-status", out var h) ? h.First() : null;
            ended = $"HTTP {(int)response.StatusCode} grpc-status {status ?? "(none)"}";
        }
        catch (OperationCanceledException) when (cts.IsCancellationRequested)
        {
            ended = null;
        }
        catch (Exception ex) when (ex is HttpRequestException or OperationCanceledException or IOException)
        {
            // The server reset the stream (the upload is then cancelled under the content writer).
            ended = "reset: " + ex.Message;
        }

        return new UploadOutcome(ended, Interlocked.Read(ref content.Written), started.Elapsed);
    }

    /// <summary>Sends an HTTP/1.1 request on a raw socket and returns what came back before the server closed the
    /// connection, or null if it was still open after <paramref name="wait"/>.</summary>
    public static async Task<string?> Http1RequestAsync(int port, string path, TimeSpan wait)
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await socket.ConnectAsync(IPAddress.Loopback, port);
        string request = $"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/grpc\r\nTE: trailers\r\nContent-Length: 5\r\n\r\n";
        await socket.SendAsync(Encoding.ASCII.GetBytes(request).Concat(new byte[5]).ToArray());
        using var cts = new CancellationTokenSource(wait);
        var received = new MemoryStream();
        var buffer = new byte[4096];
        try
        {
            while (true)
            {
                int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
                if (n == 0)
                {
                    break;
                }

                received.Write(buffer, 0, n);
            }
        }
        catch (OperationCanceledException)
        {
            return null;
        }
        catch (SocketException)
        {
            // Reset: closed too.
        }

        return Encoding.Latin1.GetString(received.ToArray());
    }

    private sealed class StalledContent : HttpContent
    {
        private readonly int _declared;
        private readonly int _sent;
        public long Written;

        public StalledContent(int declared, int sent)
        {
            _declared = declared;
            _sent = sent;
            Headers.ContentType = new MediaTypeHeaderValue("application/grpc");
        }

        protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
            SerializeToStreamAsync(stream, context, CancellationToken.None);

        protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
        {
            var prefix = new byte[5];
            BinaryPrimitives.WriteUInt32BigEndian(prefix.AsSpan(1), (uint)_declared);
            await stream.WriteAsync(prefix, cancellationToken);
            var chunk = new byte[16 * 1024];
            for (int sent = 0; sent < _sent; sent += chunk.Length)
            {
                int n = Math.Min(chunk.Length, _sent - sent);
                await stream.WriteAsync(chunk.AsMemory(0, n), cancellationToken);
                Interlocked.Add(ref Written, n);
            }

            await stream.FlushAsync(cancellationToken);
            await Task.Delay(Timeout.Infinite, cancellationToken);
        }

        protected override bool TryComputeLength(out long length)
        {
            length = -1;
            return false;
        }
    }
}
