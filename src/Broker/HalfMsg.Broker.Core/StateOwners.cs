using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Broker.Core;

/// <summary>
/// Every owner of in-memory state, in one place for the classes that work across all of them: the checkpointer
/// (captures and restores each), retention (finds live bodies in each) and recovery (clears them before trying an
/// older checkpoint). All are guarded by the engine lock.
/// </summary>
internal sealed record StateOwners(TopicQueues Topics, ConsumerGroups Groups, HalfIndex Halves, DelayIndex Delayed, PullOffsets PullOffsets, TagInterner Tags)
{
    /// <summary>The records that carry state past retention cuts (see <see cref="Retention.CarryingRecords"/>).</summary>
    public Retention.CarryingRecords Carrying { get; } = new();

    public void Clear()
    {
        Carrying.Clear();
        Topics.Clear();
        Groups.Clear();
        Halves.Clear();
        Delayed.Clear();
        PullOffsets.Clear();
    }
}
