using Microsoft.AspNetCore.Http;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Bytes of Settings replies the Telemetry sessions of one connection keep (each session keeps its last one for the
/// stream's life, to push again: <see cref="TelemetrySession.TryKeepSettings"/>), bounded by
/// <see cref="MessagingService.MaxKeptSettingsBytesPerConnection"/>. Separate from the connection's
/// <see cref="AnswerBudget"/>: that one bounds bytes waiting to be written and is given back as they are, while kept
/// Settings stay until their stream ends, and would take the room of every receive on the connection. Since the
/// late-night session of 2026-12-07.
/// </summary>
internal sealed class KeptSettingsBudget(long limit)
{
    private static readonly object Key = new();
    private long _held;

    public long Limit => limit;
    public long Held => Interlocked.Read(ref _held);

    /// <summary>The budget of the request's connection (one per connection, created on first use).</summary>
    public static KeptSettingsBudget Of(HttpContext? context, long limit) => PerConnection.GetOrAdd(context, Key, () => new KeptSettingsBudget(limit));

    /// <summary>Holds <paramref name="bytes"/> in place of <paramref name="replacing"/> (what the caller held until now);
    /// false, nothing changed, when that would pass the limit.</summary>
    public bool TryReplace(long replacing, long bytes)
    {
        long delta = bytes - replacing;
        while (true)
        {
            long held = Interlocked.Read(ref _held);
            if (delta > 0 && held + delta > limit) return false;
            if (Interlocked.CompareExchange(ref _held, held + delta, held) == held) return true;
        }
    }

    public void Release(long bytes)
    {
        if (bytes != 0) Interlocked.Add(ref _held, -bytes);
    }
}
