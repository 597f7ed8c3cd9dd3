using System.Buffers;
using System.Diagnostics.CodeAnalysis;
using System.IO.Pipelines;
using Google.Protobuf;
using HalfMsg.Protocol.Grpc;
using Microsoft.AspNetCore.Http;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Ends a call with a gRPC status (transport-level failure: malformed frame, oversized message, unknown method...).
/// Business outcomes never use this: they travel as <c>apache.rocketmq.v2.Status</c> in the response body.
/// </summary>
internal sealed class GrpcCallException(GrpcStatusCode status, string message) : Exception(message)
{
    public GrpcStatusCode Status { get; } = status;

    [DoesNotReturn]
    public static void Throw(GrpcStatusCode status, string message) => throw new GrpcCallException(status, message);
}

/// <summary>
/// One gRPC call over one HTTP/2 stream: reads length-prefixed messages from <c>Request.BodyReader</c> and writes them
/// to <c>Response.BodyWriter</c>. Reads and writes may run concurrently (bidi), but each side is single-threaded:
/// one reader loop, one writer.
/// </summary>
internal sealed class GrpcCall
{
    private readonly PipeReader _reader;
    private readonly PipeWriter _writer;
    private readonly int _maxReceiveMessageSize;

    public GrpcCall(HttpContext httpContext, int maxReceiveMessageSize, CancellationToken cancellationToken, DateTimeOffset? deadline)
    {
        HttpContext = httpContext;
        _reader = httpContext.Request.BodyReader;
        _writer = httpContext.Response.BodyWriter;
        _maxReceiveMessageSize = maxReceiveMessageSize;
        CancellationToken = cancellationToken;
        Deadline = deadline;
    }

    public HttpContext HttpContext { get; }

    /// <summary>Cancelled when the client goes away or the <c>grpc-timeout</c> deadline passes.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>The client's deadline, when it sent <c>grpc-timeout</c>.</summary>
    public DateTimeOffset? Deadline { get; }

    /// <summary>Value of a request header, or null.</summary>
    public string? Header(string name)
    {
        var values = HttpContext.Request.Headers[name];
        return values.Count == 0 ? null : values[0];
    }

    /// <summary>
    /// Reads the next request message. Returns null when the client half-closed cleanly between messages.
    /// Throws <see cref="GrpcCallException"/> for malformed, truncated, oversized or compressed frames.
    /// </summary>
    public async ValueTask<T?> ReadMessageAsync<T>(MessageParser<T> parser)
        where T : class, IMessage<T>
    {
        while (true)
        {
            ReadResult result = await _reader.ReadAsync(CancellationToken).ConfigureAwait(false);
            ReadOnlySequence<byte> buffer = result.Buffer;
            T? message = null;
            GrpcFrameStatus status = GrpcFrameStatus.Incomplete;
            try
            {
                status = GrpcFrame.TryReadFrame(ref buffer, _maxReceiveMessageSize, out ReadOnlySequence<byte> payload);
                if (status == GrpcFrameStatus.Complete)
                {
                    message = ParseOrThrow(parser, payload);
                }
            }
            finally
            {
                // Complete: consumed up to the frame end and examined nothing more, so a second frame already in the
                // buffer is returned by the next ReadAsync without waiting for more bytes. Otherwise: all examined.
                if (status == GrpcFrameStatus.Complete)
                {
                    _reader.AdvanceTo(buffer.Start);
                }
                else
                {
                    _reader.AdvanceTo(buffer.Start, buffer.End);
                }
            }

            switch (status)
            {
                case GrpcFrameStatus.Complete:
                    return message;
                case GrpcFrameStatus.TooLarge:
                    GrpcCallException.Throw(GrpcStatusCode.ResourceExhausted,
                        $"Received message larger than max ({_maxReceiveMessageSize} bytes)");
                    break;
                case GrpcFrameStatus.Compressed:
                    GrpcCallException.Throw(GrpcStatusCode.Unimplemented,
                        "Compressed gRPC messages are not supported (no grpc-encoding is negotiated; send identity)");
                    break;
                case GrpcFrameStatus.InvalidFlag:
                    GrpcCallException.Throw(GrpcStatusCode.Internal, "Invalid gRPC compressed-flag byte");
                    break;
            }

            if (result.IsCompleted)
            {
                if (result.Buffer.IsEmpty)
                {
                    return null;
                }

                GrpcCallException.Throw(GrpcStatusCode.Internal,
                    $"Incomplete message: the request ended inside a frame ({result.Buffer.Length} bytes left)");
            }

            if (result.IsCanceled)
            {
                throw new OperationCanceledException(CancellationToken);
            }
        }
    }

    private static T ParseOrThrow<T>(MessageParser<T> parser, in ReadOnlySequence<byte> payload)
        where T : IMessage<T>
    {
        try
        {
            return GrpcFrame.Parse(parser, payload);
        }
        catch (InvalidProtocolBufferException ex)
        {
            throw new GrpcCallException(GrpcStatusCode.Internal, "Malformed protobuf message: " + ex.Message);
        }
    }

    /// <summary>Writes one response message and flushes it, so each streamed message leaves at once.</summary>
    public async ValueTask WriteMessageAsync(IMessage message)
    {
        GrpcFrame.WriteFrame(_writer, message);
        FlushResult flush = await _writer.FlushAsync(CancellationToken).ConfigureAwait(false);
        if (flush.IsCanceled || flush.IsCompleted)
        {
            throw new OperationCanceledException("The response stream is closed.", CancellationToken);
        }
    }
}
