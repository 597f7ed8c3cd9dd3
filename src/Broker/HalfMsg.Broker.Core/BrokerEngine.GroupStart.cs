using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

/// <summary>Where a new consumer group starts on a topic.</summary>
public enum GroupStartFrom
{
    /// <summary>The oldest retained message of each queue (what a group that just receives gets).</summary>
    Earliest,
    /// <summary>Only messages that enter the queues from now on.</summary>
    Latest,
    /// <summary>The first message of each queue stored at or after a time.</summary>
    Timestamp,
}

public sealed partial class BrokerEngine
{
    /// <summary>
    /// Creates a consumer group on a topic that starts at <paramref name="from"/> (RocketMQ's
    /// CONSUME_FROM_FIRST_OFFSET / LAST_OFFSET / TIMESTAMP), durably. A group that already exists on the topic is
    /// refused (delete it first): its progress is never moved silently.
    /// </summary>
    public ValueTask<BrokerError> StartGroupAsync(string group, string topic, GroupStartFrom from, long timestampMs = 0, CancellationToken ct = default)
        => PlaceGroupAsync(group, topic, from, timestampMs, reset: false, ct);

    /// <summary>
    /// Forgets a consumer group and starts it again on <paramref name="topic"/> at <paramref name="from"/>, durably, in
    /// one hold of the engine lock: a receive of the group woken by the forgetting finds it already at its new place. As
    /// two steps (<see cref="DeleteGroupAsync"/>, then <see cref="StartGroupAsync"/>) a receive in between re-created
    /// the group at the earliest retained message, so it got everything it had acked again. The group must receive
    /// from that topic alone (forgetting it drops its progress everywhere). Its leases end: their acks are refused as
    /// stale.
    /// </summary>
    public ValueTask<BrokerError> ResetGroupAsync(string group, string topic, GroupStartFrom from, long timestampMs = 0, CancellationToken ct = default)
        => PlaceGroupAsync(group, topic, from, timestampMs, reset: true, ct);

    /// <summary>Starts the group on the topic at <paramref name="from"/>; when <paramref name="reset"/>, forgets it first
    /// in the same hold of the lock (see <see cref="ResetGroupAsync"/>).</summary>
    private async ValueTask<BrokerError> PlaceGroupAsync(string group, string topic, GroupStartFrom from, long timestampMs, bool reset, CancellationToken ct)
    {
        if (!IsValidName(group, 255) || IsSystemTopic(group))
            return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name");
        if (InternalGroupRefusal(group, reset ? "reset" : "started") is { } internalGroup) return internalGroup;
        int queues;
        TopicState searched;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t)) return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist");
            if (PlacementRefusalLocked(group, topic, reset) is { } refused) return refused;
            queues = t.Queues.Length;
            searched = t;
        }
        var starts = new long[queues];
        if (from == GroupStartFrom.Timestamp)
        {
            // Outside the lock: the search reads bodies. Messages stored in between are at or after the time anyway.
            for (int q = 0; q < queues; q++) starts[q] = await SearchOffsetAsync(topic, q, timestampMs, ct).ConfigureAwait(false) ?? 0;
        }
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t)) return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist");
            if (PlacementRefusalLocked(group, topic, reset) is { } refused) return refused;
            // Deleted and made again during the search (perhaps with fewer queues): the offsets found are the old topic's.
            // Until review on 2026-12-06 a topic made again with fewer queues threw IndexOutOfRangeException here.
            if (!ReferenceEquals(t, searched))
                return new(BrokerStatus.BadRequest, $"topic '{topic}' was deleted and created again while the group's start was being placed; try again");
            // Queues added since the first look (an operator grew the topic): they get a start too, so the record names
            // every queue. One the time search did not see holds only messages that entered since it began: all of them
            // are at or after a time already past (its front), none of them at or after a time still to come (its end).
            if (t.Queues.Length > queues)
            {
                Array.Resize(ref starts, t.Queues.Length);
                for (int q = queues; q < starts.Length; q++) starts[q] = timestampMs > NowMs ? long.MaxValue : 0;
                queues = t.Queues.Length;
            }
            for (int q = 0; q < queues; q++)
            {
                var queue = t.Queues[q];
                starts[q] = from switch
                {
                    GroupStartFrom.Earliest => queue.BaseOffset,
                    GroupStartFrom.Latest => queue.NextOffset,
                    _ => Math.Clamp(starts[q], queue.BaseOffset, queue.NextOffset),
                };
            }
            // A reset is one record (forget, then start): as two, a commit could end between them, and a crash there
            // left the group forgotten, so its next receive started it at the earliest retained message.
            if (reset) new GroupResetRecord(group, topic, NowMs, starts).Write(_writer);
            else new GroupStartedRecord(group, topic, starts).Write(_writer);
            address = AppendAndApply();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        _logger.LogInformation("Consumer group {Group} {Placed} on {Topic} from {From}", group, reset ? "reset" : "started", topic, from);
        return BrokerError.None;
    }

    /// <summary>Why the group cannot be placed now: a start needs it absent from the topic (its progress is never moved
    /// silently); a reset needs it there and nowhere else (forgetting it drops its progress everywhere).</summary>
    private BrokerError? PlacementRefusalLocked(string group, string topic, bool reset)
    {
        bool onTopic = _groups.ContainsKey((group, topic));
        if (!reset)
            return onTopic ? new(BrokerStatus.BadRequest, $"consumer group '{group}' already exists on topic '{topic}'; delete it first to start it elsewhere") : null;
        if (!onTopic)
            return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not known on topic '{topic}'");
        if (_groups.OfGroup(group).Any(g => g.Topic.Name != topic))
            return new(BrokerStatus.BadRequest, $"consumer group '{group}' also receives from other topics; a reset forgets it, which would drop its progress there too");
        return null;
    }
}
