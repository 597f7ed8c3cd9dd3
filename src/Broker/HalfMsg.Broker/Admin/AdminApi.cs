using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Admin;

/// <summary>
/// The operator's JSON API on the admin (HTTP/1.1) port, behind <see cref="AdminGuard"/>. Reads are GET; every state
/// change is POST. Every 4xx answers <see cref="ErrorBody"/>.
/// </summary>
public static class AdminApi
{
    /// <summary>Set (to <c>true</c>) on a key look-up's answer while the message index is still rebuilt after a start:
    /// the list may lack messages with the key that the rebuild has not reached yet.</summary>
    public const string IndexWarmingHeader = "X-HalfMsg-Index-Warming";

    /// <summary>
    /// Producer groups <c>/api/stats</c> lists in <c>producers</c>, at most: the first by name; <c>producerGroups</c> and
    /// <c>producersConnected</c> count them all, and <c>producersTruncated</c> says some were left out. Until the
    /// late-night session of 2026-12-07 every group was listed with every client id: with 1,024 groups per connection (and
    /// per Telemetry stream) and up to 10,000 channels per group, one answer could run to hundreds of megabytes (found by review).
    /// </summary>
    public const int MaxListedProducerGroups = 100;

    /// <summary>Client ids listed per producer group in <c>/api/stats</c>, at most (the first to register): 100 groups of
    /// 50 ids of the usual tens of characters are about 200 KB, and of the longest ids a broker takes (1,024) about 5 MB.</summary>
    public const int MaxListedProducerClientIds = 50;

