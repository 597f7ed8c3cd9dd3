using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Fuzz.Capture;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;

namespace HalfMsg.Reliability.Tests;

/// <summary>One broker process for the regression tests of what the network fuzzer found.</summary>
public sealed class FuzzBrokerFixture : IAsyncLifetime
{
    public BrokerProcess Broker { get; private set; } = null!;

    public async Task InitializeAsync() => Broker = await BrokerProcess.StartAsync();

    public async Task DisposeAsync() => await Broker.DisposeAsync();
}

/// <summary>Regression tests for the defects <see cref="NetworkFuzzTests"/> found (issue 13, item 2).</summary>
public sealed class NetworkFuzzFindingTests(FuzzBrokerFixture fixture) : IClassFixture<FuzzBrokerFixture>
{
    [Theory]
    [InlineData(new byte[] { 0x7B, 0x22, 0x63, 0x6C, 0x69, 0x65, 0x6E, 0x74, 0x49, 0x44, 0x22, 0x3A, 0x22, 0x8D, 0x22, 0x7D })] // {"clientID":"\x8D"}
    [InlineData(new byte[] { 0x7B, 0x22, 0x63, 0x6C, 0x69, 0x65, 0x6E, 0x74, 0x49, 0x44, 0x22, 0x3A, 0x22, 0x5C, 0x75, 0x64, 0x38, 0x30, 0x30, 0x22, 0x7D })] // {"clientID":"\ud800"}
    public async Task A_heartbeat_whose_JSON_strings_are_not_text_is_answered_as_a_bad_heartbeat_not_a_handler_failure(byte[] body)
    {
        await using var c = await MiniRemotingClient.ConnectAsync(fixture.Broker.RemotingPort);
        var r = await c.InvokeAsync(RequestCode.HeartBeat, body: body);
        // Before the fix: SystemError "InvalidOperationException: Cannot transcode invalid UTF-8 ..." and an Error log.
        Assert.DoesNotContain("Exception", r.Remark ?? "", StringComparison.Ordinal);
        Assert.DoesNotContain("request code 34", fixture.Broker.Output, StringComparison.Ordinal);
        // The connection still serves.
        Assert.Equal(ResponseCode.Success, (await JavaLikeRemoting.HeartbeatAsync(c, "PG-after-bad-heartbeat")).Code);
    }

    [Fact]
    public async Task A_gRPC_call_with_a_header_name_grpc_dotnet_refuses_is_served_not_answered_INTERNAL()
    {
        // HTTP/2 by hand (HPACK literals without Huffman), as the mutated stream that found it: QueryRoute with a header
        // name that is a valid HTTP token (Kestrel passes it on) but not a gRPC metadata key (grpc-dotnet refuses it).
        using var tcp = new TcpClient();
        await tcp.ConnectAsync(IPAddress.Loopback, fixture.Broker.GrpcPort);
        var s = tcp.GetStream();
        var hpack = new MemoryStream();
        hpack.WriteByte(0x83); // :method POST
        hpack.WriteByte(0x86); // :scheme http
        Literal(hpack, 4, null, GrpcMethods.QueryRoute); // :path
        Literal(hpack, 1, null, $"127.0.0.1:{fixture.Broker.GrpcPort}"); // :authority
        Literal(hpack, 0, "content-type", "application/grpc");
        Literal(hpack, 0, "te", "trailers");
        Literal(hpack, 0, RocketMqHeaders.ClientId, "fuzz-regression");
        Literal(hpack, 0, "x-fuzz!", "1"); // a valid HTTP token, not a valid gRPC metadata key
        var request = new QueryRouteRequest { Topic = new Resource { Name = "FuzzHeaderTopic" } }.ToByteArray();
        var message = new byte[5 + request.Length];
        BinaryPrimitives.WriteInt32BigEndian(message.AsSpan(1), request.Length);
        request.CopyTo(message, 5);

        var wire = new MemoryStream();
        wire.Write("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"u8);
        Frame(wire, 4, 0, 0, []); // SETTINGS
        Frame(wire, 1, 0x4, 1, hpack.ToArray()); // HEADERS, END_HEADERS
        Frame(wire, 0, 0x1, 1, message); // DATA, END_STREAM
        await s.WriteAsync(wire.ToArray());

        // Read frames until stream 1 sends DATA (the response message) or ends.
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var buffer = new List<byte>();
        var chunk = new byte[16 * 1024];
        byte[]? data = null;
        var seen = new List<string>();
        bool ended = false;
        while (data is null && !ended)
        {
            int n = await s.ReadAsync(chunk, cts.Token);
            if (n == 0) break;
            buffer.AddRange(chunk.AsSpan(0, n));
            while (buffer.Count >= 9)
            {
                int len = (buffer[0] << 16) | (buffer[1] << 8) | buffer[2];
                if (buffer.Count < 9 + len) break;
                byte type = buffer[3], flags = buffer[4];
                int stream = BinaryPrimitives.ReadInt32BigEndian(buffer.GetRange(5, 4).ToArray()) & 0x7FFFFFFF;
                var payload = buffer.GetRange(9, len).ToArray();
                buffer.RemoveRange(0, 9 + len);
                seen.Add($"type {type} flags {flags} stream {stream} length {len}");
                if (type == 4 && (flags & 1) == 0) await s.WriteAsync(new byte[] { 0, 0, 0, 4, 1, 0, 0, 0, 0 }, cts.Token); // SETTINGS ACK
                if (stream == 1 && type == 0 && payload.Length > 5) data = payload;
                if (stream == 1 && (type == 3 || (flags & 1) != 0)) ended = true; // RST_STREAM or END_STREAM
            }
        }
        Assert.True(data is not null, "no response message; frames: " + string.Join("; ", seen));
        var response = QueryRouteResponse.Parser.ParseFrom(data.AsSpan(5).ToArray());
        // Before the fix: INTERNAL_SERVER_ERROR and "Metadata entry key not valid" in the broker's Error log.
        Assert.NotEqual(Code.InternalServerError, response.Status.Code);
        Assert.DoesNotContain("Metadata entry key not valid", fixture.Broker.Output, StringComparison.Ordinal);
    }

    private static void Literal(MemoryStream o, int index, string? name, string value)
    {
        if (index >= 15) throw new ArgumentException("4-bit index prefix only");
        o.WriteByte((byte)index); // literal without indexing; 4-bit index (0 = new name)
        if (name is not null) Str(o, name);
        Str(o, value);
    }

    private static void Str(MemoryStream o, string v)
    {
        var b = System.Text.Encoding.ASCII.GetBytes(v);
        if (b.Length >= 127) throw new ArgumentException("short strings only");
        o.WriteByte((byte)b.Length);
        o.Write(b);
    }

    private static void Frame(MemoryStream o, byte type, byte flags, int stream, byte[] payload)
    {
        o.WriteByte((byte)(payload.Length >> 16)); o.WriteByte((byte)(payload.Length >> 8)); o.WriteByte((byte)payload.Length);
        o.WriteByte(type); o.WriteByte(flags);
        Span<byte> id = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(id, stream);
        o.Write(id);
        o.Write(payload);
    }
}
