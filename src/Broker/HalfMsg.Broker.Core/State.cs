using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core;

// In-memory indexes rebuilt from the log on start. All of them are guarded by BrokerEngine's lock.

/// <summary>One entry of a topic queue: where the body lives and when the entry became durable (visible).</summary>
internal struct QueueEntry
{
    /// <summary>Address of the record holding the body (a MessageStored or a HalfStored record).</summary>
    public long BodyAddress;
    /// <summary>Address of the record that put the entry into the queue; visible once the log is durable past it.</summary>
    public long VisibleAt;
    public string? Tag;
    public string? MessageGroup;
}

internal sealed class QueueState
{
    public long BaseOffset;
    public readonly List<QueueEntry> Entries = new();
    public long NextOffset => BaseOffset + Entries.Count;

    public bool TryGet(long offset, out QueueEntry entry)
    {
        long i = offset - BaseOffset;
        if (i < 0 || i >= Entries.Count) { entry = default; return false; }
        entry = Entries[(int)i];
        return true;
    }

    public void Set(long offset, QueueEntry entry)
    {
        long i = offset - BaseOffset;
        if (i == Entries.Count) Entries.Add(entry);
        else if (i >= 0 && i < Entries.Count) Entries[(int)i] = entry;
        else if (Entries.Count == 0 && i > 0) { BaseOffset = offset; Entries.Add(entry); }
        else throw new InvalidDataException($"queue offset {offset} is not next to [{BaseOffset}, {NextOffset})");
    }
}

internal sealed class TopicState(string name, int queueCount)
{
    public readonly string Name = name;
    public readonly QueueState[] Queues = Enumerable.Range(0, queueCount).Select(_ => new QueueState()).ToArray();
    public int RoundRobin;
    public readonly List<GroupTopicState> Groups = new();
    private TaskCompletionSource _signal = NewSignal();

    private static TaskCompletionSource NewSignal() => new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>
    /// Completes (and is replaced) whenever something new may be receivable on this topic. A receiver takes it BEFORE
    /// looking for messages, so a wake between its look and its wait is never lost.
    /// </summary>
    public Task Signal => Volatile.Read(ref _signal).Task;

    /// <summary>Thread-safe; called with or without the engine lock.</summary>
    public void Wake() => Interlocked.Exchange(ref _signal, NewSignal()).TrySetResult();
}

internal sealed class HalfState
{
    public required string TransactionId;
    public required string MessageId;
    public required string Topic;
    public required string ProducerGroup;
    public string? OriginClientId;
    public long Address;
    public long StoreTimestampMs;
    public long CheckImmunityMs;
    public int RequestedQueueId = -1;
    public string? Tag;
    public string? MessageGroup;
    public long DeliverAtMs;
    public int CheckCount;
    public long NextCheckAtMs;
    public bool Parked;
    public long ParkedAtMs;
    public long LastCheckAtMs;
}

internal readonly record struct DecidedTx(TransactionResolution Resolution, long RecordAddress, long AtMs);

internal sealed class DelayedEntry
{
    public long BodyAddress;
    public required string Topic;
    public int RequestedQueueId = -1;
    public long DeliverAtMs;
    public string? Tag;
    public string? MessageGroup;
}

internal sealed class InFlight
{
    public int Attempt;
    public long InvisibleUntilMs;
    public long LeaseId;
    public string? MessageGroup;
    /// <summary>True once the lease expired and the message waits in the group's redelivery queue.</summary>
    public bool Expired;
}

internal sealed class GroupQueueState
{
    /// <summary>Next offset never handed to this group.</summary>
    public long NextOffset;
    /// <summary>Every offset below this is finished (acked, dead-lettered or filtered out).</summary>
    public long DoneBelow;
    /// <summary>Finished offsets at or above <see cref="DoneBelow"/> (acks arrive out of order).</summary>
    public readonly HashSet<long> Done = new();
    public readonly Dictionary<long, InFlight> InFlight = new();

    public void MarkDone(long offset)
    {
        InFlight.Remove(offset);
        if (offset < DoneBelow) return;
        Done.Add(offset);
        while (Done.Remove(DoneBelow)) DoneBelow++;
    }
}

internal sealed class GroupTopicState(string group, TopicState topic)
{
    public readonly string Group = group;
    public readonly TopicState Topic = topic;
    public readonly GroupQueueState[] Queues = topic.Queues.Select(q => new GroupQueueState { NextOffset = q.BaseOffset, DoneBelow = q.BaseOffset }).ToArray();
    /// <summary>Expired leases waiting to be delivered again, in expiry order.</summary>
    public readonly Queue<(int Queue, long Offset)> Redeliver = new();
    /// <summary>FIFO message groups with a message in flight: their later messages wait.</summary>
    public readonly Dictionary<string, int> BusyMessageGroups = new(StringComparer.Ordinal);
    public int RoundRobin;
    public long LastSeenMs;
}
