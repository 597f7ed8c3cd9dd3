using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Broker.Core;

/// <summary>What a recall of a delay message found (<see cref="BrokerEngine.RecallDelayedAsync"/>).</summary>
public enum RecallOutcome
{
    /// <summary>It was waiting for its delivery time: it is recalled, durably, and will never be delivered.</summary>
    Recalled,
    /// <summary>Nothing waits under that name though its delivery time lies ahead: already recalled, its topic deleted
    /// and created again, or never sent here. Nothing changed.</summary>
    NotWaiting,
    /// <summary>Nothing waits under that name and its delivery time has passed: it was delivered (put on its queue)
    /// already, or never sent here. Nothing changed.</summary>
    Delivered,
}

public sealed partial class BrokerEngine
{
    /// <summary>
    /// Recalls the delay message of <paramref name="topic"/> sent as the record at <paramref name="sentAt"/> (its
    /// <see cref="Model.SendResult.LogAddress"/>) with delivery time <paramref name="deliverAtMs"/>, as RocketMQ 5.3's
    /// RecallMessage does: a <see cref="DelayRecalledRecord"/> takes it out of the delay index, so it is never put on
    /// its queue, and replay (after a restart, a kill -9, over any checkpoint) takes it out again. Completes once that
    /// record is durable. The address names one message for good: no other record is ever written there, and
    /// retention's moves are followed (<see cref="DelayedEntry.SentAt"/>). A committed delayed transaction message
    /// cannot be recalled (none is named by the address it was sent at).
    /// </summary>
    public async ValueTask<(BrokerError Error, RecallOutcome Outcome)> RecallDelayedAsync(string topic, long sentAt, long deliverAtMs, string messageId,
        CancellationToken ct = default)
    {
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        RecallOutcome outcome;
        lock (_gate)
        {
            if (!_topics.TryGetValue(topic, out _)) return (new(BrokerStatus.TopicNotFound, $"topic '{topic}' does not exist"), default);
            // Under the lock the sweeper takes to release: a message is either still waiting here, and recalled before its
            // release, or released already, and not found.
            if (_delayed.TryGetSentAt(sentAt, out var entry) && entry.Topic == topic && entry.DeliverAtMs == deliverAtMs)
            {
                long bodyAddress = entry.BodyAddress, now = NowMs;
                new DelayRecalledRecord(sentAt, topic, messageId, now).Write(_writer);
                address = AppendAndApply();
                MessageIndex.OnRecalled(messageId, topic, bodyAddress, now); // MessageIndex hook: no longer waits for its time
                Metrics.RecalledByTopic.AddOrUpdate(topic, 1, (_, n) => n + 1); // here, not in replay: counted since start, as every counter
                outcome = RecallOutcome.Recalled;
            }
            else
            {
                // A recall answered before its record was durable must not be reported done by a second one that finds
                // nothing: the answer waits for everything appended so far (the first recall's record included).
                address = _log.TailAddress - 1;
                outcome = deliverAtMs <= NowMs ? RecallOutcome.Delivered : RecallOutcome.NotWaiting;
            }
        }
        if (address >= 0) await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        return (BrokerError.None, outcome);
    }
}
