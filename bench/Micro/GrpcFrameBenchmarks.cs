using System.Buffers;
using Apache.Rocketmq.V2;
using BenchmarkDotNet.Attributes;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Bench.Micro;

/// <summary>gRPC length-prefixed frame write (serialize into an IBufferWriter) and read + parse of a real
/// SendMessageRequest carrying one transactional message with a 1 KiB body.</summary>
[MemoryDiagnoser]
public class GrpcFrameBenchmarks
{
    private SendMessageRequest _request = null!;
    private byte[] _frame = [];
    private readonly ArrayBufferWriter<byte> _out = new(4096);

    [Params(1024)]
    public int BodyBytes { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        var body = new byte[BodyBytes];
        Random.Shared.NextBytes(body);
        var msg = new Message
        {
            Topic = new Resource { Name = "bench-tx" },
            SystemProperties = new SystemProperties
            {
                MessageId = "01A2B3C4D5E6F70800000000000000002A",
                MessageType = MessageType.Transaction,
                BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                BornHost = "bench-host",
                Tag = "TagA",
                BodyEncoding = Encoding.Identity,
            },
            Body = ByteString.CopyFrom(body),
        };
        msg.SystemProperties.Keys.Add("order-42");
        msg.UserProperties["trace"] = "abc123";
        _request = new SendMessageRequest();
        _request.Messages.Add(msg);
        var w = new ArrayBufferWriter<byte>();
        GrpcFrame.WriteFrame(w, _request);
        _frame = w.WrittenSpan.ToArray();
    }

    [Benchmark]
    public int WriteFrame()
    {
        _out.ResetWrittenCount();
        GrpcFrame.WriteFrame(_out, _request);
        return _out.WrittenCount;
    }

    [Benchmark]
    public int ReadAndParseFrame()
    {
        var seq = new ReadOnlySequence<byte>(_frame);
        if (GrpcFrame.TryReadFrame(ref seq, GrpcFrame.DefaultMaxMessageSize, out var payload) != GrpcFrameStatus.Complete)
            throw new InvalidOperationException("incomplete frame");
        var req = GrpcFrame.Parse(SendMessageRequest.Parser, payload);
        return req.Messages[0].Body.Length;
    }
}