    public static void MapAdminApi(this IEndpointRouteBuilder app, BrokerEngine engine)
    {
        _ = HalfMsg.Broker.Core.Diagnostics.ThreadPoolDelaySampler.Shared; // start sampling with the admin port
        // Open without credentials (probes): status, and the reason when it is not plainly ready.
        app.MapGet("/health", () => HealthOf(engine) is var h && h.HttpStatus == 200 ? Results.Ok(h.Body) : Results.Json(h.Body, statusCode: h.HttpStatus));

        app.MapGet("/api/topics", () => Results.Ok(engine.ListTopics()));
        // ?queues=N: a new topic gets N queues, an existing one with fewer gets the queues it lacks (grownFrom names the
        // count before); fewer than it has is refused (400). Without it, a new topic gets --queues-per-topic.
        app.MapPost("/api/topics/{name}", async (string name, int? queues, CancellationToken ct) =>
        {
            var (error, created, grownFrom) = await engine.CreateOrGrowTopicAsync(name, queues, ct);
            return error.IsOk
                ? Results.Ok(new { topic = name, created, queues = engine.QueueCount(name), grownFrom = grownFrom > 0 ? grownFrom : (int?)null })
                : Results.Json(new ErrorBody(error.Message, error.Status.ToString()), statusCode: 400);
        });

        // Deletes the topic's queues, leases and offsets (bodies stay until retention cuts them). POST, like every change.
        app.MapPost("/api/topics/{name}/delete", async (string name, CancellationToken ct) => await engine.DeleteTopicAsync(name, ct) is { IsOk: false } error
            ? (error.Status == BrokerStatus.TopicNotFound ? NotFound(error.Message) : ToResult(error, new { }))
            : Results.Ok(new { topic = name, deleted = true }));

        // Moves up to ?max= dead letters back to the group, and no other (optionally only those from ?topic=): see RedriveDeadLettersAsync.
        // ?continuation= (the previous answer's) goes on past the letters the earlier calls of the same re-drive left.
        app.MapPost("/api/dlq/{group}/redrive", async (string group, string? topic, int? max, long? continuation, CancellationToken ct) =>
        {
            if (max is < 1 or > 100_000) return Results.Json(new ErrorBody("max must be in [1, 100000]", "BadRequest"), statusCode: 400);
            var result = await engine.RedriveDeadLettersAsync(group, string.IsNullOrEmpty(topic) ? null : topic, max ?? 1000, null, ct, continuation);
            var body = new
            {
                group, deadLetterTopic = result.DeadLetterTopic, topic, redriven = result.Redriven, skipped = result.Skipped,
                messageIds = result.MessageIds,
                // Dead letters that could not be put back: they stay in the dead-letter topic for a later re-drive (all
                // counted, the first 100 listed with why).
                notRedriven = result.NotRedriven,
                notRedrivenLetters = result.NotRedrivenLetters.Select(l => new
                {
                    messageId = l.MessageId, deadLetterOffset = l.DeadLetterOffset, target = l.Target, status = l.Status.ToString(), reason = l.Reason,
                }),
                // The call stopped at its limit of letters left (10 x max, at least 1,000): more may be behind them; the
                // next call passes ?continuation= to go on past them instead of trying them again.
                more = result.More,
                continuation = result.Continuation,
                error = result.Error.IsOk ? null : result.Error.Message,
            };
            if (result.Error.IsOk) return Results.Ok(body);
            if (result.Error.Status == BrokerStatus.TopicNotFound && result.Redriven == 0) return NotFound(result.Error.Message);
            // Stopped part-way: what moved is reported with the reason.
            return Results.Json(body, statusCode: result.Error.Status == BrokerStatus.IllegalConsumerGroup || result.Error.Status == BrokerStatus.BadRequest ? 400 : 500);
        });

        app.MapGet("/api/transactions/pending", (long? after, int? limit) => Page(engine, parked: false, after, limit));
        app.MapGet("/api/transactions/parked", (long? after, int? limit) => Page(engine, parked: true, after, limit));
        app.MapGet("/api/transactions/{id}", (string id) =>
        {
            if (engine.FindTransaction(id) is { } tx) return Results.Ok(View(engine, tx));
            // A decided transaction can still be looked up while the message index remembers it.
            if (engine.MessageIndex.Find(id) is { TransactionId: not null, Resolution: not null } decided)
                return Results.Ok(new
                {
                    transactionId = id, decided.MessageId, decided.Topic, decided.ProducerGroup, storedAt = decided.StoredAt,
                    resolution = decided.Resolution.ToString(), decidedBy = decided.DecidedBy.ToString(), decided.DecidedAt,
                    queueId = decided.QueueId >= 0 ? decided.QueueId : (int?)null, queueOffset = decided.QueueOffset >= 0 ? decided.QueueOffset : (long?)null,
                });
            return NotFound($"transaction '{id}' is not pending or parked, and no decision for it is remembered");
        });

        // Where it is, plus the stored message itself (headers, properties, body preview) while it can still be read.
        app.MapGet("/api/messages/{id}", async (string id, CancellationToken ct) => engine.MessageIndex.Find(id) is { } entry
            ? Results.Ok(MessageLookup.Detail(engine, MessageLookup.Locate(engine, entry), await MessageLookup.ReadAsync(engine, entry, ct)))
            : engine.MessageIndex.IsWarming
                ? Results.Json(new ErrorBody(MessageLookup.NotFoundReason(engine, id), "IndexWarming"), statusCode: 404)
                : NotFound(MessageLookup.NotFoundReason(engine, id)));
        // The index's own state: how many messages it knows and whether it is still rebuilding from the log.
        app.MapGet("/api/message-index", () => Results.Ok(new
        {
            messages = engine.MessageIndex.Count, capacity = engine.MessageIndex.Capacity, warming = engine.MessageIndex.IsWarming,
            recordsScanned = engine.MessageIndex.RecordsScanned,
            failedSteps = engine.MessageIndex.FailedSteps, firstFailure = engine.MessageIndex.FirstFailure,
            failedListenerCalls = engine.MessageIndex.FailedListenerCalls,
            // Keys: a message is found by its first maxKeysPerMessage distinct keys of at most maxKeyLength characters;
            // the indexed keys of all messages stay within keyBytesBudget (estimated), the oldest messages going first.
            maxKeysPerMessage = Core.Diagnostics.MessageIndex.MaxKeysPerMessage, maxKeyLength = Core.Diagnostics.MessageIndex.MaxKeyLength,
            keysNotIndexed = engine.MessageIndex.KeysNotIndexed, messagesWithKeysNotIndexed = engine.MessageIndex.MessagesWithKeysNotIndexed,
            keyBytes = engine.MessageIndex.KeyBytes, keyBytesBudget = engine.MessageIndex.MaxKeyBytes,
            messagesForgottenForKeyBytes = engine.MessageIndex.MessagesForgottenForKeyBytes,
        }));
        // While the index is rebuilt after a start, as the look-up by id: nothing found is 404 IndexWarming, and what is
        // found comes with the header IndexWarmingHeader (other messages with the key may not be indexed yet). Until
        // 2026-12-06 it answered 200 [] and `halfmsg message find` said no message had the key (found by review).
        app.MapGet("/api/messages", (HttpContext http, string? key, string? topic) =>
        {
            if (string.IsNullOrEmpty(key))
                return Results.Json(new ErrorBody("give ?key=K (and optionally &topic=T); look up one id at /api/messages/{id}", "BadRequest"), statusCode: 400);
            bool warming = engine.MessageIndex.IsWarming; // read first: a warm-up that ends during the look-up leaves it marked
            var found = engine.MessageIndex.FindByKey(key, string.IsNullOrEmpty(topic) ? null : topic).Select(e => MessageLookup.Locate(engine, e)).ToList();
            if (!warming) return Results.Ok(found);
            if (found.Count == 0)
                return Results.Json(new ErrorBody($"no message with key '{key}' in the message index yet: the index is still being rebuilt from the log after the start "
                    + $"({engine.MessageIndex.RecordsScanned} records read so far); try again shortly", "IndexWarming"), statusCode: 404);
            http.Response.Headers[IndexWarmingHeader] = "true";
            return Results.Ok(found);
        });

        // Resume is for parked halves; on a half that is not parked the core says so (400) and changes nothing.
        app.MapPost("/api/transactions/{id}/resume", async (string id, CancellationToken ct) =>
            ToResult(await engine.ResumeTransactionAsync(id, ct), new { transactionId = id, resumed = true, message = "parked half resumed: checked again from zero" }));
        app.MapPost("/api/transactions/{id}/commit", (string id, CancellationToken ct) => Decide(engine, id, TransactionResolution.Commit, ct));
        app.MapPost("/api/transactions/{id}/rollback", (string id, CancellationToken ct) => Decide(engine, id, TransactionResolution.Rollback, ct));

        // The group's progress per topic, plus its members: consumer clients seen lately (gRPC and Remoting).
        // A lease group's topics (gRPC receives) come with kind "lease"; a pull group's (RocketMQ 4 Remoting, committed
        // offsets) with kind "pull". Every answer has the same fields, also for a group only seen so far (members, no
        // progress): until 2026-12-05 that one lacked deadLettered, and `halfmsg group lag` crashed on it (found by review).
        // order is the mode configured (orderly, concurrent or default), effectiveOrder how the group is served: the mode,
        // or for default the broker's --default-group-order (message-group or concurrent).
        app.MapGet("/api/groups/{group}", (string group) =>
        {
            var web = System.Text.Json.JsonSerializerOptions.Web;
            var members = engine.Consumers.Of(group);
            var lease = engine.FindGroup(group);
            var pull = engine.PullProgressOf(group);
            var order = engine.GroupOrderOf(group);
            // A group configured before its consumers start is shown too (its mode, no progress yet).
            if (lease is null && pull.Count == 0 && members.Count == 0 && order == GroupOrder.NotConfigured)
                return NotFound($"consumer group '{group}' has never received from this broker");
            var topics = new System.Text.Json.Nodes.JsonArray();
            foreach (var t in lease?.Topics ?? [])
            {
                var node = System.Text.Json.JsonSerializer.SerializeToNode(t, web)!.AsObject();
                node["kind"] = "lease";
                topics.Add(node);
            }
            foreach (var t in pull)
            {
                var node = System.Text.Json.JsonSerializer.SerializeToNode(t, web)!.AsObject();
                node["kind"] = "pull";
                node["inFlight"] = 0;
                topics.Add(node);
            }
            return Results.Ok(new System.Text.Json.Nodes.JsonObject
            {
                ["group"] = group,
                ["order"] = AdminInputs.OrderName(order),
                // How the group is served: its mode, or for one not configured the broker's --default-group-order.
                ["effectiveOrder"] = AdminInputs.EffectiveOrderName(order, engine.Options.DefaultGroupOrder),
                ["topics"] = topics,
                ["deadLetterTopic"] = BrokerEngine.DeadLetterPrefix + group,
                ["deadLettered"] = engine.DeadLetteredOf(group),
                ["members"] = System.Text.Json.JsonSerializer.SerializeToNode(members, web),
            });
        });
        // A consumer group's order mode (Apache's consumeMessageOrderly): orderly holds each queue while a message of it
        // is in flight, concurrent holds nothing, default gives the group back to --default-group-order. The group need
        // not exist yet; answered once durable.
        app.MapPost("/api/groups/{group}/order", async (string group, string? mode, CancellationToken ct) =>
        {
            if (!AdminInputs.TryParseOrder(mode, out var order))
                return Results.Json(new ErrorBody($"mode must be orderly, concurrent or default, not '{mode}'", "BadRequest"), statusCode: 400);
            return ToResult(await engine.SetGroupOrderAsync(group, order, ct), new { group, order = AdminInputs.OrderName(order) });
        });

        // Create a consumer group on a topic at a chosen start: from=earliest|latest|<unix ms>|<ISO-8601 time>.
        app.MapPost("/api/groups/{group}/start", async (string group, string? topic, string? from, CancellationToken ct) =>
        {
            if (string.IsNullOrEmpty(topic)) return Results.Json(new ErrorBody("topic is required", "BadRequest"), statusCode: 400);
            if (!AdminInputs.TryParseStartFrom(from, out var mode, out long at))
                return Results.Json(new ErrorBody($"from must be earliest, latest, Unix milliseconds or an ISO-8601 time, not '{from}'", "BadRequest"), statusCode: 400);
            var error = await engine.StartGroupAsync(group, topic, mode, at, ct);
            return error.Status == BrokerStatus.TopicNotFound ? NotFound(error.Message) : ToResult(error, new { group, topic, from = mode.ToString().ToLowerInvariant(), at });
        });

        // Forget a consumer group (its progress and leases): an idle group no longer shows lag; messages stay for others.
        app.MapPost("/api/groups/{group}/delete", async (string group, CancellationToken ct) => await engine.DeleteGroupAsync(group, ct) is { IsOk: false } error
            ? (error.Status == BrokerStatus.IllegalConsumerGroup ? NotFound(error.Message) : ToResult(error, new { }))
            : Results.Ok(new { group, deleted = true }));

        // Moves a pull group's committed offsets (RocketMQ 4 Remoting consumers) on every queue of a topic to the earliest
        // or latest message, or to the first message stored at or after a time. Lease groups (gRPC) keep no offsets.
        app.MapPost("/api/groups/{group}/reset-offset", async (string group, string? topic, string? to, CancellationToken ct) =>
        {
            if (string.IsNullOrEmpty(topic)) return Results.Json(new ErrorBody("give ?topic=T", "BadRequest"), statusCode: 400);
            if (!AdminInputs.TryParseResetTo(to, out long? atMs)) return Results.Json(new ErrorBody($"to must be earliest, latest, a time (2026-01-31T12:00:00Z) or Unix milliseconds, not '{to}'", "BadRequest"), statusCode: 400);
            // Before either path: the pull path below would otherwise commit offsets under a re-drive cursor's name.
            if (BrokerEngine.InternalGroupRefusal(group, "reset") is { } internalGroup) return ToResult(internalGroup, new { });
            int queues = engine.QueueCount(topic);
            if (queues <= 0) return NotFound($"topic '{topic}' does not exist");
            if (engine.FindGroup(group) is { } lease && lease.Topics.FirstOrDefault(t => t.Topic == topic) is { } before)
                return await ResetLeaseGroupAsync(engine, group, topic, to, atMs, lease, before, ct);
            var moved = new List<object>();
            for (int q = 0; q < queues; q++)
            {
                if (!engine.TryGetQueueOffsets(topic, q, out long min, out long max)) continue;
                long target = atMs is long at ? await engine.SearchOffsetAsync(topic, q, at, ct) ?? max : to == "latest" ? max : min;
                long? previous = engine.QueryConsumerOffset(group, topic, q);
                var error = await engine.CommitConsumerOffsetAsync(group, topic, q, target, ct);
                if (!error.IsOk) return ToResult(error, new { });
                moved.Add(new { queueId = q, previous, offset = target });
            }
            return Results.Ok(new { group, topic, to = string.IsNullOrEmpty(to) ? "earliest" : to, queues = moved });
        });

        // pendingTransactions counts the halves still being checked, parkedTransactions the parked ones, as the dashboard
        // and /metrics (halfmsg_transactions_pending, _parked) do: until 2026-12-06 pendingTransactions counted both.
        app.MapGet("/api/stats", (HttpContext http) =>
        {
            var (pendingCount, parkedCount) = engine.TransactionCounts();
            var producers = engine.Producers.Listing(MaxListedProducerGroups, MaxListedProducerClientIds);
            var remoting = http.RequestServices.GetService<FrontEnds.Remoting.RemotingServer>();
            return Results.Ok(new
            {
                engine.Metrics.RecordsAppended, engine.Metrics.MessagesStored, engine.Metrics.HalvesStored, engine.Metrics.Commits,
                engine.Metrics.Rollbacks, engine.Metrics.DuplicateDecisions, engine.Metrics.ChecksSent, engine.Metrics.ChecksWithoutProducer,
                // Check-backs a producer's channel threw on (halfmsg_transaction_checks_total{outcome="send_failed"}).
                engine.Metrics.CheckSendFailures,
                // Of ChecksSent, given back unwritten by a stream that ended with them queued (outcome="returned_unwritten").
                engine.Metrics.ChecksReturned,
                engine.Metrics.Parked, engine.Metrics.Delivered, engine.Metrics.Redelivered, engine.Metrics.LeasesRenewed, engine.Metrics.LeasesReleased, engine.Metrics.Acked, engine.Metrics.DeadLettered,
                engine.Metrics.ReceiveLooks, engine.Metrics.ReplayedRecords, engine.Metrics.RecoveryMilliseconds, engine.Metrics.CorruptRecordsSkipped,
                engine.Metrics.LastCheckpointPauseMicros, engine.Metrics.LastCheckpointLockWaitMicros, engine.Metrics.LastCheckpointHoldGcPauseMicros, engine.Metrics.LastCheckpointBytes,
                lastCheckpointHoldMicrosByPart = engine.Metrics.LastCheckpointHoldMicrosByPart is { } byPart
                    ? BrokerMetrics.CheckpointHoldParts.Zip(byPart).ToDictionary(p => p.First, p => p.Second) : null, engine.Metrics.CheckpointsWhole, engine.Metrics.CheckpointsDelta,
                engine.Metrics.RetentionCuts, engine.Metrics.LastRetentionCutPauseMicros, engine.Metrics.LastRetentionCutSearchMicros,
                engine.Metrics.LastRetentionCutExpiryMicros, engine.Metrics.LastRetentionCutGcPauseMicros, engine.Metrics.RecordsRelocated, engine.Metrics.MessagesExpired,
                health = engine.Health.Status.ToString(), healthReasons = engine.Health.Reasons,
                pendingTransactions = pendingCount, parkedTransactions = parkedCount, logBeginAddress = engine.LogBeginAddress, logTailAddress = engine.LogTailAddress,
                // The first groups by name with their first client ids (MaxListedProducerGroups), the totals, and whether
                // anything was left out of the listing.
                producers = producers.Groups, producerGroups = producers.GroupCount, producersConnected = producers.ChannelCount,
                producersTruncated = producers.Truncated, producerRegistrationsRefused = engine.Producers.RefusedRegistrations,
                diskFull = engine.DiskSpace.IsFull, diskFreeBytes = engine.DiskSpace.FreeBytes, diskTotalBytes = engine.DiskSpace.TotalBytes,
                diskRefused = engine.DiskSpace.Refused, engine.Metrics.RefusedBusy,
                logCommits = engine.LogCommitTotals.Commits, logCommitMicros = (long)engine.LogCommitTotals.Time.TotalMicroseconds,
                logCommitDuration = engine.LogCommitStats.Durations.Named(),
                logCommitIdleMicros = (long)engine.LogCommitLoopIdle.Idle.TotalMicroseconds, logCommitsKickedOnReturn = engine.LogCommitLoopIdle.KickedOnReturn,
                logAppendsThatWaited = engine.LogAppendsThatWaited,
                logReservationsThatWaited = engine.LogReservationsThatWaited,
                // Thread-pool queue delay samples, cumulative counts per power-of-two bucket of microseconds (b0 < 1 µs, bN < 2^N µs).
                threadPoolDelay = HalfMsg.Broker.Core.Diagnostics.ThreadPoolDelaySampler.Shared.Named(),
                // Each checkpoint's longest hold of the engine lock and each retention cut's hold, counted the same way.
                checkpointLockHold = engine.Metrics.CheckpointLockHolds.Named(), retentionCutLockHold = engine.Metrics.RetentionCutLockHolds.Named(),
                gcHeapBytes = GC.GetGCMemoryInfo().HeapSizeBytes, gcTotalAllocatedBytes = GC.GetTotalAllocatedBytes(),
                gcPauseMicros = (long)GC.GetTotalPauseDuration().TotalMicroseconds,
                gcCollectionsGen0 = GC.CollectionCount(0), gcCollectionsGen1 = GC.CollectionCount(1), gcCollectionsGen2 = GC.CollectionCount(2),
                indexes = engine.IndexSizes(),
                // ReceiveMessage answers leased and not yet written out, over all gRPC connections (--grpc-max-unsent bounds it).
                grpcUnsentAnswerBytes = http.RequestServices.GetService<FrontEnds.GrpcV5.MessagingService>()?.UnsentAnswerBytes,
                // One-way Remoting requests (END_TRANSACTION, offset commits) refused by flow control: they get no answer.
                remotingDroppedOnewayRequests = remoting is null ? (long?)null : Interlocked.Read(ref remoting.DroppedOnewayRequests),
                // Idle admin-port connections closed to make room for a new one (a probe while other peers hold the port).
                adminConnectionsEvicted = http.RequestServices.GetService<Hosting.PeerConnectionLimit>()?.Evicted,
                // SYSTEM_BUSY / SYSTEM_ERROR answers that waited for room in their connection's full outbound queue.
                remotingAnswersThatWaitedForRoom = remoting is null ? (long?)null : Interlocked.Read(ref remoting.AnswersThatWaitedForRoom),
            });
        });
    }

