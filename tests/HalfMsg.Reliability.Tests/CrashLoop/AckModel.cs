using System.Text;
using System.Text.RegularExpressions;

namespace HalfMsg.Reliability.Tests.CrashLoop;

/// <summary>What the load driver meant to do with one message, and what the broker acknowledged.</summary>
internal enum Intent
{
    /// <summary>A plain send.</summary>
    Send,
    /// <summary>A half followed by a commit (or, when the commit is skipped, a check-back answered "commit").</summary>
    Commit,
    /// <summary>A half followed by a rollback (or a check-back answered "rollback").</summary>
    Rollback,
    /// <summary>A half nobody decides: every check-back is answered "unknown", so it stays pending.</summary>
    Leave,
}

internal sealed class ModelEntry(string id, Intent intent, string via)
{
    public string Id { get; } = id;
    public Intent Intent { get; } = intent;
    public string Via { get; } = via;
    public string? MessageId { get; set; }
    public string? TransactionId { get; set; }
    public int Epoch { get; set; }
    /// <summary>The broker acknowledged the send (plain) or the half send.</summary>
    public bool Stored { get; set; }
    /// <summary>When the broker acknowledged the commit or rollback (null: never acknowledged).</summary>
    public DateTime? DecisionAckedAt { get; set; }
    public int DecisionAckedEpoch { get; set; } = -1;
    /// <summary>Highest check count seen on the admin API at a moment followed by an acknowledged write (so durable).</summary>
    public int DurableChecks { get; set; }
    public override string ToString() => $"{Id} ({Intent} via {Via}, msgId {MessageId}, txId {TransactionId}, epoch {Epoch})";
}

/// <summary>
/// The model of what the broker acknowledged, shared by the load driver's tasks, and the invariants checked against it as
/// events happen. Every violation names the message, the group and the invariant, so a failure says exactly what broke.
/// </summary>
internal sealed partial class AckModel(int seed)
{
    public const string BodyMarker = "mdl:";
    private readonly object _gate = new();
    private readonly Dictionary<string, ModelEntry> _entries = new();
    private readonly Dictionary<string, ModelEntry> _byMessageOrTx = new();
    // group -> id -> receive-start times of each delivery
    private readonly Dictionary<string, Dictionary<string, List<DateTime>>> _delivered = new();
    // group -> id -> when the ack was acknowledged
    private readonly Dictionary<string, Dictionary<string, DateTime>> _acked = new();
    private readonly Dictionary<string, int> _checksReceived = new();
    private readonly Dictionary<(string Topic, int Queue), long> _committedOffsets = new();
    private readonly List<string> _violations = new();
    private readonly Dictionary<string, (string Topic, int Queue, long Offset)> _positions = new();
    private readonly HashSet<(string Topic, int Queue, long Offset)> _damagedPositions = new();
    private readonly List<(string Id, string Text)> _ackWindowSuspects = new();
    private int _next;

    public int Seed { get; } = seed;
    public int Epoch { get; set; }
    /// <summary>Ids whose records were damaged on purpose: exempt from every invariant but "a rolled-back half is never delivered".</summary>
    public HashSet<string> Damaged { get; } = new();
    /// <summary>Damage that hit no model id (what it was), for the report.</summary>
    public List<string> DamageNotes { get; } = new();

    public string NewId(string prefix) => $"{prefix}{Interlocked.Increment(ref _next)}";

    public static string Body(string id, int padding) => BodyMarker + id + ";" + new string('x', padding);

    public static string? IdOf(ReadOnlySpan<byte> body)
    {
        string text = Encoding.UTF8.GetString(body[..Math.Min(body.Length, 64)]);
        if (!text.StartsWith(BodyMarker, StringComparison.Ordinal)) return null;
        int end = text.IndexOf(';', StringComparison.Ordinal);
        return end < 0 ? null : text[BodyMarker.Length..end];
    }

    /// <summary>Model ids named in raw record bytes (a stored body carries its id).</summary>
    public static IEnumerable<string> IdsIn(ReadOnlySpan<byte> bytes)
        => IdPattern().Matches(Encoding.Latin1.GetString(bytes)).Select(m => m.Groups[1].Value).Distinct();

    [GeneratedRegex("mdl:([a-z]+[0-9]+);")]
    private static partial Regex IdPattern();

