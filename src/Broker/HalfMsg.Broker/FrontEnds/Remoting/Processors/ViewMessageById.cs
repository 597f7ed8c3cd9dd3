using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// VIEW_MESSAGE_BY_ID (33): `mqadmin queryMsgById` and Java's viewMessage(offsetMsgId) decode the offset msg id into
// broker address + commit log offset and ask for the message at that offset.
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// The message at a commit log offset. Its record's size is read first and its room taken on the connection's
    /// in-flight budget and the broker's budget of pulled bytes (<paramref name="room"/>, as a pull's) before the record
    /// is read: until 2026-12-06 the answer was charged only once built, to its connection alone, so a client that
    /// pipelined look-ups of a large message and read nothing made the broker read one copy per look-up being processed.
    /// No room is SYSTEM_BUSY, from which the Java client's caller retries.
    /// </summary>
    private async ValueTask<RemotingCommand?> ViewMessageByIdAsync(RemotingSession session, RemotingCommand request, PullReservation? room)
    {
        if (!request.TryGetLong("offset", out long offset)) return Missing(request, "offset");
        int size = await Engine.StoredSizeAtAsync(offset, session.Closing).ConfigureAwait(false);
        if (size < 0) return Error(request, ResponseCode.SystemError, $"can not find message by the offset, {offset}");
        if (room is not null && !room.TryTakeForLookup(size)) return NoRoomForLookup(request, room);
        var message = await Engine.ReadMessageAtAsync(offset, session.Closing, size).ConfigureAwait(false);
        if (message is null)
        {
            room?.Return(size);
            return Error(request, ResponseCode.SystemError, $"can not find message by the offset, {offset}");
        }
        if (server.PulledForTests is { } pulled) await pulled(message.Body.Length).ConfigureAwait(false);
        var wire = RemotingMessageConverter.ToWire(message, offset, 0, server.StoreHost(session), Math.Max(0, message.QueueId), Math.Max(0, message.QueueOffset));
        var response = Ok(request);
        response.Body = EncodeStored(wire);
        return response;
    }

    /// <summary>SYSTEM_BUSY for a look-up (VIEW_MESSAGE_BY_ID, QUERY_MESSAGE) with no room for its first message, naming
    /// the budget that refused, as a pull's answer does.</summary>
    private RemotingCommand NoRoomForLookup(RemotingCommand request, PullReservation room)
        => Error(request, ResponseCode.SystemBusy, room.RefusedByBroker
            ? $"[OVERLOAD]no room for the messages looked up within the {Options.MaxPullBytes} bytes of pulled messages all connections may make the broker hold (answers being built or not read yet); retry later"
            : $"[OVERLOAD]no room for the messages looked up within the {Options.MaxInFlightBytesPerConnection} bytes this connection may have in flight (answers the client has not read yet); retry later");
}
