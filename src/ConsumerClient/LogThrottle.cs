using System.Collections.Concurrent;

namespace HalfMsg.ConsumerClient;

/// <summary>Lets a log entry through at most once per <see cref="Period"/> for each key (e.g. "receive|Forbidden"), so
/// a failure repeated every second is reported without flooding the log.</summary>
internal sealed class LogThrottle
{
    private readonly ConcurrentDictionary<string, long> _last = new(StringComparer.Ordinal);

    public LogThrottle(TimeSpan period) => Period = period;

    public TimeSpan Period { get; }

    /// <summary>True the first time for <paramref name="key"/>, then again once <see cref="Period"/> has passed.</summary>
    public bool ShouldLog(string key)
    {
        long now = Environment.TickCount64;
        long periodMs = (long)Period.TotalMilliseconds;
        while (true)
        {
            if (!_last.TryGetValue(key, out long last))
            {
                if (_last.TryAdd(key, now)) return true;
                continue;
            }

            if (now - last < periodMs) return false;
            if (_last.TryUpdate(key, now, last)) return true;
        }
    }
}