    public ModelEntry Add(string id, Intent intent, string via)
    {
        var e = new ModelEntry(id, intent, via) { Epoch = Epoch };
        lock (_gate) _entries[id] = e;
        return e;
    }

    public void Stored(ModelEntry e, string? messageId, string? transactionId)
    {
        lock (_gate)
        {
            e.Stored = true;
            e.MessageId = messageId;
            e.TransactionId = transactionId;
            if (messageId is not null) _byMessageOrTx[messageId] = e;
            if (transactionId is not null) _byMessageOrTx[transactionId] = e;
        }
    }

    public void DecisionAcked(ModelEntry e)
    {
        lock (_gate)
        {
            e.DecisionAckedAt = DateTime.UtcNow;
            e.DecisionAckedEpoch = Epoch;
        }
    }

    public ModelEntry? Find(string id)
    {
        lock (_gate) return _entries.GetValueOrDefault(id);
    }

    public ModelEntry? FindByMessageOrTx(string? key)
    {
        if (key is null) return null;
        lock (_gate) return _byMessageOrTx.GetValueOrDefault(key);
    }

    public void Violation(string text)
    {
        lock (_gate)
        {
            if (_violations.Count < 200) _violations.Add($"[epoch {Epoch}] {text}");
        }
    }

    public IReadOnlyList<string> Violations
    {
        get { lock (_gate) return _violations.ToList(); }
    }

    public List<ModelEntry> Entries()
    {
        lock (_gate) return _entries.Values.ToList();
    }

    /// <summary>
    /// The producer's answer to a check-back, from the model. Also checks "a decided half is never checked again": a
    /// check that arrives in a later epoch than the acknowledged decision, or more than <paramref name="grace"/> after it
    /// in the same epoch (a check already on the wire when the decision landed), is a violation.
    /// </summary>
    public ProducerClient.TransactionResolution AnswerCheck(string? id, string via, TimeSpan grace)
    {
        if (id is null)
        {
            Violation($"check-back via {via} for a message whose body names no model id");
            return ProducerClient.TransactionResolution.Unknown;
        }
        ModelEntry? e;
        lock (_gate)
        {
            e = _entries.GetValueOrDefault(id);
            _checksReceived[id] = _checksReceived.GetValueOrDefault(id) + 1;
        }
        if (e is null)
        {
            Violation($"check-back via {via} for {id}, which the model never sent");
            return ProducerClient.TransactionResolution.Unknown;
        }
        if (e.Intent == Intent.Send) Violation($"invariant 'only halves are checked': plain message {e} was checked back");
        if (e.DecisionAckedAt is { } at && !Damaged.Contains(id)
            && (e.DecisionAckedEpoch < Epoch || DateTime.UtcNow - at > grace))
        {
            Violation($"invariant 'decided halves are never checked again': {e} was checked via {via} at {DateTime.UtcNow:HH:mm:ss.fff}; its {e.Intent} was acknowledged at {at:HH:mm:ss.fff} in epoch {e.DecisionAckedEpoch}");
        }
        return e.Intent switch
        {
            Intent.Commit => ProducerClient.TransactionResolution.Commit,
            Intent.Rollback => ProducerClient.TransactionResolution.Rollback,
            _ => ProducerClient.TransactionResolution.Unknown,
        };
    }

    /// <summary>
    /// A delivery to <paramref name="group"/> of the message whose body names <paramref name="id"/>, received by a call
    /// that started at <paramref name="receiveStarted"/>.
    /// </summary>
    public void Delivered(string group, string? id, DateTime receiveStarted, string detail)
    {
        if (id is null)
        {
            Violation($"group {group} received a message whose body names no model id ({detail})");
            return;
        }
        ModelEntry? e;
        DateTime? ackedAt;
        lock (_gate)
        {
            e = _entries.GetValueOrDefault(id);
            if (!_delivered.TryGetValue(group, out var g)) _delivered[group] = g = new();
            if (!g.TryGetValue(id, out var list)) g[id] = list = new();
            list.Add(receiveStarted);
            ackedAt = _acked.TryGetValue(group, out var a) && a.TryGetValue(id, out var t) ? t : null;
        }
        if (e is null)
        {
            Violation($"group {group} received {id} ({detail}), which the model never sent");
            return;
        }
        if (e.Intent == Intent.Rollback)
            Violation($"invariant 'no rolled-back half is ever delivered': {e} was delivered to group {group} ({detail}); rollback acknowledged: {e.DecisionAckedAt?.ToString("HH:mm:ss.fff") ?? "no (check-back answers rollback)"}");
        else if (e.Intent == Intent.Leave && !Damaged.Contains(id))
            Violation($"invariant 'no pending half is ever delivered': {e} was delivered to group {group} ({detail}) though every check-back answered unknown");
        // Judged at the end of the run (ResolveDeferred): whether damage hit this message's ack can depend on its queue
        // position, which the pull consumer may learn only later.
        if (ackedAt is { } acked && receiveStarted > acked && !Damaged.Contains(id))
            lock (_gate) _ackWindowSuspects.Add((id, $"invariant 'an acknowledged ack ends delivery (at-least-once window)': {e} was delivered to group {group} again ({detail}) by a receive that started at {receiveStarted:HH:mm:ss.fff}, after its ack was acknowledged at {acked:HH:mm:ss.fff}"));
    }

