namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// Wakes the long polls waiting for room on one byte budget (a connection's in-flight bytes, or the broker's pulled
/// bytes) when some of it is released. The task is made only when a pull waits (<see cref="Next"/>): a budget nobody
/// waits on costs one read per release, and a pull that does not wait registers nothing.
/// </summary>
internal sealed class RoomSignal
{
    private TaskCompletionSource? _released;

    /// <summary>Completes at the next release after this call. Take it before checking for room, so that a release
    /// between the check and the wait is not missed.</summary>
    public Task Next()
    {
        var current = Volatile.Read(ref _released);
        if (current is not null) return current.Task;
        var made = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        return (Interlocked.CompareExchange(ref _released, made, null) ?? made).Task;
    }

    /// <summary>The task waiters wait on, if one was made (tests: nothing is made or left registered when no pull waits).</summary>
    internal Task? PendingForTests => Volatile.Read(ref _released)?.Task;

    /// <summary>Some bytes were released: wakes the waiters, if any.</summary>
    public void Pulse()
    {
        if (Volatile.Read(ref _released) is not null) Interlocked.Exchange(ref _released, null)?.TrySetResult();
    }
}
