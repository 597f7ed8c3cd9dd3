using System.Buffers;
using Apache.Rocketmq.V2;
using BenchmarkDotNet.Attributes;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace HalfMsg.Bench.Micro;

/// <summary>Serialize into an IBufferWriter and parse from a sequence (what grpc-dotnet's generated marshallers do for
/// each message) of a real SendMessageRequest carrying one transactional message with a 1 KiB body. The gRPC framing
/// itself is grpc-dotnet's since the hand-written codec was removed.</summary>
[MemoryDiagnoser]
public class ProtobufMessageBenchmarks
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
        _frame = _request.ToByteArray();
    }

    [Benchmark]
    public int Serialize()
    {
        _out.ResetWrittenCount();
        _request.WriteTo(_out);
        return _out.WrittenCount;
    }

    [Benchmark]
    public int Parse()
    {
        var req = SendMessageRequest.Parser.ParseFrom(new ReadOnlySequence<byte>(_frame));
        return req.Messages[0].Body.Length;
    }
}