    /// <summary>
    /// Queue positions named by damaged records (an ack, a delivery) that neither the log nor the pull consumer could tie
    /// to a model id when the damage was done: a retention cut can take the record that put a message at its position.
    /// </summary>
    public void DamagePositions(IEnumerable<(string Topic, int Queue, long Offset)> positions)
    {
        lock (_gate) _damagedPositions.UnionWith(positions);
    }

    /// <summary>The model id the pull consumer saw at a queue position, if any.</summary>
    public string? IdAt((string Topic, int Queue, long Offset) position)
    {
        lock (_gate) return _positions.FirstOrDefault(kv => kv.Value == position).Key;
    }

    /// <summary>Turns the deferred suspects into violations, unless damage hit the message's id or its position.</summary>
    public void ResolveDeferred()
    {
        List<(string Id, string Text)> suspects;
        lock (_gate)
        {
            suspects = _ackWindowSuspects.Where(s => !Damaged.Contains(s.Id)
                && !(_positions.TryGetValue(s.Id, out var p) && _damagedPositions.Contains(p))).ToList();
            _ackWindowSuspects.Clear();
        }
        foreach (var (_, text) in suspects) Violation(text);
    }

    /// <summary>Where a message sits in its queue (the pull consumer sees every queue offset).</summary>
    public void Position(string? id, string topic, int queue, long offset)
    {
        if (id is null) return;
        lock (_gate) _positions.TryAdd(id, (topic, queue, offset));
    }

    public (string Topic, int Queue, long Offset)? PositionOf(string id)
    {
        lock (_gate) return _positions.TryGetValue(id, out var p) ? p : null;
    }

    public void Acked(string group, string id)
    {
        lock (_gate)
        {
            if (!_acked.TryGetValue(group, out var a)) _acked[group] = a = new();
            a.TryAdd(id, DateTime.UtcNow);
        }
    }

    public bool WasDelivered(string group, string id)
    {
        lock (_gate) return _delivered.TryGetValue(group, out var g) && g.ContainsKey(id);
    }

    public int Deliveries(string group)
    {
        lock (_gate) return _delivered.TryGetValue(group, out var g) ? g.Values.Sum(l => l.Count) : 0;
    }

    public int ChecksReceived()
    {
        lock (_gate) return _checksReceived.Values.Sum();
    }

    /// <summary>A committed offset the broker acknowledged (never lowered in the model).</summary>
    public void OffsetCommitted(string topic, int queue, long offset)
    {
        lock (_gate) _committedOffsets[(topic, queue)] = Math.Max(_committedOffsets.GetValueOrDefault((topic, queue)), offset);
    }

    /// <summary>Damage hit a record of this queue's committed offset: what the model knew of it is no longer promised.</summary>
    public void ForgetOffset(string topic, int queue)
    {
        lock (_gate) _committedOffsets.Remove((topic, queue));
    }

    public long CommittedOffset(string topic, int queue)
    {
        lock (_gate) return _committedOffsets.GetValueOrDefault((topic, queue));
    }

    /// <summary>What every group must eventually receive: acknowledged sends and acknowledged commits.</summary>
    public List<ModelEntry> MustBeDelivered()
        => Entries().Where(e => !Damaged.Contains(e.Id)
            && ((e.Intent == Intent.Send && e.Stored) || (e.Intent == Intent.Commit && e.Stored && e.DecisionAckedAt is not null))).ToList();
}
