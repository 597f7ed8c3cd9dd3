namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// The consumer groups that queue entries are reserved for (<see cref="QueueEntry.ForGroup"/>): a re-driven dead letter
/// goes back onto its topic for the group that dead-lettered it, and for no other (RocketMQ brings a failed message back
/// through the group's own retry topic, so other groups never see it again). An entry holds a small number, not the
/// name: the number fits in padding the entry already has, so entries stay 40 bytes. Numbers are this process's own;
/// the log record and the checkpoint carry the name. Grows by one per distinct group ever re-driven. Guarded by the
/// engine lock.
/// </summary>
internal sealed class GroupTargets
{
    private readonly NameNumbers _names = new(); // number 0 (""): every group

    /// <summary>The number entries reserved for <paramref name="group"/> carry (0 for null: every group).</summary>
    public int NumberOf(string? group) => group is null ? 0 : _names.NumberOf(group);

    /// <summary>The group an entry's number reserves it for, or null (every group).</summary>
    public string? NameOf(int number) => number == 0 ? null : _names.NameOf(number);

    /// <summary>True when an entry with <paramref name="number"/> may be delivered to <paramref name="group"/>.</summary>
    public bool Admits(int number, string group) => number == 0 || string.Equals(_names.NameOf(number), group, StringComparison.Ordinal);
}
