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
    public async ValueTask<BrokerError> StartGroupAsync(string group, string topic, GroupStartFrom from, long timestampMs = 0, CancellationToken ct = default)
    {
        if (!IsValidName(group, 255) || IsSystemTopic(group))
            return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name");
        int queues;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out var t)) return new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist");
            if (_groups.ContainsKey((group, topic))) return new(BrokerStatus.BadRequest, $"consumer group '{group}' already exists on topic '{topic}'; delete it first to start it elsewhere");
            queues = t.Queues.Length;
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
            if (_groups.ContainsKey((group, topic))) return new(BrokerStatus.BadRequest, $"consumer group '{group}' already exists on topic '{topic}'");
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
            new GroupStartedRecord(group, topic, starts).Write(_writer);
            address = AppendAndApply();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        _logger.LogInformation("Consumer group {Group} started on {Topic} from {From}", group, topic, from);
        return BrokerError.None;
    }

}