    /// <summary>What <c>/health</c> answers, and the dashboard's health card shows (until 2026-12-06 the card said only
    /// ready or starting, so "ready" while <c>/health</c> said degraded or disk-full, found by review): the status, the
    /// HTTP status, the answer's body, and the reasons an operator reads.</summary>
    internal static (string Status, int HttpStatus, object Body, IReadOnlyList<string> Reasons) HealthOf(BrokerEngine engine)
    {
        if (engine.StorageFault is { } failed)
            return ("storage-failure", 503, new { status = "storage-failure", reason = failed.Message }, [failed.Message]);
        if (!engine.IsReady) return ("starting", 503, new { status = "starting" }, []);
        // Up and readable, refusing new messages until space returns (by itself): 200, not 503, so that probes keep
        // consumers draining it; the status and reason say why sends fail.
        if (engine.DiskSpace.IsFull)
            return ("disk-full", 200, new { status = "disk-full", writable = false, reason = engine.DiskSpace.Reason, reasons = engine.Health.Reasons },
                [engine.DiskSpace.Reason, .. engine.Health.Reasons]);
        // Serving, but damage was found and contained: an operator must look (the reasons say where).
        if (engine.Health.Status == Broker.Core.Diagnostics.HealthStatus.Degraded)
            return ("degraded", 200, new { status = "degraded", reasons = engine.Health.Reasons }, engine.Health.Reasons);
        return ("ready", 200, new { status = "ready" }, []);
    }

