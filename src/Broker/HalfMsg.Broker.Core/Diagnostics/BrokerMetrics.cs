namespace HalfMsg.Broker.Core;

/// <summary>Counters for the admin API and benchmarks. Written under the engine lock; read racily (monitoring only).</summary>
public sealed class BrokerMetrics
{
    public long RecordsAppended;
    /// <summary>Sends refused as busy by the front ends' load shedding (gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY).</summary>
    public long RefusedBusy;
    public long MessagesStored;
    public long HalvesStored;
    public long Commits;
    public long Rollbacks;
    public long DuplicateDecisions;
    public long ChecksSent;
    public long ChecksWithoutProducer;
    /// <summary>Check-backs a producer's channel threw on while queueing them (a connection torn down meanwhile): the
    /// check went to another instance of the group, or the half waited for a later pass.</summary>
    public long CheckSendFailures;
    /// <summary>Check-backs counted in <see cref="ChecksSent"/> that a producer's channel gave back unwritten (a Telemetry
    /// stream ended with them still queued): the half's attempt was not spent, and the check went to another instance.</summary>
    public long ChecksReturned;
    public long Parked;
    public long Delivered;
    public long Redelivered;
    /// <summary>Push consumers' leases extended at their expiry (auto_renew).</summary>
    public long LeasesRenewed;
    public long LeasesReleased;
    /// <summary>Looks of receives for messages (each one a hold of the engine lock): one when a receive arrives, then one
    /// per wake-up while it long-polls.</summary>
    public long ReceiveLooks;
    /// <summary>Receives and offset commits refused because they would start one more consumer group than
    /// <see cref="CoreOptions.MaxConsumerGroups"/> allows.</summary>
    public long GroupsRefused;
    public long Acked;
    public long DeadLettered;
    /// <summary>Delay messages recalled by their producers before their delivery time (RecallMessage over gRPC,
    /// RECALL_MESSAGE over Remoting), per topic; a repeated recall of one message is counted once. Concurrent: the
    /// meter enumerates it while recalls add to it. A deleted topic's tally goes with it.</summary>
    public readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> RecalledByTopic = new(StringComparer.Ordinal);
    public long ReplayedRecords;
    public long RecoveryMilliseconds;
    public long CorruptRecordsSkipped;
    /// <summary>The longest the last checkpoint held the engine lock at a time (copying or serializing part of the state),
    /// in microseconds; waiting to take it not included.</summary>
    public long LastCheckpointPauseMicros;
    /// <summary>The longest the last checkpoint waited to take the engine lock (behind the traffic), in microseconds.</summary>
    public long LastCheckpointLockWaitMicros;
    /// <summary>The last checkpoint's longest hold of the engine lock for each part of the state it copies
    /// (<see cref="CheckpointHoldParts"/>), in microseconds; null before the first.</summary>
    public long[]? LastCheckpointHoldMicrosByPart;
    /// <summary>Of the last checkpoint's longest hold, the time the collector stopped the process, in microseconds.</summary>
    public long LastCheckpointHoldGcPauseMicros;
    /// <summary>The parts of the state a checkpoint copies, in its order (pending halves, delayed messages, topics and
    /// their queues, decided ids, consumer groups and offsets).</summary>
    public static readonly string[] CheckpointHoldParts = ["halves", "delayed", "queues", "decided", "groups"];
    /// <summary>The most the last checkpoint serialized in one hold of the engine lock, in bytes (bounded by a chunk, not by the state).</summary>
    public long LastCheckpointLargestHoldBytes;
    /// <summary>The most items the last checkpoint copied from an owner's list in one hold of the engine lock.</summary>
    public long LastCheckpointLargestSnapshotItems;
    /// <summary>The size of the last checkpoint file, in bytes.</summary>
    public long LastCheckpointBytes;
    /// <summary>How long the last retention cut held the engine lock (truncating the log and expiring every queue's prefix),
    /// in microseconds.</summary>
    public long LastRetentionCutPauseMicros;
    /// <summary>Of that hold: the last search for live bodies below the cut (none may be left), each queue's expiry, and
    /// the garbage collector's pauses that fell within it, in microseconds (the rest: the log's truncation and the cut's
    /// record).</summary>
    public long LastRetentionCutSearchMicros;
    public long LastRetentionCutExpiryMicros;
    public long LastRetentionCutGcPauseMicros;
    /// <summary>Each checkpoint's longest hold of the engine lock (what it stalled transactions for at most), since start.</summary>
    public readonly Diagnostics.MicrosHistogram CheckpointLockHolds = new();
    /// <summary>Each retention cut's hold of the engine lock, since start.</summary>
    public readonly Diagnostics.MicrosHistogram RetentionCutLockHolds = new();
    /// <summary>Checkpoints written whole, and as deltas on the previous one, since start.</summary>
    public long CheckpointsWhole;
    public long CheckpointsDelta;
    public long RetentionCuts;
    public long RecordsRelocated;
    /// <summary>Queue entries that fell behind the retention limits (each counted once, whatever the groups).</summary>
    public long MessagesExpired;
}
