using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// One PULL_MESSAGE's (or VIEW_MESSAGE_BY_ID's, QUERY_MESSAGE's) room for its answer on its connection's in-flight budget and on the broker's budget of pulled
/// bytes (<see cref="RemotingOptions.MaxPullBytes"/>), taken by the engine as it picks each message and before it reads
/// the body (<see cref="Core.BrokerEngine.PullAsync"/>). A pull used to read up to 8 MiB of bodies and build its answer
/// before the answer was charged, so a client that pipelined pulls and read nothing made the broker hold 8 MiB per pull
/// being processed (up to about 4,350 on one connection). The first message of a pull always fits when nothing else of
/// its connection is in flight, so one message larger than the budget still goes out alone, as before. Once the answer
/// is built its room becomes the answer's charge (<see cref="RemotingSession"/>), released when the answer is flushed;
/// what the pull still holds when it ends otherwise is released by <see cref="Dispose"/>.
/// </summary>
internal sealed class PullReservation(RemotingSession session, RemotingServer server, long requestBytes) : IDeliveryAllowance, IDisposable
{
    private long _held;

    /// <summary>Bytes this pull holds on both budgets.</summary>
    public long Held => Interlocked.Read(ref _held);

    /// <summary>The last refusal was the broker's budget (all connections), not the connection's.</summary>
    public bool RefusedByBroker { get; private set; }

    /// <summary>The bytes of the message the last refusal was for.</summary>
    public long RefusedBytes { get; private set; }

    public bool TryTake(long bytes)
    {
        bool first = Held == 0;
        RefusedBytes = bytes;
        if (!session.TryReservePull(bytes, first, requestBytes))
        {
            RefusedByBroker = false;
            return false;
        }

        if (!server.TryReservePull(session, bytes, first))
        {
            session.ChargeInFlight(-bytes);
            RefusedByBroker = true;
            return false;
        }

        Interlocked.Add(ref _held, bytes);
        return true;
    }

    /// <summary>
    /// As <see cref="TryTake"/>, for a look-up (VIEW_MESSAGE_BY_ID, QUERY_MESSAGE): its first message, when it is a small
    /// answer (<see cref="RemotingSession.SmallResponseBytes"/>), is taken whatever the budgets hold, as every other small
    /// answer goes out. A Java client's consumers, producers and look-ups share one connection per broker: a slow
    /// consumer's unread pulls must not make a look-up of a small message SYSTEM_BUSY (they did, from the change that had
    /// look-ups reserve their room first until its review, 2026-12-06). A pull has no such rule: it may wait for room.
    /// </summary>
    public bool TryTakeForLookup(long bytes)
    {
        if (TryTake(bytes)) return true;
        if (Held != 0 || bytes > RemotingSession.SmallResponseBytes) return false;
        session.ChargeInFlight(bytes);
        server.ChargePull(session, bytes);
        Interlocked.Add(ref _held, bytes);
        return true;
    }

    public void Return(long bytes)
    {
        Interlocked.Add(ref _held, -bytes);
        session.ChargeInFlight(-bytes);
        server.ChargePull(session, -bytes);
    }

    /// <summary>Hands what this pull holds over to its answer, charged at its real size <paramref name="answerBytes"/>
    /// on both budgets whatever they hold now (its room was taken before its bodies were read); the session releases
    /// the answer's charges when it is flushed.</summary>
    public void HandOver(long answerBytes)
    {
        long delta = answerBytes - Interlocked.Exchange(ref _held, 0);
        session.ChargeInFlight(delta);
        server.ChargePull(session, delta);
    }

    /// <summary>
    /// After a pull found messages and had no room for the first (<see cref="Core.PullStatus.NoRoom"/>): waits until the
    /// budget that refused it has room for that message, or <paramref name="left"/> passes (false). A release elsewhere,
    /// or one too small, would only have the pull look again under the engine's lock and be refused again; so would a
    /// release of the connection's in-flight bytes when the broker's budget refused, which giving back the connection's
    /// share of the refused message is. The release task is taken before the room is checked, so that a release between
    /// the check and the wait is not missed.
    /// </summary>
    public async Task<bool> WaitForRoomAsync(TimeSpan left, TimeProvider time, CancellationToken ct)
    {
        long deadline = time.GetTimestamp() + (long)(left.TotalSeconds * time.TimestampFrequency);
        RoomSignal signal = RefusedByBroker ? server.PullReleased : session.InFlightReleased;
        while (true)
        {
            Task released = signal.Next();
            if (RefusedByBroker ? server.HasRoomForPull(session, RefusedBytes) : session.HasRoomForPull(RefusedBytes, requestBytes)) return true;
            TimeSpan rest = time.GetElapsedTime(time.GetTimestamp(), deadline);
            if (rest <= TimeSpan.Zero) return false;
            try
            {
                await released.WaitAsync(rest, time, ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                return false;
            }
        }
    }

    public void Dispose()
    {
        long held = Interlocked.Exchange(ref _held, 0);
        if (held == 0) return;
        session.ChargeInFlight(-held);
        server.ChargePull(session, -held);
    }
}