    /// <summary>
    /// reset-offset for a lease group (gRPC consumers: the broker keeps its progress, not the client): the group is
    /// forgotten and started again on the topic at the target (earliest, latest, or the first message at or after a
    /// time) in one hold of the engine lock (<see cref="BrokerEngine.ResetGroupAsync"/>), durably, as one log record, so
    /// a crash keeps either the old place or the new one, never the group forgotten. Its in-flight leases end (their acks
    /// are refused as stale; the messages come again per the new position). Refused when the group also receives from
    /// other topics, because forgetting it would drop its progress there too.
    /// </summary>
    private static async Task<IResult> ResetLeaseGroupAsync(BrokerEngine engine, string group, string topic, string? to, long? atMs,
        BrokerEngine.GroupInfo lease, BrokerEngine.GroupTopicInfo before, CancellationToken ct)
    {
        if (lease.Topics.Count > 1)
            return Results.Json(new ErrorBody($"consumer group '{group}' also receives from {string.Join(", ", lease.Topics.Where(t => t.Topic != topic).Select(t => $"'{t.Topic}'"))}; "
                + "a lease group is reset by forgetting and restarting it, which would drop its progress there too. Use a group per topic, or group delete and group start.", "Conflict"), statusCode: 409);
        var mode = atMs is not null ? GroupStartFrom.Timestamp : to == "latest" ? GroupStartFrom.Latest : GroupStartFrom.Earliest;
        var reset = await engine.ResetGroupAsync(group, topic, mode, atMs ?? 0, ct);
        if (!reset.IsOk) return ToResult(reset, new { });
        var after = engine.FindGroup(group)?.Topics.FirstOrDefault(t => t.Topic == topic);
        var queues = before.Queues.Select(q => new
        {
            queueId = q.QueueId, previous = (long?)q.ConsumedOffset,
            offset = after?.Queues.FirstOrDefault(a => a.QueueId == q.QueueId)?.ConsumedOffset ?? 0,
        }).ToList();
        return Results.Ok(new { group, topic, to = string.IsNullOrEmpty(to) ? "earliest" : to, kind = "lease", leasesDropped = before.InFlight, queues });
    }

