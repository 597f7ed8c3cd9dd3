namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>Group commits (write + fsync) of the log so far, and the time spent in them.</summary>
    public (long Commits, TimeSpan Time) LogCommitTotals => (_log.Commits, _log.CommitTime);

    /// <summary>See <see cref="Storage.RecordLog.CommitLoopIdle"/>.</summary>
    public (TimeSpan Idle, long KickedOnReturn) LogCommitLoopIdle => _log.CommitLoopIdle;

    /// <summary>
    /// The size of every in-memory index, for the soak test and operators (<c>/api/stats</c> <c>indexes</c>): at
    /// constant work none may grow with time. Queue entries are bounded by retention, decisions by
    /// <see cref="CoreOptions.MaxRememberedDecisions"/> and <see cref="CoreOptions.DecisionRetention"/>, the message
    /// index by its capacity; the rest by what is pending or in flight.
    /// </summary>
    public IReadOnlyDictionary<string, long> IndexSizes()
    {
        var sizes = new Dictionary<string, long>(StringComparer.Ordinal);
        lock (_gate)
        {
            long entries = 0, inFlight = 0, doneRuns = 0, redeliver = 0, busyGroups = 0, passedOver = 0;
            foreach (var topic in _topics.Values)
                foreach (var q in topic.Queues) entries += q.Entries.Count;
            foreach (var group in _groups.Values)
            {
                redeliver += group.Redeliver.Count;
                busyGroups += group.BusyMessageGroups.Count;
                foreach (var gq in group.Queues) { inFlight += gq.InFlight.Count; doneRuns += gq.Done.Count; passedOver += gq.PassedOver.Count; }
            }
            sizes["topics"] = _topics.Count;
            sizes["groups"] = _groups.Count;
            sizes["queue_entries"] = entries;
            sizes["in_flight"] = inFlight;
            sizes["done_runs"] = doneRuns;
            sizes["redeliver"] = redeliver;
            sizes["busy_message_groups"] = busyGroups;
            // Messages of busy FIFO message groups passed over, waiting (up to --max-passed-over-per-queue per queue and group).
            sizes["passed_over"] = passedOver;
            sizes["halves_pending"] = _txs.Count;
            sizes["halves_due_heap"] = _txs.DueCount;
            sizes["decisions_remembered"] = _txs.Decided.Count;
            sizes["delayed"] = _delayed.Count;
            sizes["lease_due_heap"] = _groups.LeaseDueCount;
            sizes["pull_offsets"] = _consumerOffsets.Count;
            sizes["tags_interned"] = _tags.Count;
            sizes["client_ids_interned"] = _tags.ClientIdCount;
            sizes["pending_visible"] = _topics.WaitingForDurability;
        }
        sizes["message_index"] = MessageIndex.Count;
        sizes["producers"] = Producers.ChannelCount;
        return sizes;
    }
}
