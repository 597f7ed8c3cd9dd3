using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// VIEW_MESSAGE_BY_ID (33): `mqadmin queryMsgById` and Java's viewMessage(offsetMsgId) decode the offset msg id into
// broker address + commit log offset and ask for the message at that offset.
internal sealed partial class RemotingDispatcher
{
    private async ValueTask<RemotingCommand?> ViewMessageByIdAsync(RemotingSession session, RemotingCommand request)
    {
        if (!request.TryGetLong("offset", out long offset)) return Missing(request, "offset");
        var message = await Engine.ReadMessageAtAsync(offset, session.Closing).ConfigureAwait(false);
        if (message is null) return Error(request, ResponseCode.SystemError, $"can not find message by the offset, {offset}");
        if (server.PulledForTests is { } pulled) await pulled(message.Body.Length).ConfigureAwait(false);
        var wire = RemotingMessageConverter.ToWire(message, offset, 0, server.StoreHost(session), Math.Max(0, message.QueueId), Math.Max(0, message.QueueOffset));
        var response = Ok(request);
        response.Body = EncodeStored(wire);
        return response;
    }
}