    private static IResult Page(BrokerEngine engine, bool parked, long? after, int? limit)
    {
        if (limit is < 1 or > 1000) return Results.Json(new ErrorBody("limit must be in [1, 1000]", "BadRequest"), statusCode: 400);
        var items = engine.ListTransactions(parked, after ?? -1, limit ?? 100, out var total);
        return Results.Ok(new { total, items = items.Select(t => View(engine, t)).ToList(), next = items.Count > 0 ? items[^1].LogAddress : (long?)null });
    }

    /// <summary>A pending or parked half as the API shows it: the engine's view plus keys and tag (from the message index,
    /// for halves sent since start) and, when nobody can be asked, why it waits instead of a next check in the past.</summary>
    public sealed record TransactionView(string TransactionId, string MessageId, string Topic, string ProducerGroup, string? OriginClientId,
        DateTimeOffset StoredAt, int Checks, DateTimeOffset? NextCheckAt, bool Parked, DateTimeOffset? ParkedAt, long LogAddress,
        IReadOnlyList<string>? Keys, string? Tag, string? WaitingFor)
    {
        /// <summary>When the last check-back was sent, and what the producer last answered without deciding.</summary>
        public DateTimeOffset? LastCheckAt { get; init; }
        public string? LastAnswer { get; init; }
        public DateTimeOffset? LastAnswerAt { get; init; }
    }

