namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// At most N log lines a minute for something a caller chooses how often to cause (a failed signature, a malformed
/// request): the rest are only counted, and the next line that is allowed says how many were left out.
/// </summary>
internal sealed class LogRateLimiter(int perMinute, TimeProvider time)
{
    private readonly object _gate = new();
    private DateTimeOffset _windowStart;
    private int _inWindow;
    private long _suppressed;

    /// <summary>True when a line may be written now; <paramref name="suppressed"/> is then the count left out before it.</summary>
    public bool TryEnter(out long suppressed)
    {
        lock (_gate)
        {
            DateTimeOffset now = time.GetUtcNow();
            if (now - _windowStart >= TimeSpan.FromMinutes(1))
            {
                _windowStart = now;
                _inWindow = 0;
            }

            if (_inWindow >= perMinute)
            {
                _suppressed++;
                suppressed = 0;
                return false;
            }

            _inWindow++;
            suppressed = _suppressed;
            _suppressed = 0;
            return true;
        }
    }
}
