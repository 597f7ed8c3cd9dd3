using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;

namespace HalfMsg.Protocol.Tests;

/// <summary>Field numbers are the wire contract with the official RocketMQ 5 clients; these pin a few of them.</summary>
public sealed class ProtoWireCompatTests
{
    [Fact]
    public void A_telemetry_command_with_settings_round_trips()
    {
        var command = new TelemetryCommand
        {
            Status = new Status { Code = Code.Ok, Message = "ok" },
            Settings = new Settings
            {
                ClientType = ClientType.Producer,
                RequestTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(3)),
                Publishing = new Publishing { Topics = { new Resource { Name = "t" } }, MaxBodySize = 4 << 20, ValidateMessageType = true },
                UserAgent = new UA { Language = Language.NodeJs, Version = "5.0.0" },
                BackoffPolicy = new RetryPolicy
                {
                    MaxAttempts = 3,
                    ExponentialBackoff = new ExponentialBackoff { Initial = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(10)), Multiplier = 2 },
                },
            },
        };

        var parsed = TelemetryCommand.Parser.ParseFrom(command.ToByteArray());

        Assert.Equal(command, parsed);
        Assert.Equal(TelemetryCommand.CommandOneofCase.Settings, parsed.CommandCase);
        Assert.Equal(Settings.PubSubOneofCase.Publishing, parsed.Settings.PubSubCase);
        Assert.True(parsed.Settings.HasClientType);
    }

    [Fact]
    public void A_telemetry_command_with_an_orphaned_transaction_check_round_trips()
    {
        var command = new TelemetryCommand
        {
            RecoverOrphanedTransactionCommand = new RecoverOrphanedTransactionCommand
            {
                TransactionId = "tx-1",
                Message = new Message
                {
                    Topic = new Resource { Name = "orders" },
                    SystemProperties = new SystemProperties
                    {
                        MessageId = "id-1",
                        MessageType = MessageType.Transaction,
                        OrphanedTransactionRecoveryDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                    },
                    Body = ByteString.CopyFromUtf8("x"),
                },
            },
        };

        var parsed = TelemetryCommand.Parser.ParseFrom(command.ToByteArray());

        Assert.Equal(command, parsed);
        Assert.Equal(TelemetryCommand.CommandOneofCase.RecoverOrphanedTransactionCommand, parsed.CommandCase);
        Assert.Null(parsed.Status);
    }

    // Tag byte = (field_number << 3) | wire_type; wire type 2 = length-delimited, 0 = varint.
    public static TheoryData<IMessage, byte[]> EncodedMessages => new()
    {
        { new Resource { Name = "a" }, [0x12, 0x01, (byte)'a'] },                                   // name = 2
        { new Resource { ResourceNamespace = "a" }, [0x0A, 0x01, (byte)'a'] },                      // resource_namespace = 1
        { new SendMessageRequest { Messages = { new Message() } }, [0x0A, 0x00] },                   // messages = 1
        { new Message { Body = ByteString.CopyFrom(7) }, [0x22, 0x01, 0x07] },                       // body = 4
        { new EndTransactionRequest { Resolution = TransactionResolution.Rollback }, [0x20, 0x02] }, // resolution = 4, ROLLBACK = 2
        { new EndTransactionRequest { Source = TransactionSource.SourceServerCheck }, [0x28, 0x02] },// source = 5
        { new EndTransactionRequest { TransactionId = "t" }, [0x1A, 0x01, (byte)'t'] },             // transaction_id = 3
        { new TelemetryCommand { RecoverOrphanedTransactionCommand = new() }, [0x2A, 0x00] },        // field 5
        { new TelemetryCommand { Settings = new() }, [0x12, 0x00] },                                 // field 2
        { new SystemProperties { MessageType = MessageType.Transaction }, [0x30, 0x04] },            // message_type = 6, TRANSACTION = 4
        { new SystemProperties { DeliveryAttempt = 0 }, [0x80, 0x01, 0x00] },                       // optional field 16, presence kept
        { new SystemProperties { OrphanedTransactionRecoveryDuration = new() }, [0x9A, 0x01, 0x00] },// field 19
        { new Status { Code = Code.Ok }, [0x08, 0xA0, 0x9C, 0x01] },                                 // OK = 20000
        { new ReceiveMessageResponse { Message = new() }, [0x12, 0x00] },                            // message = 2
        { new Settings { ClientType = ClientType.Producer }, [0x08, 0x01] },                        // client_type = 1
        { new HeartbeatRequest { ClientType = ClientType.SimpleConsumer }, [0x10, 0x03] },           // client_type = 2
    };

    [Theory]
    [MemberData(nameof(EncodedMessages))]
    public void Fields_are_encoded_with_the_client_protocol_numbers(IMessage message, byte[] expected)
    {
        Assert.Equal(expected, message.ToByteArray());
    }
}
