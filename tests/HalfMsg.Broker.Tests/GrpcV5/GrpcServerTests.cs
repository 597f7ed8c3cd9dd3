using System.Buffers.Binary;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>The framing server module on real Kestrel (127.0.0.1:0, HTTP/2 only) with a test method table.</summary>
public sealed class GrpcServerTests : IAsyncLifetime
{
    private const string Echo = "/test.Test/Echo";
    private const string Duplex = "/test.Test/Duplex";
    private const int MaxMessage = 1024;

    private readonly TaskCompletionSource _duplexFirst = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource<string> _duplexEnded = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private WebApplication? _app;
    private HttpClient? _client;
    private Uri? _base;

    public async Task InitializeAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, o => o.Protocols = HttpProtocols.Http2));
        _app = builder.Build();
        var server = new GrpcServer(
        [
            GrpcMethod.Unary<Status, Status>(Echo, Status.Parser, (req, _) => ValueTask.FromResult(new Status { Code = req.Code, Message = "echo:" + req.Message })),
            GrpcMethod.DuplexStreaming(Duplex, async call =>
            {
                try
                {
                    while (await call.ReadMessageAsync(Status.Parser) is { } m)
                    {
                        _duplexFirst.TrySetResult();
                        await call.WriteMessageAsync(m);
                    }

                    _duplexEnded.TrySetResult("half-closed");
                }
                catch (OperationCanceledException)
                {
                    _duplexEnded.TrySetResult("cancelled");
                    throw;
                }
                catch (Exception ex)
                {
                    _duplexEnded.TrySetResult(ex.GetType().Name);
                    throw;
                }
            }),
        ], MaxMessage, NullLogger.Instance);
        _app.Run(server.HandleAsync);
        await _app.StartAsync();
        string address = _app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        _base = new Uri(address);
        _client = new HttpClient { DefaultRequestVersion = HttpVersion.Version20, DefaultVersionPolicy = HttpVersionPolicy.RequestVersionExact };
    }

    public async Task DisposeAsync()
    {
        _client?.Dispose();
        if (_app is not null)
        {
            await _app.DisposeAsync();
        }
    }

    private static byte[] Frame(IMessage message)
    {
        var pipe = new ArrayBufferWriterAdapter();
        GrpcFrame.WriteFrame(pipe.Writer, message);
        return pipe.Writer.WrittenSpan.ToArray();
    }

    private static byte[] Prefix(byte flag, uint length)
    {
        var b = new byte[5];
        b[0] = flag;
        BinaryPrimitives.WriteUInt32BigEndian(b.AsSpan(1), length);
        return b;
    }

    private async Task<(HttpResponseMessage Response, byte[] Body, string? Status, string? Message)> Call(string path, byte[] body, string contentType = "application/grpc")
    {
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(_base!, path)) { Content = new ByteArrayContent(body), Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse(contentType);
        request.Headers.TE.Add(new TransferCodingWithQualityHeaderValue("trailers"));
        HttpResponseMessage response = await _client!.SendAsync(request);
        byte[] bytes = await response.Content.ReadAsByteArrayAsync();
        string? status = Get(response.TrailingHeaders, GrpcHeaders.Status) ?? Get(response.Headers, GrpcHeaders.Status);
        string? message = Get(response.TrailingHeaders, GrpcHeaders.Message) ?? Get(response.Headers, GrpcHeaders.Message);
        return (response, bytes, status, message);
    }

    private static string? Get(HttpHeaders headers, string name) => headers.TryGetValues(name, out var v) ? v.First() : null;

    [Fact]
    public async Task Unary_call_echoes_and_ends_with_status_0_in_trailers()
    {
        var (response, body, status, _) = await Call(Echo, Frame(new Status { Code = Code.Ok, Message = "hi" }));

        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.Version} {response.StatusCode} {string.Join(",", response.Headers)} {System.Text.Encoding.UTF8.GetString(body)}");
        Assert.Equal("application/grpc", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("0", status);
        Assert.Equal(0, body[0]);
        Status reply = Status.Parser.ParseFrom(body.AsSpan(5).ToArray());
        Assert.Equal("echo:hi", reply.Message);
    }

    [Fact]
    public async Task Unknown_method_is_unimplemented_12_as_trailers_only()
    {
        var (response, body, status, message) = await Call("/apache.rocketmq.v2.MessagingService/Nope", Frame(new Status()));

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Empty(body);
        Assert.Equal("12", status);
        Assert.Contains("Nope", message);
    }

    [Fact]
    public async Task Invalid_compressed_flag_byte_ends_the_call_with_internal()
    {
        // flag 7 is neither 0 nor 1: corrupt framing
        var (_, _, status, _) = await Call(Echo, [.. Prefix(7, 2), 1, 2]);
        Assert.Equal("13", status);
    }

    [Fact]
    public async Task Truncated_body_ends_the_call_with_internal()
    {
        // the prefix promises 100 bytes, the stream ends after 10
        var (_, _, status, message) = await Call(Echo, [.. Prefix(0, 100), .. new byte[10]]);
        Assert.Equal("13", status);
        Assert.Contains("Incomplete", message);
    }

    [Fact]
    public async Task Truncated_prefix_ends_the_call_with_internal()
    {
        // only 3 of the 5 prefix bytes
        var (_, _, status, _) = await Call(Echo, [0, 0, 0]);
        Assert.Equal("13", status);
    }

    [Fact]
    public async Task Declared_length_over_the_limit_is_resource_exhausted_without_sending_the_body()
    {
        // 1 GiB declared, nothing else sent: decided from the prefix alone
        var (_, _, status, _) = await Call(Echo, Prefix(0, 1u << 30));
        Assert.Equal("8", status);
    }

    [Fact]
    public async Task Compressed_message_is_rejected_with_a_clear_status()
    {
        var (_, _, status, message) = await Call(Echo, [.. Prefix(1, 2), 1, 2]);
        Assert.Equal("12", status);
        Assert.Contains("Compressed", message);
    }

    [Fact]
    public async Task Malformed_protobuf_ends_the_call_with_internal()
    {
        // field 1 varint with no value bytes
        var (_, _, status, _) = await Call(Echo, [.. Prefix(0, 1), 0x08]);
        Assert.Equal("13", status);
    }

    [Fact]
    public async Task Non_grpc_content_type_is_415()
    {
        var (response, _, _, _) = await Call(Echo, Frame(new Status()), "application/json");
        Assert.Equal(HttpStatusCode.UnsupportedMediaType, response.StatusCode);
    }

    [Fact]
    public async Task Client_disconnect_mid_stream_cancels_the_handler()
    {
        var requestBody = new Pipe();
        var request = new HttpRequestMessage(HttpMethod.Post, new Uri(_base!, Duplex)) { Content = new StreamContent(requestBody.Reader.AsStream()), Version = HttpVersion.Version20, VersionPolicy = HttpVersionPolicy.RequestVersionExact };
        request.Content.Headers.ContentType = MediaTypeHeaderValue.Parse("application/grpc");
        using var cts = new CancellationTokenSource();
        await requestBody.Writer.WriteAsync(Frame(new Status { Message = "one" }));
        Task<HttpResponseMessage> send = _client!.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
        await _duplexFirst.Task.WaitAsync(TimeSpan.FromSeconds(10)); // the stream is open and mid-way

        cts.Cancel(); // resets the HTTP/2 stream while the response headers are still awaited
        try
        {
            // The echo's response headers may win the race with Cancel; disposing the unfinished response then resets
            // the stream instead.
            using HttpResponseMessage early = await send;
        }
        catch (OperationCanceledException)
        {
        }

        string ended = await _duplexEnded.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.NotEqual("half-closed", ended);
    }

    [Fact]
    public async Task Duplex_stream_ends_with_status_0_when_the_client_half_closes()
    {
        var (_, body, status, _) = await Call(Duplex, [.. Frame(new Status { Message = "a" }), .. Frame(new Status { Message = "b" })]);
        Assert.Equal("0", status);
        Assert.Equal("half-closed", await _duplexEnded.Task.WaitAsync(TimeSpan.FromSeconds(5)));
        Assert.Equal(Frame(new Status { Message = "a" }).Length * 2, body.Length);
    }

    private sealed class ArrayBufferWriterAdapter
    {
        public System.Buffers.ArrayBufferWriter<byte> Writer { get; } = new();
    }
}
