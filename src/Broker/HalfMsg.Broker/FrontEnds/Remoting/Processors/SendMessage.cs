using System.Globalization;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// SEND_MESSAGE (10) and SEND_MESSAGE_V2 (310): normal, delayed and half (transactional) messages.
internal sealed partial class RemotingDispatcher
{
    /// <summary>The send header, read from V1 field names or their V2 one-letter aliases (SendMessageRequestHeaderV2).</summary>
    private readonly record struct SendHeader(string ProducerGroup, string Topic, int QueueId, int SysFlag, long BornTimestamp, int Flag,
        string? Properties, int ReconsumeTimes, int MaxReconsumeTimes);

    private static bool TryReadSendHeader(RemotingCommand r, out SendHeader header, out RemotingCommand? error)
    {
        header = default;
        error = null;
        string? group = r.Get("producerGroup", "a");
        string? topic = r.Get("topic", "b");
        if (string.IsNullOrEmpty(group)) { error = Missing(r, "producerGroup"); return false; }
        if (string.IsNullOrEmpty(topic)) { error = Missing(r, "topic"); return false; }
        int Int(string v1, string v2, int fallback) => int.TryParse(r.Get(v1, v2), NumberStyles.Integer, CultureInfo.InvariantCulture, out int v) ? v : fallback;
        long born = long.TryParse(r.Get("bornTimestamp", "g"), NumberStyles.Integer, CultureInfo.InvariantCulture, out long b) ? b : 0;
        // Apache stores any long here, but every reader of this broker shows it as a time (gRPC born_timestamp, check-backs,
        // the admin page), and gRPC refuses a born_timestamp outside the same years. MESSAGE_ILLEGAL is what a bad message
        // gets (as a bad zlib body does); the Java producer reports it at once instead of retrying.
        if (!UnixTime.IsShowable(born))
        {
            error = Error(r, ResponseCode.MessageIllegal,
                $"bornTimestamp {born} is not a time between the years 1 and 9999 (Unix milliseconds {UnixTime.MinMs} to {UnixTime.MaxMs})");
            return false;
        }
        header = new SendHeader(group, topic, Int("queueId", "e", -1), Int("sysFlag", "f", 0), born, Int("flag", "h", 0),
            r.Get("properties", "i"), Int("reconsumeTimes", "j", 0), Int("maxReconsumeTimes", "l", 16));
        return true;
    }

    private async ValueTask<RemotingCommand?> SendMessageAsync(RemotingSession session, RemotingCommand request)
    {
        if (!TryReadSendHeader(request, out var h, out var missing)) return missing;
        if ((h.SysFlag & MessageSysFlag.Compressed) == 0) return await SendMessageAsync(session, request, h, request.Body).ConfigureAwait(false);
        // The connection's in-flight budget counts request bodies as received, compressed: a 4 KiB zlib body can inflate
        // to the maximum message size. The inflated bytes count too, as they are produced, until the send is done.
        long charged = 0;
        try
        {
            var inflated = RemotingMessageConverter.Inflate(request.Body, h.SysFlag, Engine.Options.MaxMessageSize,
                n => { if (!session.TryChargeInFlight(n)) return false; charged += n; return true; }, out var why, out bool overloaded);
            if (inflated is null) return Error(request, overloaded ? ResponseCode.SystemBusy : ResponseCode.MessageIllegal, why!);
            return await SendMessageAsync(session, request, h, inflated).ConfigureAwait(false);
        }
        finally
        {
            session.ReleaseInFlight(charged);
        }
    }

    private async ValueTask<RemotingCommand?> SendMessageAsync(RemotingSession session, RemotingCommand request, SendHeader h, ReadOnlyMemory<byte> body)
    {
        var props = MessageProperties.Decode(h.Properties);
        var draft = RemotingMessageConverter.ToDraft(h.Topic, props, body, h.BornTimestamp, session.RemoteEndPoint, h.QueueId, h.ReconsumeTimes,
            DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), h.Flag);
        // The broker keys off the TRAN_MSG property, not the sysFlag (SendMessageProcessor, as RocketMQ does).
        bool isHalf = props.TryGetValue(MessageConst.TransactionPrepared, out var tran) && tran.Equals("true", StringComparison.OrdinalIgnoreCase);
        string group = props.TryGetValue(MessageConst.ProducerGroup, out var pg) && pg.Length > 0 ? pg : h.ProducerGroup;
        if (RemotingMessageConverter.StoredPropertiesRefusal(draft, isHalf, isHalf ? group : null) is { } tooLarge) return Error(request, ResponseCode.MessageIllegal, tooLarge);
        var storeHost = server.StoreHost(session);

