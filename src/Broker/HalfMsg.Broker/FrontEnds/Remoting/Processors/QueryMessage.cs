using System.Globalization;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// QUERY_MESSAGE (12): `mqadmin queryMsgByKey` and Java's queryMessage(topic, key, ...) by message key (or UNIQ_KEY), and, with the
// _UNIQUE_KEY_QUERY ext field, `mqadmin queryMsgByUniqueKey` and viewMessage(topic, msgId) by UNIQ_KEY.
internal sealed partial class RemotingDispatcher
{
    /// <summary>RocketMQ's defaultQueryMaxNum: what a unique-key query gets, whatever maxNum it sends.</summary>
    private const int DefaultQueryMaxNum = 32;

    /// <summary>
    /// Answers from the message index that <c>GET /api/messages?key=</c> uses (RocketMQ answers from its IndexFile): the
    /// topic's messages with the key (or the UNIQ_KEY), stored within [beginTimestamp, endTimestamp], the newest
    /// <c>maxNum</c> (at most <see cref="MessageIndex.MaxIdsPerKey"/>, as many as the index keeps per key), oldest first,
    /// in the stored layout, as a pull carries them. Only messages on a queue are found: a pending or rolled-back half
    /// and a delayed message not yet due are not (RocketMQ indexes them under its system topics, not the message's).
    /// Like a pull, the answer stops once it holds <c>ReceiveByteBudget</c> (8 MiB) of bodies; one message always fits.
    /// None found is QUERY_NOT_FOUND, as RocketMQ answers; so is a key the index has forgotten (it keeps the last
    /// 200,000 messages) or, after a start, not read back from the log yet (the remark says so). A message sent back (or
    /// dead-lettered) is still found in its own topic, at its position there, as RocketMQ finds it (and also in the retry
    /// or dead-letter topic once it is on a queue there).
    /// </summary>
    /// <param name="session">The connection.</param>
    /// <param name="request">The QUERY_MESSAGE.</param>
    /// <param name="room">The answer's room on the connection's in-flight budget and the broker's budget of pulled
    /// bytes, taken for each message's stored size before its body is read, as a pull's (see <see cref="PullReservation"/>):
    /// the answer holds the messages that fit, and when not even the first does it is SYSTEM_BUSY. Until 2026-12-06 the
    /// answer (up to 8 MiB of bodies) was read first and charged only once built, to its connection alone.</param>
    private async ValueTask<RemotingCommand?> QueryMessageAsync(RemotingSession session, RemotingCommand request, PullReservation? room)
    {
        string? topic = request.Get("topic");
        string? key = request.Get("key");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (string.IsNullOrEmpty(key)) return Missing(request, "key");
        bool byUniqueKey = request.Get("_UNIQUE_KEY_QUERY") == "true";
        int maxNum = byUniqueKey ? DefaultQueryMaxNum : Math.Clamp(request.GetInt("maxNum", DefaultQueryMaxNum), 1, MessageIndex.MaxIdsPerKey);
        long begin = request.GetLong("beginTimestamp", 0);
        long end = request.GetLong("endTimestamp", long.MaxValue);

        bool warming = Engine.MessageIndex.IsWarming; // read first, as the admin API's look-up does
        IReadOnlyList<MessageIndex.Entry> candidates = byUniqueKey
            ? Engine.MessageIndex.Find(key, topic) is { } one ? [one] : []
            : ByKeyOrUniqueKey(key, topic);
        var matching = candidates
            .Where(e => e.QueueId >= 0 && e.QueueOffset >= 0 && e.StoredAt.ToUnixTimeMilliseconds() is var at && at >= begin && at <= end)
            .TakeLast(maxNum)
            .ToList();

        var storeHost = server.StoreHost(session);
        var body = new MemoryStream();
        long bodies = 0, lastStored = 0, lastAddress = 0;
        bool noRoom = false;
        foreach (var e in matching)
        {
            if (bodies > 0 && bodies >= Engine.Options.ReceiveByteBudget) break;
            int size = Engine.StoredSizeOf(e.Topic, e.QueueId, e.QueueOffset);
            if (size < 0) continue; // cut by retention (or the topic deleted) since the index saw it
            if (room is not null && !room.TryTakeForLookup(size))
            {
                noRoom = true;
                break;
            }
            var m = await Engine.ReadMessageAsync(e.Topic, e.QueueId, e.QueueOffset, session.Closing).ConfigureAwait(false);
            long address = Engine.BodyAddressOf(e.Topic, e.QueueId, e.QueueOffset);
            // Cut by retention (or the topic deleted) since the index saw it; or the position now holds another message.
            if (m is null || m.MessageId != e.MessageId || address < 0)
            {
                room?.Return(size);
                continue;
            }
            body.Write(EncodeStored(RemotingMessageConverter.ToWire(m, address, ReconsumeTimesOf(m), storeHost, e.QueueId, e.QueueOffset)));
            bodies += m.Body.Length;
            lastStored = Math.Max(lastStored, m.StoreTimestampMs);
            lastAddress = Math.Max(lastAddress, address);
        }

        if (bodies > 0 && server.PulledForTests is { } pulled) await pulled(bodies).ConfigureAwait(false);

        // QueryMessageResponseHeader's two fields are @CFNotNull: the Java client fails to decode an answer without them.
        RemotingCommand response;
        if (body.Length == 0 && noRoom) return NoRoomForLookup(request, room!);
        if (body.Length > 0)
        {
            response = Ok(request);
            response.Body = body.ToArray();
        }
        else
        {
            response = Error(request, ResponseCode.QueryNotFound, warming
                ? "can not find message, maybe time range not correct; the message index is still being rebuilt from the log after the start, try again shortly"
                : "can not find message, maybe time range not correct (or the message index no longer holds it: it keeps the most recent messages)");
        }
        response.Set("indexLastUpdateTimestamp", lastStored).Set("indexLastUpdatePhyoffset", lastAddress);
        return response;
    }

    /// <summary>
    /// A plain key query's candidates: the messages with the key, and the message whose UNIQ_KEY it is, once, in the
    /// order they were stored. RocketMQ's index files hold a message's UNIQ_KEY beside its keys, so `mqadmin
    /// queryMsgByKey` with a message id finds that message too (until 2026-12-06 only the unique-key query did here).
    /// </summary>
    private IReadOnlyList<MessageIndex.Entry> ByKeyOrUniqueKey(string key, string topic)
    {
        IReadOnlyList<MessageIndex.Entry> byKey = Engine.MessageIndex.FindByKey(key, topic);
        if (Engine.MessageIndex.Find(key, topic) is not { } byId || byKey.Any(e => e.MessageId == byId.MessageId)) return byKey;
        return [.. byKey.Append(byId).OrderBy(e => e.StoredAt)];
    }

    /// <summary>A retried message's reconsume count, as a pull gives it (the stored layout's RECONSUMETIMES).</summary>
    private static int ReconsumeTimesOf(Core.Model.StoredMessage m)
        => m.Properties.TryGetValue(Core.BrokerEngine.ReconsumeTimesProperty, out var s)
            && int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) ? n : 0;
}
