using System.Buffers;
using System.Net;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>A tiny Kestrel h2c (HTTP/2 prior knowledge) server on 127.0.0.1:0 answering with canned gRPC responses.</summary>
public sealed class TestGrpcServer : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TestGrpcServer(WebApplication app, int port)
    {
        _app = app;
        Port = port;
    }

    public int Port { get; }

    public string Endpoint => $"127.0.0.1:{Port}";

    public static async Task<TestGrpcServer> StartAsync(RequestDelegate handler)
    {
        WebApplicationBuilder builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.Protocols = HttpProtocols.Http2));
        WebApplication app = builder.Build();
        app.Run(handler);
        await app.StartAsync();
        string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        return new TestGrpcServer(app, new Uri(address).Port);
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }

    /// <summary>Reads every request message of type <typeparamref name="T"/> until the client half-closes.</summary>
    public static async IAsyncEnumerable<T> ReadMessages<T>(HttpContext context, MessageParser<T> parser)
        where T : IMessage<T>
    {
        var reader = context.Request.BodyReader;
        while (true)
        {
            System.IO.Pipelines.ReadResult read;
            try
            {
                read = await reader.ReadAsync(context.RequestAborted);
            }
            catch (OperationCanceledException)
            {
                yield break;
            }

            ReadOnlySequence<byte> buffer = read.Buffer;
            var messages = new List<T>();
            while (GrpcFrame.TryReadFrame(ref buffer, 1 << 20, out ReadOnlySequence<byte> payload) == GrpcFrameStatus.Complete)
            {
                messages.Add(parser.ParseFrom(payload));
            }

            reader.AdvanceTo(buffer.Start, buffer.End);
            foreach (T m in messages)
            {
                yield return m;
            }

            if (read.IsCompleted)
            {
                yield break;
            }
        }
    }

    public static async Task<T> ReadOne<T>(HttpContext context, MessageParser<T> parser)
        where T : IMessage<T>
    {
        await foreach (T m in ReadMessages(context, parser))
        {
            return m;
        }

        throw new InvalidOperationException("no request message");
    }

    public static async Task WriteAsync(HttpContext context, IMessage message)
    {
        if (!context.Response.HasStarted)
        {
            context.Response.ContentType = GrpcHeaders.ContentTypeValue;
        }

        GrpcFrame.WriteFrame(context.Response.BodyWriter, message);
        await context.Response.BodyWriter.FlushAsync();
    }

    public static void Trailers(HttpContext context, GrpcStatusCode status, string? message = null)
    {
        context.Response.AppendTrailer(GrpcHeaders.Status, ((int)status).ToString(System.Globalization.CultureInfo.InvariantCulture));
        if (message is not null)
        {
            context.Response.AppendTrailer(GrpcHeaders.Message, GrpcMessageEncoding.Encode(message));
        }
    }
}