        if (isHalf)
        {
            // The sending connection can be asked about its own half even before its first heartbeat.
            session.RegisterProducer(group);
            TimeSpan? immunity = CheckImmunityProperty.Of(props);
            var half = await Engine.SendHalfAsync(draft, group, session.ClientId, immunity, session.Closing).ConfigureAwait(false);
            if (!half.IsOk) return RemotingErrors.Response(request, half.Error);
            long address = Engine.FindTransaction(half.TransactionId)?.LogAddress ?? 0;
            // queueOffset of a half is its tranStateTableOffset; the client echoes it (and the offset msg id) in END_TRANSACTION.
            return SendOk(request, storeHost, address, Math.Max(h.QueueId, 0), address, half.TransactionId);
        }

        // A consumer's own retry send (the fallback when CONSUMER_SEND_MSG_BACK fails) past its maximum goes to the DLQ.
        // maxReconsumeTimes from the header counts for clients >= V3_4_9 (ordinal 121), else the group default 16.
        int maxReconsume = request.Version >= 121 ? h.MaxReconsumeTimes : DefaultMaxReconsumeTimes;
        if (h.Topic.StartsWith(BrokerEngine.RetryPrefix, StringComparison.Ordinal) && h.ReconsumeTimes >= maxReconsume)
        {
            var dead = await Engine.SendToDeadLetterAsync(h.Topic[BrokerEngine.RetryPrefix.Length..], draft, session.Closing).ConfigureAwait(false);
            if (!dead.IsOk) return RemotingErrors.Response(request, dead.Error);
            string dlq = BrokerEngine.DeadLetterPrefix + h.Topic[BrokerEngine.RetryPrefix.Length..];
            return SendOk(request, storeHost, Math.Max(0, Engine.BodyAddressOf(dlq, dead.QueueId, dead.QueueOffset)), dead.QueueId, dead.QueueOffset, null);
        }

