using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Transactions;

/// <summary>
/// The envelope through which the core reaches one live producer instance: a v5 Telemetry stream,
/// a Remoting connection, or a test double. The core knows <em>that</em> a producer is reachable,
/// never <em>how</em>.
/// </summary>
public interface ICheckBackChannel
{
    /// <summary>The producer instance's client id (e.g. <c>x-mq-client-id</c>).</summary>
    string ClientId { get; }

    /// <summary>False once the underlying connection is known to be gone.</summary>
    bool IsAlive { get; }

    /// <summary>
    /// Queues a check-back to the producer. Returns false when the channel is dead or cannot accept it;
    /// the core then tries another live producer of the group. The producer answers later with an
    /// ordinary decision (EndTransaction). An exception (a connection torn down under the write) is taken as a refusal
    /// too: the check pass goes on with the next instance and the other halves (counted as a send failure).
    /// </summary>
    bool TrySendCheck(CheckBackRequest request);
}
