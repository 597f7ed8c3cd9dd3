using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// The stored-message layout of PULL_MESSAGE, CHECK_TRANSACTION_STATE, VIEW_MESSAGE_BY_ID and QUERY_MESSAGE.
internal sealed partial class RemotingDispatcher
{
    /// <summary>At most 10 warnings a minute about messages whose properties had to be cut (each pull of one would log).</summary>
    private static readonly LogRateLimiter CutPropertiesLog = new(10, TimeProvider.System);

    /// <summary>
    /// Encodes a message in the stored layout. Its properties are cut down to what the layout's 16-bit length holds when
    /// they exceed it (only a message stored before sends were checked against it): until 2026-12-05 the encoder threw,
    /// and every pull covering the message failed with SYSTEM_ERROR, so its queue stopped for every Remoting consumer.
    /// </summary>
    internal byte[] EncodeStored(RemotingMessage wire)
    {
        byte[] bytes = StoredMessageCodec.Encode(wire, out var dropped);
        if (dropped.Count > 0 && CutPropertiesLog.TryEnter(out long suppressed))
            Logger.LogWarning("Message {MessageId} of {Topic}/{QueueId}/{QueueOffset} has properties over {Max} bytes, more than the Remoting " +
                "stored layout holds: sent without {Dropped} ({Suppressed} earlier warnings like this left out)",
                wire.MsgId, wire.Topic, wire.QueueId, wire.QueueOffset, StoredMessageCodec.MaxPropertiesBytes, string.Join(", ", dropped), suppressed);
        return bytes;
    }
}