        var sent = await Engine.SendAsync(draft, session.Closing).ConfigureAwait(false);
        if (!sent.IsOk) return RemotingErrors.Response(request, sent.Error);
        // A delayed message has no queue position until it is due (Java only logs queueId/queueOffset): its msgId is the
        // address of its stored record, where VIEW_MESSAGE_BY_ID finds it (until 2026-12-05 it was offset 0).
        long physical = sent.QueueOffset >= 0 ? Engine.BodyAddressOf(h.Topic, sent.QueueId, sent.QueueOffset) : sent.LogAddress;
        var response = SendOk(request, storeHost, Math.Max(physical, 0), Math.Max(sent.QueueId, 0), Math.Max(sent.QueueOffset, 0), null);
        if (RecallHandleOf(h.Topic, props, sent, draft) is { } handle) response.Set("recallHandle", handle);
        return response;
    }

    /// <summary>
    /// The recall handle a send of a timer message answers with (SendMessageResponseHeader's <c>recallHandle</c>, which
    /// RocketMQ 5.3.1+'s SendResult.getRecallHandle() reads and recallMessage takes back with RECALL_MESSAGE), in the form
    /// gRPC's sends answer (<see cref="V5RecallHandle"/>), so either protocol recalls what the other sent. Null where
    /// Apache's broker (SendMessageProcessor.attachRecallHandle) sets none: a message that does not wait for its time
    /// (a time already past), one with a DELAY level (Apache's broker delays it by the level, never as a timer message),
    /// one sent to a %RETRY% topic; and a batch, a half and a send-back, which do not come here.
    /// </summary>
    private string? RecallHandleOf(string topic, Dictionary<string, string> props, SendResult sent, MessageDraft draft)
    {
        bool timer = props.ContainsKey(MessageConst.TimerDeliverMs) || props.ContainsKey(MessageConst.TimerDelaySec) || props.ContainsKey(MessageConst.TimerDelayMs);
        bool level = props.TryGetValue(MessageConst.DelayLevel, out var lv) && int.TryParse(lv, NumberStyles.Integer, CultureInfo.InvariantCulture, out int l) && l > 0;
        if (!timer || level || topic.StartsWith(BrokerEngine.RetryPrefix, StringComparison.Ordinal)) return null;
        return sent.QueueId < 0 && sent.LogAddress >= 0 && draft.DeliveryTimestampMs is long deliverAt
            ? new V5RecallHandle(topic, deliverAt, sent.MessageId, sent.LogAddress).Encode(Options.BrokerName)
            : null;
    }

    /// <summary>SendMessageResponseHeader plus the MSG_REGION/TRACE_ON ext fields Java reads unguarded.</summary>
    private static RemotingCommand SendOk(RemotingCommand request, System.Net.IPEndPoint storeHost, long physical, int queueId, long queueOffset, string? transactionId)
    {
        var response = Ok(request);
        response.Set("msgId", OffsetMessageId.Encode(storeHost, physical))
            .Set("queueId", queueId)
            .Set("queueOffset", queueOffset)
            .Set("transactionId", transactionId)
            .Set(MessageConst.MsgRegion, "DefaultRegion")
            .Set(MessageConst.TraceOn, "true");
        return response;
    }

    /// <summary>SEND_BATCH_MESSAGE (320): every message of the batch goes to one queue, in order.</summary>
    private async ValueTask<RemotingCommand?> SendBatchMessageAsync(RemotingSession session, RemotingCommand request)
    {
        if (!TryReadSendHeader(request, out var h, out var missing)) return missing;
        // As RocketMQ: the batch's encoded body counts as one message against the size limit (the Java client checks
        // the same before sending). Without it a 16 MiB frame could carry 760,000 tiny messages.
        if (request.Body.Length > Engine.Options.MaxMessageSize)
            return Error(request, ResponseCode.MessageIllegal, $"the batch's body of {request.Body.Length} bytes exceeds the maximum message size of {Engine.Options.MaxMessageSize} bytes");
        List<BatchMessageCodec.Entry> entries;
        try
        {
            entries = BatchMessageCodec.Decode(request.Body.Span);
        }
        catch (RemotingProtocolException ex)
        {
            return Error(request, ResponseCode.MessageIllegal, ex.Message);
        }
        if (entries.Count == 0) return Error(request, ResponseCode.MessageIllegal, "the batch is empty");
        var storeHost = server.StoreHost(session);
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var drafts = new List<MessageDraft>(entries.Count);
        foreach (var e in entries)
        {
            var props = MessageProperties.Decode(e.Properties);
            // Read as a single send reads them: TRAN_MSG=false and DELAY=0 (msg.setDelayTimeLevel(0)) are neither a half
            // nor delayed, and Java's MessageBatch.generateFromList lets them through (refused until 2026-12-05).
            if ((props.TryGetValue(MessageConst.TransactionPrepared, out var tran) && tran.Equals("true", StringComparison.OrdinalIgnoreCase))
                || (props.TryGetValue(MessageConst.DelayLevel, out var level) && int.TryParse(level, out int l) && l > 0))
                return Error(request, ResponseCode.MessageIllegal, "batch messages cannot be transactional or delayed");
            var draft = RemotingMessageConverter.ToDraft(h.Topic, props, e.Body, h.BornTimestamp, session.RemoteEndPoint, h.QueueId, 0, now, e.Flag);
            if (RemotingMessageConverter.StoredPropertiesRefusal(draft, half: false, producerGroup: null) is { } tooLarge) return Error(request, ResponseCode.MessageIllegal, tooLarge);
            drafts.Add(draft);
        }
        // Few lock holds and one group commit for the whole batch, all on one queue, validated as a whole.
        var (error, sent) = await Engine.SendToOneQueueAsync(drafts, session.Closing).ConfigureAwait(false);
        if (!error.IsOk) return RemotingErrors.Response(request, error);
        int queueId = sent[0].QueueId;
        long firstOffset = sent[0].QueueOffset;
        var ids = new List<string>(sent.Length);
        foreach (var s in sent)
            ids.Add(OffsetMessageId.Encode(storeHost, Math.Max(0, Engine.BodyAddressOf(h.Topic, s.QueueId, s.QueueOffset))));
        var response = SendOk(request, storeHost, 0, queueId, firstOffset, null);
        response.Set("msgId", string.Join(',', ids));
        return response;
    }
}
