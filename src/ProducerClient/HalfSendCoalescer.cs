using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using V2Message = Apache.Rocketmq.V2.Message;

namespace HalfMsg.ProducerClient;

/// <summary>
/// Coalesces the half sends of concurrent transactions: per broker endpoint and topic, at most
/// <c>maxCallsInFlight</c> SendMessage calls are outstanding; a half sent while they all are waits, and goes with the
/// others that waited meanwhile in the next call (up to <c>maxMessages</c> messages and <c>maxBytes</c> of bodies).
/// Below that many transactions in flight nothing waits and every half has a call of its own, as before.
/// </summary>
/// <remarks>
/// Every unary call costs both processes the same fixed work (an HTTP/2 stream, headers, a thread-pool hop or two at
/// each end) whatever it carries, and a transaction is two calls (half, decision). Sixty-four concurrent transactions
/// in one producer made 64 half calls per round; coalesced, about <c>maxCallsInFlight</c>. HalfMsgBroker stores each
/// message of such a call as if it had been sent alone, all at once, so they share its group commits. The Apache
/// RocketMQ broker refuses several transactional messages in one call (its store answers MESSAGE_ILLEGAL to a batch
/// with a transaction flag), so the producer coalesces only when the broker's Settings reply names a HalfMsgBroker
/// (<see cref="HalfMsg.Protocol.Grpc.BrokerAgent"/>).
/// </remarks>
internal sealed class HalfSendCoalescer(int maxCallsInFlight, int maxMessages, long maxBytes,
    Func<Endpoint, SendMessageRequest, CancellationToken, Task<SendMessageResponse>> call)
{
    private readonly CallCoalescer<(Endpoint Endpoint, string Topic), V2Message, SendMessageResponse, SendResultEntry> _calls =
        new(maxCallsInFlight, maxMessages, maxBytes, static m => m.Body.Length,
            (key, messages, ct) => call(key.Endpoint, new SendMessageRequest { Messages = { messages } }, ct),
            EntryAt);

    /// <summary>SendMessage calls made so far for halves.</summary>
    public long CallsMade => _calls.CallsMade;

    /// <summary>Sends one half and returns its own entry of the response (its status is the caller's to check).</summary>
    public Task<SendResultEntry> SendAsync(Endpoint endpoint, V2Message message, CancellationToken ct)
        => _calls.SendAsync((endpoint, message.Topic.Name), message, ct);

    /// <summary>Message <paramref name="index"/>'s entry of a reply to <paramref name="count"/> messages (its status is
    /// the caller's to check); a reply without one entry per message throws the call's error, else UNSUPPORTED.</summary>
    internal static SendResultEntry EntryAt(SendMessageResponse response, int index, int count)
        => CoalescedReply.EntryAt(response.Entries, response.Status, index, count, "SendMessage", "messages");
}
