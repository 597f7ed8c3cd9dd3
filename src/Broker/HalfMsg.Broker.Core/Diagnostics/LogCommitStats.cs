using System.Diagnostics;
using HalfMsg.Broker.Core.Diagnostics;

namespace HalfMsg.Broker.Core
{
    public sealed partial class BrokerEngine
    {
        /// <summary>Each group commit of the log, timed and sized (see <see cref="LogCommitStats"/>).</summary>
        public LogCommitStats LogCommitStats => _log.CommitStats;
    }
}

namespace HalfMsg.Broker.Core.Diagnostics
{
    /// <summary>
    /// Times each log commit (FasterLog's commit = write out the pages + fsync) and counts the records it covered, for
    /// the <c>halfmsg_log_commit_duration_seconds</c> and <c>halfmsg_log_commit_batch_records</c> histograms. The log
    /// calls <see cref="ObserveAsync"/> around its commit (one call site in <see cref="Storage.RecordLog"/>); the meter
    /// subscribes to <see cref="Committed"/>.
    /// </summary>
    /// <remarks>
    /// Records per commit are the difference of the engine's appended-records counter between the starts of two
    /// commits: a commit covers everything appended before it starts. A record counted just as a commit starts may be
    /// attributed to the neighbouring commit; the sum over commits is exact.
    /// </remarks>
    public sealed class LogCommitStats
    {
        private long _lastCount;

        /// <summary>Reads the number of records appended so far (set by whoever owns the counter; null = batch sizes are not reported).</summary>
        public Func<long>? RecordCounter { get; set; }

        /// <summary>Each successful commit's duration, counted per power-of-two bucket of µs since start (<c>/api/stats</c>
        /// <c>logCommitDuration</c>): a reader comparing two looks sees the longest commit between them, which a mean hides.</summary>
        public MicrosHistogram Durations { get; } = new();

        /// <summary>Raised on the log's commit loop after each successful commit: records covered (-1 when unknown), seconds taken.</summary>
        public event Action<long, double>? Committed;

        /// <summary>Runs one commit, timing it. A failed commit is not reported (the log fails instead).</summary>
        public async Task ObserveAsync(Func<CancellationToken, Task> commit, CancellationToken ct)
        {
            ArgumentNullException.ThrowIfNull(commit);
            long count = RecordCounter?.Invoke() ?? -1;
            long started = Stopwatch.GetTimestamp();
            await commit(ct).ConfigureAwait(false);
            var elapsed = Stopwatch.GetElapsedTime(started);
            Durations.Record(elapsed);
            double seconds = elapsed.TotalSeconds;
            long records = count < 0 ? -1 : count - _lastCount;
            if (count >= 0) _lastCount = count;
            Committed?.Invoke(records, seconds);
        }
    }
}
