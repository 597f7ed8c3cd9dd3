using System.Buffers.Binary;
using System.Diagnostics;
using FASTER.core;
using HalfMsg.Bench.Reporting;

namespace HalfMsg.Bench.Ceiling;

/// <summary>
/// The raw log ceiling: what FasterLog itself can make durable on this machine with the same write pattern as the
/// broker. P concurrent writers each append its share of N records of (body + 64 B header) and, in sync mode,
/// await durability before the next append (one outstanding append per writer, like a producer awaiting its send
/// result). Durability comes from group commit (the enqueue-and-wait variant is kept for reference but not run: it
/// does not complete on the broker's fast-commit settings):
/// <list type="bullet">
/// <item><b>commit-loop</b>: <c>Enqueue</c>, then park on a waiter list; one loop calls <c>CommitAsync</c> while
/// anyone waits and completes every waiter whose address is below <c>CommittedUntilAddress</c> (the broker's
/// RecordLog pattern).</item>
/// <item><b>enqueue-and-wait</b>: <c>EnqueueAndWaitForCommitAsync</c>, with a committer task kicked per append.</item>
/// </list>
/// Async mode: writers only enqueue; a background loop commits every 5 ms; latency is the enqueue itself, the
/// throughput counts until the last record is durable.
/// Every transaction costs the broker two appends (half + commit), hence tx/s ceiling = appends/s ÷ 2.
/// </summary>
public static class RawFasterLogBench
{
    public const int HeaderBytes = 64;
    public const string Name = "ceiling: raw FasterLog";

    private enum Variant { CommitLoop, EnqueueAndWait, AsyncFlush }

