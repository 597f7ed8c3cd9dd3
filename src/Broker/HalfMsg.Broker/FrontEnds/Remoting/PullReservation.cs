using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// One PULL_MESSAGE's room for its answer on its connection's in-flight budget and on the broker's budget of pulled
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

    public bool TryTake(long bytes)
    {
        bool first = Held == 0;
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

    public void Dispose()
    {
        long held = Interlocked.Exchange(ref _held, 0);
        if (held == 0) return;
        session.ChargeInFlight(-held);
        server.ChargePull(session, -held);
    }
}
