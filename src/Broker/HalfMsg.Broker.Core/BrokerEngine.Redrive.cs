using HalfMsg.Broker.Core.Model;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>
/// Operator tools built only on the engine's own operations (issue 12): re-driving a group's dead letters back to their
/// original topics, and reading one stored message for the message page.
/// </summary>
public sealed partial class BrokerEngine
{
    /// <summary>The consumer-group prefix of the internal cursors a re-drive reads a dead-letter topic with.</summary>
    public const string RedrivePrefix = "%REDRIVE%";

    /// <summary>What one re-drive call did. <see cref="Error"/> is set when it stopped early (the counts stay true).</summary>
    public sealed record RedriveResult(BrokerError Error, string DeadLetterTopic, int Redriven, int Skipped, IReadOnlyList<string> MessageIds);

    /// <summary>
    /// Moves up to <paramref name="max"/> messages of <c>%DLQ%&lt;group&gt;</c> back to their original topics, where the
    /// group receives them again as new messages (same id, keys, tag, properties, body). The dead-letter topic is read by
    /// an internal consumer group (<c>%REDRIVE%&lt;group&gt;</c>, or <c>%REDRIVE%&lt;group&gt;|&lt;topic&gt;</c> when only
    /// messages from <paramref name="originalTopic"/> are wanted); each message is re-sent durably and then acknowledged
    /// there, so a crash between the two re-drives it again (at least once), never loses it. With a topic filter, dead
    /// letters from other topics are passed over by that filter's cursor only (counted as skipped) and stay for others.
    /// </summary>
    public async ValueTask<RedriveResult> RedriveDeadLettersAsync(string group, string? originalTopic, int max,
        IProgress<int>? progress = null, CancellationToken ct = default)
    {
        string dlq = DeadLetterPrefix + group;
        var moved = new List<string>();
        int skipped = 0;
        RedriveResult Done(BrokerError error) => new(error, dlq, moved.Count, skipped, moved);

        if (!IsValidName(group, 255) || IsSystemTopic(group))
            return Done(new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name"));
        if (max < 1) return Done(new(BrokerStatus.BadRequest, "max must be at least 1"));
        lock (_gate)
        {
            // Checked first: a receive on a missing system topic would create it.
            if (!_topics.ContainsKey(dlq)) return Done(new(BrokerStatus.TopicNotFound, $"consumer group '{group}' has no dead letters ({dlq} does not exist)"));
        }
        string cursor = RedrivePrefix + group + (originalTopic is null ? "" : "|" + originalTopic);
        if (!IsValidName(cursor, 255)) return Done(new(BrokerStatus.BadRequest, $"group and topic names are too long for a re-drive cursor ('{cursor}')"));

        while (moved.Count < max)
        {
            var batch = await ReceiveAsync(new ReceiveRequest
            {
                ConsumerGroup = cursor, Topic = dlq, BatchSize = Math.Min(32, max - moved.Count), InvisibleDuration = TimeSpan.FromMinutes(1),
            }, ct).ConfigureAwait(false);
            if (batch.Error.Status == BrokerStatus.MessageNotFound || batch.Messages.Count == 0) break;
            if (!batch.IsOk) return Done(batch.Error);
            foreach (var d in batch.Messages)
            {
                var m = d.Message;
                if (m.OriginalTopic is not { } target || (originalTopic is not null && target != originalTopic))
                {
                    var passed = await AckAsync(cursor, dlq, d.ReceiptHandle, ct).ConfigureAwait(false);
                    if (!passed.IsOk) return Done(passed);
                    skipped++;
                    continue;
                }
                var sent = await SendAsync(new MessageDraft
                {
                    Topic = target, MessageId = m.MessageId, Tag = m.Tag, Keys = m.Keys, Properties = m.Properties, Body = m.Body,
                    BornTimestampMs = m.BornTimestampMs, BornHost = m.BornHost, MessageGroup = m.MessageGroup,
                }, ct).ConfigureAwait(false);
                if (!sent.IsOk)
                {
                    // Not acknowledged: the dead letter stays and the next re-drive tries it again once its lease ends.
                    return Done(new(sent.Error.Status, $"message '{m.MessageId}' could not be re-sent to '{target}': {sent.Error.Message}"));
                }
                var acked = await AckAsync(cursor, dlq, d.ReceiptHandle, ct).ConfigureAwait(false);
                if (!acked.IsOk) return Done(acked);
                moved.Add(m.MessageId);
                MessageIndex.OnRedriven(m.MessageId, group, target, NowMs); // MessageIndex hook (issue 12)
                progress?.Report(moved.Count);
            }
        }
        if (moved.Count > 0)
            _logger.LogInformation("Re-drove {Count} dead letters of group {Group} from {Dlq}", moved.Count, group, dlq);
        return Done(BrokerError.None);
    }

    /// <summary>Reads the message stored at a queue position; null when the position is empty, a hole, or cut by retention.</summary>
    public async ValueTask<StoredMessage?> ReadMessageAsync(string topic, int queueId, long offset, CancellationToken ct = default)
    {
        long address;
        lock (_gate)
        {
            address = _topics.TryGetValue(topic, out var t) && queueId >= 0 && queueId < t.Queues.Length
                && t.Queues[queueId].TryGet(offset, out var e) && !e.IsHole ? e.BodyAddress : -1;
        }
        if (address < 0) return null;
        try
        {
            return await ReadStoredMessageAsync(address, topic, queueId, offset, ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ArgumentOutOfRangeException or InvalidOperationException)
        {
            return null; // cut between the look-up and the read
        }
    }

    /// <summary>Reads the stored half of a pending or parked transaction; null when it is no longer pending.</summary>
    public async ValueTask<StoredMessage?> ReadPendingHalfAsync(string transactionId, CancellationToken ct = default)
    {
        long address;
        string topic;
        lock (_gate)
        {
            if (!_txs.TryGet(transactionId, out var half)) return null;
            address = half.Address;
            topic = half.Topic;
        }
        return await ReadStoredMessageAsync(address, topic, -1, -1, ct).ConfigureAwait(false);
    }
}