    internal static TransactionView View(BrokerEngine engine, BrokerEngine.PendingTransaction t)
    {
        var indexed = engine.MessageIndex.Find(t.MessageId);
        string? waiting = !t.Parked && engine.Producers.CountLive(t.ProducerGroup) == 0
            ? $"no producer of group '{t.ProducerGroup}' is connected; the check is sent when one connects" : null;
        return new TransactionView(t.TransactionId, t.MessageId, t.Topic, t.ProducerGroup, t.OriginClientId, t.StoredAt, t.Checks,
            waiting is null ? t.NextCheckAt : null, t.Parked, t.ParkedAt, t.LogAddress, indexed?.Keys, indexed?.Tag, waiting)
        {
            LastCheckAt = t.LastCheckAt, LastAnswer = t.LastAnswer, LastAnswerAt = t.LastAnswerAt,
        };
    }

    private static async Task<IResult> Decide(BrokerEngine engine, string id, TransactionResolution resolution, CancellationToken ct)
    {
        var result = await engine.EndTransactionAsync(id, null, resolution, DecisionSource.Operator, ct);
        return ToResult(result.Error, new { transactionId = id, outcome = result.Outcome.ToString(), duplicate = result.WasDuplicate });
    }

    private static IResult ToResult(BrokerError error, object ok) => error.Status switch
    {
        BrokerStatus.Ok => Results.Ok(ok),
        BrokerStatus.TransactionNotFound => NotFound(error.Message),
        BrokerStatus.TransactionConflict => Results.Json(new ErrorBody(error.Message, error.Status.ToString()), statusCode: 409),
        _ => Results.Json(new ErrorBody(error.Message, error.Status.ToString()), statusCode: 400),
    };

    private static IResult NotFound(string message) => Results.Json(new ErrorBody(message, "NotFound"), statusCode: 404);
}