    public static async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken ct)
    {
        int appends = o.Messages; // N records, as many as messages in the other flows
        int recordBytes = o.BodySize + HeaderBytes;
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Ceiling,
            Description = $"{appends:N0} appends of {recordBytes} B by {o.Producers} writers into one FasterLog " +
                          $"(page 4 MiB, memory 64 MiB, segment 256 MiB, like RecordLog), {o.Flush.ToString().ToLowerInvariant()} flush; " +
                          "tx/s ceiling = appends/s ÷ 2.",
        };
        try
        {
            var variants = o.Flush == FlushMode.Sync
                // EnqueueAndWaitForCommitAsync never completed on the broker's fast-commit settings (timed out after
                // 600 s in a full run), so the ceiling is the commit-loop variant: the same batching the broker uses.
                ? new[] { Variant.CommitLoop }
                : new[] { Variant.AsyncFlush };
            VariantResult? best = null;
            foreach (var v in variants)
            {
                using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
                timeout.CancelAfter(o.FlowTimeout);
                var r = await RunVariantAsync(v, appends, recordBytes, o.Producers, timeout.Token);
                string key = v switch { Variant.CommitLoop => "commit_loop", Variant.EnqueueAndWait => "enqueue_and_wait", _ => "async_flush" };
                result.Metrics[$"{key}_appends_per_s"] = r.AppendsPerSecond;
                result.Notes.Add($"{key}: {r.AppendsPerSecond:N0} appends/s, p50 {r.Latency.P50Ms:0.000} ms, p99 {r.Latency.P99Ms:0.000} ms, " +
                                 $"{r.Commits:N0} commits ({(r.Commits > 0 ? (double)appends / r.Commits : 0):0.0} appends/commit), {r.Elapsed.TotalSeconds:0.00} s");
                Console.WriteLine($"  [ceiling] {result.Notes[^1]}");
                if (best is null || r.AppendsPerSecond > best.AppendsPerSecond) best = r with { Name = key };
            }
            result.Metrics["appends_per_s"] = best!.AppendsPerSecond;
            result.Metrics[Metric.Throughput] = best.AppendsPerSecond / 2;
            result.Metrics[Metric.Messages] = appends;
            result.Metrics["record_bytes"] = recordBytes;
            result.Metrics["appends_per_commit"] = best.Commits > 0 ? (double)appends / best.Commits : 0;
            result.Metrics["mib_per_s"] = best.AppendsPerSecond * recordBytes / (1024.0 * 1024.0);
            result.Metrics[Metric.ElapsedS] = best.Elapsed.TotalSeconds;
            result.AddLatency(Metric.Send, best.Latency);
            result.Notes.Add($"reported variant: {best.Name}");
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested)
        {
            result.NotMeasured = $"timed out after {o.FlowTimeout.TotalSeconds:0} s";
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            result.NotMeasured = $"{ex.GetType().Name}: {ex.Message}";
        }
        return result;
    }

    private sealed record VariantResult(string Name, double AppendsPerSecond, LatencyStats Latency, long Commits, TimeSpan Elapsed);

    private static async Task<VariantResult> RunVariantAsync(Variant variant, int appends, int recordBytes, int writers, CancellationToken ct)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-ceiling-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        IDevice? device = null;
        IDisposable? commits = null;
        FasterLog? log = null;
        try
        {
            // Exactly the broker's FasterLog settings (device, pages, memory, fast commit, throttled commit files).
            var (settings, rawDevice, commitManager) = HalfMsg.Broker.Core.Storage.RecordLog.CreateSettings(dir, segmentSizeBits: 28, memorySizeBits: 26);
            device = rawDevice;
            commits = commitManager;
            log = new FasterLog(settings);

            await using var committer = new GroupCommitter(log, variant == Variant.AsyncFlush ? TimeSpan.FromMilliseconds(5) : null);

            // Warm-up (JIT, first segment, first commits): not measured.
            int warm = Math.Min(2_000, Math.Max(100, appends / 20));
            await RunWritersAsync(variant, log, committer, warm, recordBytes, writers, recorders: null, ct);
            if (variant == Variant.AsyncFlush) await committer.WaitAsync(log.TailAddress - 1, ct);
            long commitsBefore = committer.Commits;

            var recorders = Enumerable.Range(0, writers).Select(_ => new LatencyRecorder(appends / writers + 1)).ToArray();
            var sw = Stopwatch.StartNew();
            await RunWritersAsync(variant, log, committer, appends, recordBytes, writers, recorders, ct);
            if (variant == Variant.AsyncFlush) await committer.WaitAsync(log.TailAddress - 1, ct); // until the last one is durable
            sw.Stop();

            return new VariantResult(variant.ToString(), appends / sw.Elapsed.TotalSeconds, LatencyRecorder.Merge(recorders),
                committer.Commits - commitsBefore, sw.Elapsed);
        }
        finally
        {
            log?.Dispose();
            device?.Dispose();
            commits?.Dispose();
            try { Directory.Delete(dir, recursive: true); } catch (Exception) { /* temp */ }
        }
    }

    private static Task RunWritersAsync(Variant variant, FasterLog log, GroupCommitter committer, int total, int recordBytes,
        int writers, LatencyRecorder[]? recorders, CancellationToken ct)
    {
        var tasks = new Task[writers];
        for (int w = 0; w < writers; w++)
        {
            int writer = w;
            int count = total / writers + (writer < total % writers ? 1 : 0);
            tasks[w] = Task.Run(async () =>
            {
                var record = new byte[recordBytes];
                Random.Shared.NextBytes(record);
                var rec = recorders?[writer];
                for (int i = 0; i < count; i++)
                {
                    ct.ThrowIfCancellationRequested();
                    BinaryPrimitives.WriteInt32LittleEndian(record, writer);
                    BinaryPrimitives.WriteInt64LittleEndian(record.AsSpan(4), i);
                    long start = Stopwatch.GetTimestamp();
                    switch (variant)
                    {
                        case Variant.CommitLoop:
                            long address = log.Enqueue(record);
                            await committer.WaitAsync(address, ct);
                            break;
                        case Variant.EnqueueAndWait:
                            var pending = log.EnqueueAndWaitForCommitAsync(record, ct);
                            committer.Kick();
                            await pending;
                            break;
                        case Variant.AsyncFlush:
                            if (!log.TryEnqueue(record, out _)) await log.EnqueueAsync(record, ct);
                            break;
                    }
                    rec?.RecordSince(start);
                }
            }, ct);
        }
        return Task.WhenAll(tasks);
    }

    /// <summary>
    /// One commit loop for the whole log: commits while anyone waits (or every <c>interval</c> in async mode) and
    /// completes the waiters whose record lies below <see cref="FasterLog.CommittedUntilAddress"/>.
    /// </summary>
    private sealed class GroupCommitter : IAsyncDisposable
    {
        private readonly FasterLog _log;
        private readonly TimeSpan? _interval;
        private readonly object _gate = new();
        private List<(long Address, TaskCompletionSource Tcs)> _waiters = new();
        private List<(long Address, TaskCompletionSource Tcs)> _spare = new();
        private readonly SemaphoreSlim _kick = new(0, int.MaxValue);
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;
        private long _commits;

        public GroupCommitter(FasterLog log, TimeSpan? interval)
        {
            _log = log;
            _interval = interval;
            _loop = Task.Run(LoopAsync);
        }

        public long Commits => Interlocked.Read(ref _commits);

        public void Kick() => _kick.Release();

        public Task WaitAsync(long address, CancellationToken ct)
        {
            if (_log.CommittedUntilAddress > address) return Task.CompletedTask;
            var tcs = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            lock (_gate) _waiters.Add((address, tcs));
            _kick.Release();
            return ct.CanBeCanceled ? tcs.Task.WaitAsync(ct) : tcs.Task;
        }

        private async Task LoopAsync()
        {
            var ct = _stop.Token;
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    // Kicked by a waiter, or a periodic tick (async mode, and a safety net for appends that
                    // enqueued after their kick was consumed).
                    await _kick.WaitAsync(_interval ?? TimeSpan.FromMilliseconds(10), ct);
                    while (_log.TailAddress > _log.CommittedUntilAddress)
                    {
                        await _log.CommitAsync(ct);
                        Interlocked.Increment(ref _commits);
                        CompleteCovered(_log.CommittedUntilAddress);
                    }
                    CompleteCovered(_log.CommittedUntilAddress);
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                lock (_gate)
                {
                    foreach (var (_, tcs) in _waiters) tcs.TrySetException(ex);
                    _waiters.Clear();
                }
            }
        }

        private void CompleteCovered(long committedUntil)
        {
            List<(long Address, TaskCompletionSource Tcs)> batch;
            lock (_gate)
            {
                if (_waiters.Count == 0) return;
                batch = _waiters;
                _waiters = _spare;
                _spare = batch;
                // keep the ones not yet covered
                for (int i = 0; i < batch.Count; i++)
                    if (batch[i].Address >= committedUntil) _waiters.Add(batch[i]);
            }
            foreach (var (address, tcs) in batch)
                if (address < committedUntil) tcs.TrySetResult();
            batch.Clear(); // safe: _spare is only swapped under the lock by this (single) loop thread
        }

        public async ValueTask DisposeAsync()
        {
            _stop.Cancel();
            try { await _loop; } catch (Exception) { /* stopped */ }
            _stop.Dispose();
        }
    }
}
