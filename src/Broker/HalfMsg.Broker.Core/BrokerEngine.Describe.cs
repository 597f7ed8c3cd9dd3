using System.Text;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>
    /// A canonical text of every durable piece of state (not counters, not round-robin cursors), for tests that prove
    /// "checkpoint + replay = live state".
    /// </summary>
    internal string DescribeState()
    {
        lock (_gate)
        {
            var sb = new StringBuilder();
            foreach (var h in _txs.All.OrderBy(h => h.TransactionId, StringComparer.Ordinal))
                sb.Append($"half {h.TransactionId} {h.MessageId} {h.Topic} {h.ProducerGroup} {h.OriginClientId} @{h.Address}/{h.Size} store={h.StoreTimestampMs} imm={h.CheckImmunityMs} q={h.RequestedQueueId} tag={h.Tag} mg={h.MessageGroup} at={h.DeliverAtMs} checks={h.CheckCount} next={h.NextCheckAtMs} parked={h.Parked}/{h.ParkedAtMs}\n");
            // The indexes the admin API's pages and counts read (HalfIndex.Page), so a recovery that builds them wrong shows.
            sb.Append($"halves parked {_txs.ParkedCount} of {_txs.Count}; first pending {string.Join(",", _txs.Page(false, -1, 3).Select(h => h.TransactionId))}; first parked {string.Join(",", _txs.Page(true, -1, 3).Select(h => h.TransactionId))}\n");
            foreach (var d in _delayed.All.OrderBy(d => d.BodyAddress))
                sb.Append($"delayed @{d.BodyAddress}/{d.Size} {d.Topic} q={d.RequestedQueueId} at={d.DeliverAtMs} tag={d.Tag} mg={d.MessageGroup} sent@{d.SentAt}\n");
            foreach (var t in _topics.Values.OrderBy(t => t.Name, StringComparer.Ordinal))
            {
                for (int q = 0; q < t.Queues.Length; q++)
                {
                    var queue = t.Queues[q];
                    sb.Append($"queue {t.Name}/{q} base={queue.BaseOffset} next={queue.NextOffset}:");
                    long offset = queue.BaseOffset;
                    foreach (var e in queue.Entries.Items())
                    {
                        sb.Append($" {e.BodyAddress}/{e.VisibleAt}/{e.Size}/{e.Tag}/{e.MessageGroup}");
                        if (e.ForGroup != 0) sb.Append($"/for={_topics.Targets.NameOf(e.ForGroup)}");
                        if (queue.SourceOf(offset++) is { } source) sb.Append($"/from={source}");
                    }
                    sb.Append('\n');
                }
            }
            foreach (var (key, resolution, address, at, ns) in _txs.Decided.Entries().OrderBy(e => e.Key))
                sb.Append($"decided {key:X} {resolution} @{address} {at} ns={ns ?? "?"}\n");
            foreach (var g in _groups.Values.OrderBy(g => g.Group, StringComparer.Ordinal).ThenBy(g => g.Topic.Name, StringComparer.Ordinal))
            {
                for (int q = 0; q < g.Queues.Length; q++)
                {
                    var gq = g.Queues[q];
                    sb.Append($"group {g.Group}/{g.Topic.Name}/{q} next={gq.NextOffset} doneBelow={gq.DoneBelow} done=[{string.Join(",", gq.Done.Select(r => $"{r.Start}-{r.End}"))}] inflight=[");
                    foreach (var (off, f) in gq.InFlight.OrderBy(p => p.Key)) sb.Append($" {off}:{f.Attempt}/{f.InvisibleUntilMs}/{f.LeaseId:X}/{f.MessageGroup}");
                    sb.Append("]\n");
                    if (gq.PassedOver.Count > 0) sb.Append($"passed-over {g.Group}/{g.Topic.Name}/{q} [{string.Join(",", gq.PassedOver)}]\n");
                }
            }
            foreach (var (group, order) in _groups.Orders.OrderBy(p => p.Key, StringComparer.Ordinal))
                sb.Append($"order {group}={order}\n");
            foreach (var ((group, topic, queue), offset) in _consumerOffsets.All.OrderBy(p => p.Key.Group, StringComparer.Ordinal).ThenBy(p => p.Key.Topic, StringComparer.Ordinal).ThenBy(p => p.Key.Queue))
                sb.Append($"offset {group}/{topic}/{queue}={offset}\n");
            return sb.ToString();
        }
    }
}
