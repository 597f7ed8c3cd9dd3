namespace HalfMsg.Broker.Core.Diagnostics;

/// <summary>How the broker is: healthy, degraded (serving, but something was lost or damaged and an operator must look), or failed.</summary>
public enum HealthStatus
{
    Healthy,
    /// <summary>Serving; data damage was found and contained (see the reasons). Nothing after the damage was lost.</summary>
    Degraded,
    /// <summary>Not serving writes; the process should be restarted.</summary>
    Failed,
}

/// <summary>
/// The one place where the core reports its health. Reasons are kept (bounded) so that <c>/health</c> and the admin
/// stats can say exactly what happened; each reason is also logged once at Error by whoever reports it.
/// </summary>
public sealed class BrokerHealth
{
    private const int MaxReasons = 32;
    private readonly object _gate = new();
    private readonly List<string> _reasons = new();
    private int _omitted;

    public HealthStatus Status { get; private set; } = HealthStatus.Healthy;

    public IReadOnlyList<string> Reasons
    {
        get
        {
            lock (_gate)
            {
                var list = new List<string>(_reasons);
                if (_omitted > 0) list.Add($"... and {_omitted} more (see the log)");
                return list;
            }
        }
    }

    public void ReportDegraded(string reason) => Report(HealthStatus.Degraded, reason);
    public void ReportFailed(string reason) => Report(HealthStatus.Failed, reason);

    private void Report(HealthStatus status, string reason)
    {
        lock (_gate)
        {
            if (status > Status) Status = status;
            // The same damage met again (a pull of the same message) is one reason, not one per meeting.
            if (_reasons.Contains(reason)) return;
            if (_reasons.Count < MaxReasons) _reasons.Add(reason); else _omitted++;
        }
    }
}
