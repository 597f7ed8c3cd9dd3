using HalfMsg.Broker.Core;

namespace HalfMsg.Broker.FrontEnds;

/// <summary>
/// Load shedding for sends, shared by both front ends: at most <c>maxConcurrent</c> sends are in the engine at once;
/// a send that cannot get a slot within <c>maxQueueWait</c> (or finds <c>maxWaiting</c> others already waiting) is
/// answered "busy" at once — gRPC TOO_MANY_REQUESTS, Remoting SYSTEM_BUSY — which clients back off from and retry.
/// </summary>
/// <remarks>
/// This is RocketMQ's broker fast failure (<c>BrokerFastFailure</c>): a send that waited in the send thread pool's
/// queue longer than <c>waitTimeMillsInSendQueue</c> (200 ms) is answered SYSTEM_BUSY ("[TIMEOUT_CLEAN_QUEUE]broker
/// busy"), and a full queue (<c>sendThreadPoolQueueCapacity</c>) refuses at once. Without it, ten times more producers
/// than the log can serve all get in, every request waits behind all the others, and everyone times out instead of
/// most being served promptly. Admitted sends wait at most the queue time plus their own service time.
/// </remarks>
public sealed class SendAdmission
{
    private readonly SemaphoreSlim _slots;
    private readonly int _maxWaiting;
    private readonly TimeSpan _maxQueueWait;
    private readonly BrokerMetrics? _metrics;
    private int _waiting;

    /// <param name="maxConcurrent">Sends in the engine at once.</param>
    /// <param name="maxWaiting">Sends waiting for a slot at once; more are refused without waiting.</param>
    /// <param name="maxQueueWait">How long a send may wait for a slot before it is refused.</param>
    /// <param name="metrics">Where refusals are counted (<see cref="BrokerMetrics.RefusedBusy"/>).</param>
    public SendAdmission(int maxConcurrent, int maxWaiting, TimeSpan maxQueueWait, BrokerMetrics? metrics = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxConcurrent, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(maxWaiting);
        _slots = new SemaphoreSlim(maxConcurrent, maxConcurrent);
        MaxConcurrent = maxConcurrent;
        _maxWaiting = maxWaiting;
        _maxQueueWait = maxQueueWait;
        _metrics = metrics;
    }

    public int MaxConcurrent { get; }

    /// <summary>The answer to a refused send (RocketMQ's own words, so operators recognise it).</summary>
    public string BusyMessage => $"[TIMEOUT_CLEAN_QUEUE]broker busy, start flow control for a while: more than {MaxConcurrent} sends in progress " +
                                 $"and none finished within {_maxQueueWait.TotalMilliseconds:0} ms; retry after a backoff";

    /// <summary>Takes a slot, waiting at most the queue time; false: refuse the send as busy. Call <see cref="Exit"/> after a true.</summary>
    public ValueTask<bool> TryEnterAsync(CancellationToken ct)
    {
        if (_slots.Wait(0)) return ValueTask.FromResult(true);
        return SlowEnterAsync(ct);
    }

    private async ValueTask<bool> SlowEnterAsync(CancellationToken ct)
    {
        if (Interlocked.Increment(ref _waiting) > _maxWaiting)
        {
            Interlocked.Decrement(ref _waiting);
            return Refused();
        }
        try
        {
            return await _slots.WaitAsync(_maxQueueWait, ct).ConfigureAwait(false) || Refused();
        }
        finally
        {
            Interlocked.Decrement(ref _waiting);
        }
    }

    private bool Refused()
    {
        if (_metrics is not null) Interlocked.Increment(ref _metrics.RefusedBusy);
        return false;
    }

    public void Exit() => _slots.Release();
}
