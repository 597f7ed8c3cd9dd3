namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// The log can no longer make records durable (a commit failed, or did not complete within its bound), or the data
/// directory cannot be written at all. Durability of anything not yet acknowledged is unknown; the broker refuses all
/// writes from then on and must be restarted. Front-ends answer it as <see cref="BrokerStatus.StorageFailure"/>.
/// </summary>
public sealed class StorageFailureException : IOException
{
    public StorageFailureException(string reason, Exception? inner = null) : base("storage failure: " + reason, inner) => Reason = reason;

    /// <summary>What failed, in one line (for /health and the client status).</summary>
    public string Reason { get; }

    /// <summary>The status a front-end answers with.</summary>
    public BrokerError ToError() => new(BrokerStatus.StorageFailure, Message + "; the broker must be restarted");
}
