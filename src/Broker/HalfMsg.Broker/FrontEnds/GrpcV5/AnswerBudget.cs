using HalfMsg.Broker.Core.Model;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Bounds the answer bytes the broker holds for clients that have not read them yet. A ReceiveMessage answer is leased,
/// serialized and handed to Kestrel, whose final flush waits for the client's HTTP/2 window: a client that never opens
/// it (or opens it a little at a time) made the broker hold up to 8 MiB per stream, 200 streams per connection, for as
/// long as the client liked (found by review: +250 MiB for 24 streams of one connection). Every answer now reserves its
/// bytes, before each message is leased, from its connection's budget and from the broker's; the reservation ends when
/// the answer's last write completes or the stream ends. A Telemetry stream's queued commands count on its
/// connection's budget too. See <see cref="AnswerReservation"/>.
/// </summary>
internal sealed class AnswerBudget(long limit)
{
    private static readonly object Key = new();
    private long _held;
    private TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public long Limit => limit;
    public long Held => Interlocked.Read(ref _held);

    /// <summary>Completes at the next release: a receive refused for room waits on it.</summary>
    public Task Released => Volatile.Read(ref _released).Task;

    /// <summary>The budget of the request's connection (one per connection, created on first use).</summary>
    public static AnswerBudget Of(HttpContext? context, long limit) => PerConnection.GetOrAdd(context, Key, () => new AnswerBudget(limit));

    /// <summary>
    /// Takes <paramref name="bytes"/>; false (nothing taken) when that would pass the limit, unless nothing else is held:
    /// an answer larger than the whole budget goes out alone, as a Remoting answer larger than its connection's in-flight
    /// budget does (otherwise it could never be answered, and its pull or receive would wait for room for ever).
    /// </summary>
    public bool TryTake(long bytes)
    {
        long now = Interlocked.Add(ref _held, bytes);
        if (now <= limit || bytes <= 0 || now == bytes) return true;
        Interlocked.Add(ref _held, -bytes);
        return false;
    }

    /// <summary>Whether <see cref="TryTake"/> of <paramref name="bytes"/> would succeed now (it may not by the time it
    /// is tried).</summary>
    public bool HasRoomFor(long bytes)
    {
        long held = Held;
        return held <= limit - bytes || held == 0;
    }

    /// <summary>Takes <paramref name="bytes"/> whatever the limit (an answer already leased must be written).</summary>
    public void Take(long bytes) => Interlocked.Add(ref _held, bytes);

    public void Release(long bytes)
    {
        if (bytes == 0) return;
        Interlocked.Add(ref _held, -bytes);
        var next = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Interlocked.Exchange(ref _released, next).TrySetResult();
    }
}

/// <summary>
/// One answer's bytes on its connection's budget and the broker's. Given to the engine as the receive's
/// <see cref="IDeliveryAllowance"/>: a message that does not fit both is not leased. Disposing releases it all.
/// </summary>
internal sealed class AnswerReservation(AnswerBudget connection, AnswerBudget broker) : IDeliveryAllowance, IDisposable
{
    private long _held;

    /// <summary>The engine found a message and this reservation had no room for it.</summary>
    public bool Refused { get; private set; }

    /// <summary>After a refusal, the budget that refused (the connection's is asked first) and the bytes it refused: a
    /// caller waiting for room waits for that much on that budget, not for any release anywhere.</summary>
    public AnswerBudget? RefusedBy { get; private set; }

    /// <inheritdoc cref="RefusedBy"/>
    public long RefusedBytes { get; private set; }

    public long Held => Interlocked.Read(ref _held);

    public bool TryTake(long bytes)
    {
        if (!connection.TryTake(bytes)) return Refuse(connection, bytes);

        if (!broker.TryTake(bytes))
        {
            connection.Release(bytes);
            return Refuse(broker, bytes);
        }

        Interlocked.Add(ref _held, bytes);
        return true;
    }

    public void Return(long bytes)
    {
        Interlocked.Add(ref _held, -bytes);
        connection.Release(bytes);
        broker.Release(bytes);
    }

    /// <summary>Sets the reservation to <paramref name="bytes"/>, the answer's real size, once it is known.</summary>
    public void Resize(long bytes)
    {
        long delta = bytes - Interlocked.Exchange(ref _held, bytes);
        if (delta > 0)
        {
            connection.Take(delta);
            broker.Take(delta);
        }
        else if (delta < 0)
        {
            connection.Release(-delta);
            broker.Release(-delta);
        }
    }

    private bool Refuse(AnswerBudget budget, long bytes)
    {
        Refused = true;
        RefusedBy = budget;
        RefusedBytes = bytes;
        return false;
    }

    /// <summary>Starts a new attempt (after a refusal); what is held stays.</summary>
    public void ResetRefusal()
    {
        Refused = false;
        RefusedBy = null;
        RefusedBytes = 0;
    }

    public void Dispose() => Resize(0);
}
