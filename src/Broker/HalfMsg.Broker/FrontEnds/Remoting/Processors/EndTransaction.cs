using System.Globalization;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// END_TRANSACTION (37, usually one-way) and the broker-initiated CHECK_TRANSACTION_STATE (39).
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// commitOrRollback 8 = COMMIT, 12 = ROLLBACK, 0 = unknown (Java answers nothing for it, nor for any other value; an
    /// unknown answer to a check only marks the check answered).
    /// The transaction is the message's UNIQ_KEY (<c>msgId</c>). Exactly-once comes from the core: a repeated decision
    /// changes nothing, rollback after commit changes nothing, an unknown id is logged and counted (as is an id decided
    /// in another namespace than the producer group's).
    /// </summary>
    private async ValueTask<RemotingCommand?> EndTransactionAsync(RemotingCommand request)
    {
        string? group = request.Get("producerGroup");
        string? msgId = request.Get("msgId");
        string? txId = request.Get("transactionId");
        // Java's header declares producerGroup @CFNotNull: a decision without it is refused before anything is read.
        if (string.IsNullOrEmpty(group)) return Missing(request, "producerGroup");
        if (string.IsNullOrEmpty(msgId) && string.IsNullOrEmpty(txId)) return Missing(request, "msgId");
        var resolution = request.GetInt("commitOrRollback", -1) switch
        {
            MessageSysFlag.TransactionCommitType => TransactionResolution.Commit,
            MessageSysFlag.TransactionRollbackType => TransactionResolution.Rollback,
            _ => TransactionResolution.Unknown,
        };
        bool fromCheck = request.GetBool("fromTransactionCheck", false);
        string id = !string.IsNullOrEmpty(msgId) ? msgId : txId!;
        if (Engine.FindTransaction(id) is null && !string.IsNullOrEmpty(txId) && Engine.FindTransaction(txId) is not null) id = txId;
        if (resolution == TransactionResolution.Unknown)
        {
            // Changes nothing, but tells the core the producer answered its check (it is alive; see RunCheckPassAsync).
            if (fromCheck && Engine.FindTransaction(id) is not null)
                await Engine.EndTransactionAsync(new DecisionRequest(id, null, TransactionResolution.Unknown, DecisionSource.CheckBack, CheckToken: CheckTokenOf(request)))
                    .ConfigureAwait(false);
            return null;
        }
        if (Engine.FindTransaction(id) is { } pending && pending.ProducerGroup != group)
            return Error(request, ResponseCode.SystemError, "The producer group wrong");

        // Trace context (issue 12): RocketMQ 4's END_TRANSACTION header has no field for it, so a client may add a
        // `traceparent` ext field; without one the decision continues the half's own trace (the traceparent the
        // producer stored in its properties), so a Remoting transaction is one trace as a gRPC one is. Read only when
        // someone listens.
        if (BrokerTracing.Source.HasListeners())
            BrokerTracing.SetRemoteParent(request.Get(BrokerTracing.TraceParentProperty)
                ?? (await Engine.ReadPendingHalfAsync(id).ConfigureAwait(false))?.Properties.GetValueOrDefault(BrokerTracing.TraceParentProperty));
        // The producer group's namespace (a RocketMQ 4 client of a namespace wraps its group as it wraps its topics): a
        // transaction already decided in another namespace is answered as an unknown one, not with its outcome. A group
        // without one gives none, and is told as before: such a producer may send to a namespaced topic it names itself
        // (`tenant-a%orders`), and the decided id's namespace comes from the topic, so comparing "" with it told the
        // owner its own transaction was unknown (found by review, 2026-12-06).
        string? callerNamespace = group.Contains('%', StringComparison.Ordinal) ? BrokerEngine.NamespaceOf(group) : null;
        var result = await Engine.EndTransactionAsync(new DecisionRequest(id, null, resolution, fromCheck ? DecisionSource.CheckBack : DecisionSource.Client,
            Namespace: callerNamespace, CheckToken: fromCheck ? CheckTokenOf(request) : null), CancellationToken.None).ConfigureAwait(false);
        if (result.IsOk) return Ok(request);
        if (result.Error.Status == BrokerStatus.TransactionNotFound)
        {
            Interlocked.Increment(ref server.UnknownTransactionDecisions);
            Logger.LogInformation("END_TRANSACTION {Resolution} for unknown transaction {TransactionId} (group {Group}, from check {FromCheck})",
                resolution, id, group, fromCheck);
            return Error(request, ResponseCode.SystemError, "Find prepared transaction message failed");
        }
        Logger.LogInformation("END_TRANSACTION {Resolution} for {TransactionId} refused: {Error}", resolution, id, result.Error);
        return RemotingErrors.Response(request, result.Error);
    }

    /// <summary>
    /// The check token an answer to a check carries: the check's <c>tranStateTableOffset</c>, which the Java client
    /// (<c>DefaultMQProducerImpl.checkTransactionState</c>) echoes verbatim, as it echoes <c>commitLogOffset</c> and
    /// <c>transactionId</c>. Apache's broker refuses an answer whose offsets are not its half's, so a client that works
    /// with it echoes them. Null when absent or not a number: judged as before the tokens.
    /// </summary>
    private static long? CheckTokenOf(RemotingCommand request)
        => long.TryParse(request.Get("tranStateTableOffset"), NumberStyles.Integer, CultureInfo.InvariantCulture, out long token) ? token : null;

    /// <summary>
    /// CHECK_TRANSACTION_STATE, one-way, as the Java broker sends it: header topic, tranStateTableOffset,
    /// commitLogOffset, msgId (UNIQ_KEY), transactionId, offsetMsgId; body = the half in the stored-message layout with
    /// its real topic and TRAN_MSG/PGROUP/TRANSACTION_CHECK_TIMES properties.
    /// </summary>
    public RemotingCommand BuildCheckTransactionState(RemotingSession session, CheckBackRequest request)
    {
        var half = request.HalfMessage;
        long address = Engine.FindTransaction(request.TransactionId)?.LogAddress ?? 0;
        var storeHost = server.StoreHost(session);
        var wire = RemotingMessageConverter.ToWire(half, address, 0, storeHost, 0, address);
        wire.Properties[MessageConst.TransactionPrepared] = "true";
        wire.Properties[MessageConst.ProducerGroup] = request.ProducerGroup;
        wire.Properties[MessageConst.TransactionId] = request.TransactionId;
        // The check's number, 1 at the first, as Apache's broker writes it into the half it checks back: checkers read it
        // to give up after N checks, and Apache's transaction benchmark rolls back when it is missing (review, 2026-12-06).
        wire.Properties[MessageConst.TransactionCheckTimes] = request.CheckNumber.ToString(CultureInfo.InvariantCulture);
        string offsetMsgId = OffsetMessageId.Encode(storeHost, address);
        var cmd = RemotingCommand.Request(RequestCode.CheckTransactionState, body: EncodeStored(wire));
        cmd.Flag = RemotingCommand.OnewayFlag;
        cmd.Set("topic", half.Topic)
            // The half's check token (the address it was stored at, which its send result gave as queueOffset): unlike
            // commitLogOffset, not changed by retention's moves, so the answer's echo names the half this check asked about.
            .Set("tranStateTableOffset", request.CheckToken >= 0 ? request.CheckToken : address)
            .Set("commitLogOffset", address)
            .Set("msgId", half.MessageId)
            .Set("transactionId", request.TransactionId)
            .Set("offsetMsgId", offsetMsgId)
            .Set("bname", Options.BrokerName);
        return cmd;
    }
}
