using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

// PULL_MESSAGE (11).
internal sealed partial class RemotingDispatcher
{
    /// <summary>
    /// Reads a queue from <c>queueOffset</c>; with the SUSPEND flag a pull that finds nothing is parked up to
    /// <c>suspendTimeoutMillis</c> and woken when a message becomes visible on the topic. Every answer carries
    /// nextBeginOffset, minOffset, maxOffset and suggestWhichBrokerId, even PULL_NOT_FOUND and PULL_OFFSET_MOVED:
    /// ali-ons reads them unguarded. With COMMIT_OFFSET the group's commitOffset is stored first.
    /// </summary>
    /// <param name="session">The connection.</param>
    /// <param name="request">The PULL_MESSAGE.</param>
    /// <param name="pastParkCap">A long poll its connection could not park (it has <see cref="RemotingOptions.MaxParkedPullsPerConnection"/>
    /// parked): served at once, and when there is nothing new answered SYSTEM_BUSY, from which the Java client backs off
    /// 3 s; a PULL_NOT_FOUND would make it pull again at once, in a tight loop (found by review, 2026-12-05).</param>
    /// <param name="room">The answer's room on the connection's in-flight budget and the broker's budget of pulled bytes
    /// (<see cref="RemotingOptions.MaxPullBytes"/>), taken before each body is read: the
    /// answer holds the messages that fit (nextBeginOffset follows the last of them). When not even the first fits, a
    /// long poll waits for room until its suspend time ends; then, or at once for a pull without SUSPEND, it is
    /// SYSTEM_BUSY, from which the Java client backs off and pulls the same offset again (as for a parked pull past the
    /// cap, a PULL_NOT_FOUND would make it pull again at once, and would tell it the queue has nothing new).</param>
    private async ValueTask<RemotingCommand?> PullMessageAsync(RemotingSession session, RemotingCommand request, bool pastParkCap = false,
        PullReservation? room = null)
    {
        string? group = request.Get("consumerGroup");
        string? topic = request.Get("topic");
        if (string.IsNullOrEmpty(group)) return Missing(request, "consumerGroup");
        if (string.IsNullOrEmpty(topic)) return Missing(request, "topic");
        if (!request.TryGetInt("queueId", out int queueId)) return Missing(request, "queueId");
        if (!request.TryGetLong("queueOffset", out long offset)) return Missing(request, "queueOffset");
        // A group the broker may not start (--max-consumer-groups) is told so at its first pull, as RocketMQ does for a
        // group it may not create, rather than pulling on with offsets that are never kept.
        if (Engine.PullGroupRefusal(group, topic) is { } refused) return RemotingErrors.Response(request, refused);
        Engine.Consumers.Seen(group, session.ClientId, "Remoting", session.RemoteEndPoint.ToString());
        int sysFlag = request.GetInt("sysFlag", 0);
        int maxMsgNums = request.GetInt("maxMsgNums", 32);

        if ((sysFlag & PullSysFlag.CommitOffset) != 0 && request.GetLong("commitOffset", -1) is long commit and > 0)
            await Engine.CommitConsumerOffsetAsync(group, topic, queueId, commit, session.Closing).ConfigureAwait(false);

        // The pull's own subscription (with its type) when it carries one, else the one the group's heartbeat announced,
        // whose type goes with it (a Java push consumer's pulls name the type but not the expression).
        string? expression, expressionType = request.Get("expressionType");
        bool own = (sysFlag & PullSysFlag.Subscription) != 0;
        if (own) expression = request.Get("subscription");
        else if (server.Clients.Subscription(group, topic) is { } announced)
        {
            // As Apache's PullMessageProcessor: a client that changed its subscription pulls with the new version before
            // the broker has its heartbeat; it backs off (3 s) from this and its heartbeat comes meanwhile. Filtered by
            // the old expression, it would be passed the messages it now wants. Only when the heartbeat named a version:
            // a client that sends none is never told it is out of date.
            if (announced.SubVersion > 0 && announced.SubVersion < request.GetLong("subVersion", 0))
                return Error(request, ResponseCode.SubscriptionNotLatest, "the consumer's subscription not latest");
            (expression, expressionType) = (announced.Expression, announced.ExpressionType ?? expressionType);
        }
        else expression = null;
        TagFilter filter = TagFilter.All;
        SqlFilter? sql = null;
        if (expressionType is null || expressionType.Equals("TAG", StringComparison.OrdinalIgnoreCase))
        {
            if (!TagFilter.TryParse(expression, out filter, out var filterError))
                return Error(request, ResponseCode.SubscriptionParseFailed, filterError!);
        }
        else if (expressionType.Equals("SQL92", StringComparison.OrdinalIgnoreCase))
        {
            // An SQL92 pull whose expression the broker does not know (a Java push consumer after a broker restart, until
            // its next heartbeat 30 s later; a heartbeat entry refused or expired) is SUBSCRIPTION_NOT_EXIST, as Apache
            // answers: the client pulls again 3 s later. Until 2026-12-06 it read everything, and the Java client does
            // not filter SQL92 itself (it does filter tags: a TAG pull without a subscription still reads everything).
            if (expression is null && !own)
                return Error(request, ResponseCode.SubscriptionNotExist, $"the consumer's subscription not exist: consumer group {group} announced none for topic {topic}");
            if (!SqlFilter.TryParse(expression, out sql, out var sqlError))
                return Error(request, ResponseCode.SubscriptionParseFailed, sqlError!);
        }
        else
            return Error(request, ResponseCode.SubscriptionParseFailed, $"expression type {expressionType} is not supported; use TAG or SQL92");

        TimeSpan suspend = TimeSpan.Zero;
        if ((sysFlag & PullSysFlag.Suspend) != 0)
        {
            long ms = Math.Max(0, request.GetLong("suspendTimeoutMillis", 15_000));
            suspend = TimeSpan.FromMilliseconds(Math.Min(ms, Options.MaxSuspend.TotalMilliseconds));
        }

        PullResult result;
        // A long poll also ends when the server begins to stop, and is answered SYSTEM_BUSY before its connection closes:
        // the Java client backs off from it (3 s) and pulls again, from this broker once it is back or from another. The
        // pull changed nothing, so nothing is lost. Until 2026-12-06 its connection was closed under it, unanswered.
        // (RocketMQ's broker answers requests arriving while it shuts down GO_AWAY, which only clients after 5.3.1 know.)
        // A plain pull is not cut short: it is answered as it is, like any request being processed at the stop.
        using (var poll = suspend > TimeSpan.Zero ? CancellationTokenSource.CreateLinkedTokenSource(session.Closing, session.Stopping) : null)
        {
            try
            {
                var time = server.Time;
                long deadline = time.GetTimestamp() + (long)(suspend.TotalSeconds * time.TimestampFrequency);
                while (true)
                {
                    server.NotePullLook();
                    TimeSpan left = time.GetElapsedTime(time.GetTimestamp(), deadline);
                    result = await Engine.PullAsync(topic, queueId, offset, maxMsgNums, filter, left > TimeSpan.Zero ? left : TimeSpan.Zero,
                        poll?.Token ?? session.Closing, sql, room).ConfigureAwait(false);
                    // A long poll with messages to read and no room for the first waits for room until its suspend time
                    // ends, on the budget that refused it (the connection's or the broker's), and looks again: as a
                    // gRPC pull does, and as it waits for messages. Until 2026-12-06 it answered SYSTEM_BUSY at once.
                    // A pull without SUSPEND (or one past its connection's cap of parked pulls) is answered at once.
                    if (result.Status != PullStatus.NoRoom || poll is null || room is null
                        || !await room.WaitForRoomAsync(time.GetElapsedTime(time.GetTimestamp(), deadline), time, poll.Token).ConfigureAwait(false))
                    {
                        break;
                    }
                }
            }
            catch (OperationCanceledException) when (session.Stopping.IsCancellationRequested && !session.Closing.IsCancellationRequested)
            {
                return Error(request, ResponseCode.SystemBusy, "[STOPPING]the broker is stopping; pull again later");
            }
        }
        if (result.Status == PullStatus.NotReadable)
            return Error(request, ResponseCode.NoPermission, BrokerEngine.UnreadableTopicReason(topic)!); // as RocketMQ answers a pull of an unreadable topic
        // As RocketMQ's PullMessageProcessor, before any long poll: the Java client backs off (3 s) from both. Until
        // 2026-12-05 both were PULL_NOT_FOUND at once, and a push consumer of a deleted topic re-pulled in a tight loop.
        if (result.Status == PullStatus.NoSuchTopic)
            return Error(request, ResponseCode.TopicNotExist, $"topic[{topic}] not exist, apply first please!");
        if (result.Status == PullStatus.NoSuchQueue)
            return Error(request, ResponseCode.SystemError,
                $"queueId[{queueId}] is illegal, topic:[{topic}] topicConfig.readQueueNums:[{Engine.QueueCount(topic)}] consumer:[{session.RemoteEndPoint}]");
        if (result.Status == PullStatus.NoRoom)
            return Error(request, ResponseCode.SystemBusy, room is { RefusedByBroker: true }
                ? $"[OVERLOAD]no room for pulled messages within the {Options.MaxPullBytes} bytes of them all connections may make the broker hold (answers being built or not read yet); pull again later"
                : $"[OVERLOAD]no room for pulled messages within the {Options.MaxInFlightBytesPerConnection} bytes this connection may have in flight (answers the client has not read yet); pull again later");
        // Past the cap with nothing new: SYSTEM_BUSY, from which the Java client backs off. But when the pull passed over
        // entries its filter does not take, PULL_NOT_FOUND with the offset after them: the client pulls from there, at
        // once. Until 2026-12-07 that offset was dropped with the SYSTEM_BUSY, and the client scanned the same entries
        // again every 3 s for as long as its connection's parked pulls stayed at the cap (found by review).
        if (pastParkCap && result.Status == PullStatus.NoNewMessage && result.NextBeginOffset <= offset)
            return Error(request, ResponseCode.SystemBusy,
                $"[PARKED_PULLS]this connection has {Options.MaxParkedPullsPerConnection} long polls parked already; pull again later");
        int code = result.Status switch
        {
            PullStatus.Found => ResponseCode.Success,
            PullStatus.NoNewMessage => ResponseCode.PullNotFound,
            _ => ResponseCode.PullOffsetMoved,
        };
        var response = RemotingCommand.ResponseTo(request, code);
        response.Set("suggestWhichBrokerId", 0L)
            .Set("nextBeginOffset", result.NextBeginOffset)
            .Set("minOffset", result.MinOffset)
            .Set("maxOffset", result.MaxOffset);
        if (result.Status == PullStatus.Found)
        {
            if (server.PulledForTests is { } pulled) await pulled(result.Messages.Sum(p => (long)p.Message.Body.Length)).ConfigureAwait(false);
            var storeHost = server.StoreHost(session);
            var body = new MemoryStream();
            foreach (var p in result.Messages)
                body.Write(EncodeStored(RemotingMessageConverter.ToWire(p.Message, p.PhysicalOffset, p.ReconsumeTimes, storeHost,
                    queueId, p.Message.QueueOffset)));
            response.Body = body.ToArray();
        }
        return response;
    }
}
