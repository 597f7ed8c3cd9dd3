using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core;

public sealed partial class BrokerEngine
{
    /// <summary>
    /// Sets a consumer group's order mode (Apache's consumeMessageOrderly): <see cref="GroupOrder.Orderly"/> holds each
    /// queue for the group while a message of it is in flight, <see cref="GroupOrder.Concurrent"/> holds nothing, and
    /// <see cref="GroupOrder.NotConfigured"/> gives the group back to <see cref="CoreOptions.DefaultGroupOrder"/>. The
    /// group need not exist yet (operators configure a group before its consumers start). Completes once durable; the
    /// group's leases in flight stay as they are.
    /// </summary>
    public async ValueTask<BrokerError> SetGroupOrderAsync(string group, GroupOrder order, CancellationToken ct = default)
    {
        if (!IsValidName(group, 255) || IsSystemTopic(group))
            return new(BrokerStatus.IllegalConsumerGroup, $"consumer group '{group}' is not a valid name");
        if (InternalGroupRefusal(group, "configured") is { } internalGroup) return internalGroup;
        if (!Enum.IsDefined(order)) return new(BrokerStatus.BadRequest, $"order mode {(byte)order} is not known");
        await _log.WaitForRoomAsync(ct).ConfigureAwait(false);
        long address;
        lock (_gate)
        {
            // The settings of groups nobody receives with yet are not counted elsewhere: bounded here, as groups are.
            if (order != GroupOrder.NotConfigured && _groups.OrderOf(group) == GroupOrder.NotConfigured && _groups.OrderCount >= _options.MaxConsumerGroups)
                return new(BrokerStatus.TooManyConsumerGroups, $"consumer group '{group}' cannot be configured: {_options.MaxConsumerGroups} groups are configured already (MaxConsumerGroups, --max-consumer-groups)");
            new GroupConfiguredRecord(group, order, NowMs).Write(_writer);
            address = AppendAndApply();
        }
        await _log.WaitDurableAsync(address, ct).ConfigureAwait(false);
        _logger.LogInformation("Consumer group {Group} order mode set to {Order}", group, order);
        return BrokerError.None;
    }

    /// <summary>The order mode set for the group (<see cref="GroupOrder.NotConfigured"/> when none was).</summary>
    public GroupOrder GroupOrderOf(string group)
    {
        lock (_gate) return _groups.OrderOf(group);
    }

    /// <summary>The groups an order mode is set for (configured before their consumers start, or with no progress left).</summary>
    public IReadOnlyList<string> ConfiguredGroups()
    {
        lock (_gate) return [.. _groups.Orders.Select(o => o.Key)];
    }

    /// <summary>Whether the group is served orderly (the gRPC settings' fifo, one assignment per queue).</summary>
    public bool IsOrderlyGroup(string group) => GroupOrderOf(group) == GroupOrder.Orderly;

    /// <summary>How a group with this configured mode is served: a group not configured follows the broker's default.</summary>
    private GroupOrder EffectiveOrder(GroupOrder configured) => configured != GroupOrder.NotConfigured ? configured
        : _options.DefaultGroupOrder == DefaultGroupOrder.Concurrent ? GroupOrder.Concurrent : GroupOrder.NotConfigured;
}
