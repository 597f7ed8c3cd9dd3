using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>
/// Part of the one raw HTTP/2 helper for negative tests (with <see cref="RawGrpc"/>): HTTP/2 frames on a socket, for what
/// HttpClient never does on purpose: open more streams than the server allows, or read the server's SETTINGS.
/// Headers are HPACK literals without indexing or Huffman coding (RFC 7541 §6.2.2), which every decoder accepts.
/// </summary>
public sealed class RawHttp2 : IAsyncDisposable
{
    public const byte Data = 0x0, Headers = 0x1, RstStream = 0x3, Settings = 0x4, Ping = 0x6, GoAway = 0x7, WindowUpdate = 0x8;
    public const ushort SettingsMaxConcurrentStreams = 0x3, SettingsInitialWindowSize = 0x4;
    public const uint RefusedStream = 0x7;

    private static readonly byte[] Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8.ToArray();
    private readonly Socket _socket;
    private readonly NetworkStream _stream;
    private readonly SemaphoreSlim _writeLock = new(1, 1);
    private readonly int _port;

    private RawHttp2(Socket socket, int port)
    {
        _socket = socket;
        _stream = new NetworkStream(socket, ownsSocket: false);
        _port = port;
    }

    public readonly record struct Frame(byte Type, byte Flags, int StreamId, byte[] Payload)
    {
        public uint ErrorCode => BinaryPrimitives.ReadUInt32BigEndian(Payload);

        /// <summary>SETTINGS parameters (identifier → value).</summary>
        public Dictionary<ushort, uint> SettingsValues()
        {
            var values = new Dictionary<ushort, uint>();
            for (int i = 0; i + 6 <= Payload.Length; i += 6)
            {
                values[BinaryPrimitives.ReadUInt16BigEndian(Payload.AsSpan(i))] = BinaryPrimitives.ReadUInt32BigEndian(Payload.AsSpan(i + 2));
            }

            return values;
        }
    }

    /// <summary>Connects to 127.0.0.1:<paramref name="port"/> and sends the client preface and an empty SETTINGS (a
    /// connection the server closes at once is returned too: its first read returns null), from <paramref name="local"/>
    /// when given (another loopback address, 127.0.0.2, is another peer to the server).</summary>
    public static async Task<RawHttp2> ConnectAsync(int port, IPAddress? local = null)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        if (local is not null) socket.Bind(new IPEndPoint(local, 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        var h2 = new RawHttp2(socket, port);
        try
        {
            await h2.WriteAsync(Preface);
            await h2.SendFrameAsync(Settings, 0, 0, []);
        }
        catch (IOException)
        {
            // Closed by the server at once (e.g. over its connection limit): the next read says so.
        }

        return h2;
    }

    public Task SendSettingsAckAsync() => SendFrameAsync(Settings, 0x1, 0, []);

    /// <summary>Opens stream <paramref name="streamId"/> with a gRPC POST to <paramref name="path"/> (END_HEADERS, no body yet).</summary>
    public Task SendGrpcHeadersAsync(int streamId, string path, bool endStream = false, IReadOnlyDictionary<string, string>? extra = null)
    {
        var block = new MemoryStream();
        foreach (var (name, value) in new[]
                 {
                     (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", $"127.0.0.1:{_port}"),
                     ("content-type", "application/grpc"), ("te", "trailers"),
                 }.Concat((extra ?? new Dictionary<string, string>()).Select(h => (h.Key, h.Value))))
        {
            block.WriteByte(0x00);
            WriteString(block, name);
            WriteString(block, value);
        }

        return SendFrameAsync(Headers, (byte)(0x4 | (endStream ? 0x1 : 0)), streamId, block.ToArray());
    }

    public Task SendDataAsync(int streamId, byte[] data, bool endStream = false) => SendFrameAsync(Data, (byte)(endStream ? 0x1 : 0), streamId, data);

    /// <summary>One gRPC message (uncompressed 5-byte prefix, then <paramref name="message"/>) as a DATA frame.</summary>
    public Task SendGrpcMessageAsync(int streamId, byte[] message)
    {
        var framed = new byte[5 + message.Length];
        BinaryPrimitives.WriteUInt32BigEndian(framed.AsSpan(1), (uint)message.Length);
        message.CopyTo(framed, 5);
        return SendDataAsync(streamId, framed);
    }

    public async Task SendFrameAsync(byte type, byte flags, int streamId, byte[] payload)
    {
        var frame = new byte[9 + payload.Length];
        frame[0] = (byte)(payload.Length >> 16);
        frame[1] = (byte)(payload.Length >> 8);
        frame[2] = (byte)payload.Length;
        frame[3] = type;
        frame[4] = flags;
        BinaryPrimitives.WriteInt32BigEndian(frame.AsSpan(5), streamId & 0x7fffffff);
        payload.CopyTo(frame, 9);
        await WriteAsync(frame);
    }

    /// <summary>The next frame, or null when the server closed (or reset) the connection.</summary>
    public async Task<Frame?> ReadFrameAsync(CancellationToken ct)
    {
        var header = new byte[9];
        if (!await ReadExactlyOrEndAsync(header, ct))
        {
            return null;
        }

        int length = (header[0] << 16) | (header[1] << 8) | header[2];
        var payload = new byte[length];
        if (!await ReadExactlyOrEndAsync(payload, ct))
        {
            return null;
        }

        return new Frame(header[3], header[4], BinaryPrimitives.ReadInt32BigEndian(header.AsSpan(5)) & 0x7fffffff, payload);
    }

    private async Task<bool> ReadExactlyOrEndAsync(byte[] buffer, CancellationToken ct)
    {
        try
        {
            int read = await _stream.ReadAtLeastAsync(buffer, buffer.Length, throwOnEndOfStream: false, ct);
            return read == buffer.Length;
        }
        catch (IOException)
        {
            return false; // reset: closed too
        }
    }

    private async Task WriteAsync(byte[] bytes)
    {
        await _writeLock.WaitAsync();
        try
        {
            await _stream.WriteAsync(bytes);
        }
        finally
        {
            _writeLock.Release();
        }
    }

    private static void WriteString(MemoryStream block, string text)
    {
        byte[] bytes = Encoding.ASCII.GetBytes(text);
        // 7-bit prefix integer, Huffman bit clear.
        int length = bytes.Length;
        if (length < 127)
        {
            block.WriteByte((byte)length);
        }
        else
        {
            block.WriteByte(127);
            length -= 127;
            while (length >= 128)
            {
                block.WriteByte((byte)((length % 128) + 128));
                length /= 128;
            }

            block.WriteByte((byte)length);
        }

        block.Write(bytes);
    }

    public async ValueTask DisposeAsync()
    {
        await _stream.DisposeAsync();
        _socket.Dispose();
        _writeLock.Dispose();
    }
}
