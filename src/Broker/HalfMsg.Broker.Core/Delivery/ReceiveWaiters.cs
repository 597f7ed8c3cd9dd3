namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// The long-polling receives of one consumer group on one topic, in the order they parked. Something new for the group
/// wakes ONE of them, not all: the first to look takes up to a batch, and the others would look, find nothing and park
/// again (with 64 consumers in a group, 63 wasted wake-ups per group commit, each a thread-pool item, a hold of the
/// engine lock and a timer).
/// </summary>
/// <remarks>
/// No wake is lost, by two rules the receive follows (<see cref="BrokerEngine.ReceiveAsync"/>): it parks BEFORE it looks
/// (a wake that comes after its look finds it parked), and when it leaves holding a wake it has not looked after, or
/// after a look that stopped at a full batch, it wakes the next one. Thread-safe with a lock of its own: the commit loop
/// wakes receivers without the engine lock.
/// </remarks>
internal sealed class ReceiveWaiters
{
    private readonly LinkedList<Waiter> _parked = new();

    /// <summary>One parked receive. Its task completes when it is woken (never on a timeout or cancellation).</summary>
    public sealed class Waiter() : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        internal LinkedListNode<Waiter>? Node;
        public bool IsWoken => Task.IsCompleted;
    }

    /// <summary>Receives parked now (a hint for diagnostics and tests).</summary>
    public int Count
    {
        get { lock (_parked) return _parked.Count; }
    }

    /// <summary>Parks a receive at the end of the line.</summary>
    public Waiter Park()
    {
        var waiter = new Waiter();
        lock (_parked) waiter.Node = _parked.AddLast(waiter);
        return waiter;
    }

    /// <summary>Takes the receive out of the line. False when a wake took it out first (it holds a wake).</summary>
    public bool Leave(Waiter waiter)
    {
        lock (_parked)
        {
            if (waiter.Node is null) return false;
            _parked.Remove(waiter.Node);
            waiter.Node = null;
            return true;
        }
    }

    /// <summary>Wakes the receive that parked first, if any.</summary>
    public void WakeOne()
    {
        Waiter waiter;
        lock (_parked)
        {
            var first = _parked.First;
            if (first is null) return;
            _parked.RemoveFirst();
            waiter = first.Value;
            waiter.Node = null;
        }
        waiter.TrySetResult();
    }

    /// <summary>Wakes every parked receive (the topic was deleted: each must look and find it gone).</summary>
    public void WakeAll()
    {
        List<Waiter> all;
        lock (_parked)
        {
            all = new List<Waiter>(_parked);
            foreach (var w in all) w.Node = null;
            _parked.Clear();
        }
        foreach (var w in all) w.TrySetResult();
    }
}
