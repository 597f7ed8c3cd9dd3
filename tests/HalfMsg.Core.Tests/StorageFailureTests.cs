using System.Collections.Concurrent;
using System.Diagnostics;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Core.Tests;

/// <summary>Captures every log line, for "said once, not once per second".</summary>
public sealed class ListLoggerFactory : ILoggerFactory
{
    public ConcurrentQueue<(LogLevel Level, string Category, string Text)> Lines { get; } = new();
    public ILogger CreateLogger(string categoryName) => new Logger(this, categoryName);
    public void AddProvider(ILoggerProvider provider) { }
    public void Dispose() { }

    private sealed class Logger(ListLoggerFactory owner, string category) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(LogLevel logLevel) => true;
        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
            => owner.Lines.Enqueue((logLevel, category, formatter(state, exception)));
    }
}

/// <summary>
/// Issue 8, defect 6, in-process: a log whose commit fails or hangs says so once, fails every write from then on with
/// <see cref="StorageFailureException"/> (never a hang, never a generic error), and the background loops stop instead of
/// logging an error every second. Faults are injected under FasterLog, at the device (<see cref="FaultInjectionDevice"/>).
/// </summary>
public sealed class StorageFailureTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-sf-" + Guid.NewGuid().ToString("N")[..12]);
    private FaultInjectionDevice? _device;
    private BrokerEngine? _engine;
    private readonly ListLoggerFactory _logs = new();

    private async Task<BrokerEngine> OpenAsync(TimeSpan? commitTimeout = null, bool loops = false, int checkpointEvery = 200_000)
    {
        var options = new CoreOptions
        {
            DataDir = _dir, SegmentSizeBits = 22, MemorySizeBits = 23, QueuesPerTopic = 2,
            CommitTimeout = commitTimeout ?? TimeSpan.FromSeconds(30),
            CheckpointEveryRecords = checkpointEvery,
            TransactionCheckInterval = TimeSpan.FromMilliseconds(100),
            WrapLogDevice = d => _device = new FaultInjectionDevice(d),
        };
        _engine = await BrokerEngine.OpenAsync(options, loggers: _logs, startBackgroundLoops: loops);
        return _engine;
    }

    private static MessageDraft Draft(string id) => new() { Topic = "t", MessageId = id, Body = "body"u8.ToArray() };

    // IAsyncLifetime, not IAsyncDisposable: xunit 2 never calls a test class's IAsyncDisposable, so the engines stayed
    // open and every data dir was left in /tmp.
    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        if (_engine is not null)
        {
            // A failed engine must still close promptly (the broker stops on SIGTERM).
            await _engine.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_failed_commit_fails_that_write_and_every_later_one_with_a_storage_failure()
    {
        var engine = await OpenAsync();
        Assert.True((await engine.SendAsync(Draft("before"))).IsOk);
        Assert.Null(engine.StorageFault);

        _device!.Fault = DeviceFault.FailWrites;
        var first = await Assert.ThrowsAsync<StorageFailureException>(async () => await engine.SendAsync(Draft("during")));
        Assert.Contains("commit failed", first.Message);
        Assert.Same(first, engine.StorageFault);
        Assert.True(engine.StorageFailed.IsCompleted);

        // The device is fine again, but durability of what was in flight is unknown: the log stays failed.
        _device.Fault = DeviceFault.None;
        await Assert.ThrowsAsync<StorageFailureException>(async () => await engine.SendAsync(Draft("after")));
        await Assert.ThrowsAsync<StorageFailureException>(async () => await engine.SendHalfAsync(Draft("after-half"), "t", "p", null));
        Assert.Equal(BrokerStatus.StorageFailure, engine.StorageFault!.ToError().Status);
    }

    [Fact]
    public async Task A_commit_that_hangs_beyond_the_bound_is_a_storage_failure_not_a_stalled_broker()
    {
        var engine = await OpenAsync(commitTimeout: TimeSpan.FromSeconds(2));
        Assert.True((await engine.SendAsync(Draft("before"))).IsOk);

        _device!.Fault = DeviceFault.HangWrites;
        var sw = Stopwatch.StartNew();
        // Bounded by the test only as a safety net: the engine itself must give up after its 2 s.
        var failure = await Assert.ThrowsAsync<StorageFailureException>(async () =>
            await engine.SendAsync(Draft("hung")).AsTask().WaitAsync(TimeSpan.FromSeconds(60)));
        Assert.Contains("did not complete within 2 s", failure.Message);
        Assert.True(sw.Elapsed >= TimeSpan.FromSeconds(1.5), $"failed after {sw.Elapsed}, before the bound");
        Assert.NotNull(engine.StorageFault);
    }

    [Fact]
    public async Task After_a_storage_failure_the_background_loops_stop_and_the_failure_is_logged_once()
    {
        var engine = await OpenAsync(loops: true, checkpointEvery: 100);
        for (int i = 0; i < 150; i++) Assert.True((await engine.SendAsync(Draft($"m{i}"))).IsOk);
        _device!.Fault = DeviceFault.FailWrites;
        await Assert.ThrowsAsync<StorageFailureException>(async () => await engine.SendAsync(Draft("fails")));

        // The checkpoint loop (150 records >= 100) and the others each meet the failure at most once, then end.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (engine.BackgroundLoopsRunning && DateTime.UtcNow < deadline) await Task.Delay(20);
        Assert.False(engine.BackgroundLoopsRunning, "background loops still run after the storage failure:\n" + Dump());

        var loud = _logs.Lines.Where(l => l.Level >= LogLevel.Error).ToList();
        var critical = Assert.Single(loud);
        Assert.Equal(LogLevel.Critical, critical.Level);
        Assert.Contains("Storage failure", critical.Text);
        Assert.Contains("must be restarted", critical.Text);
    }

    [Fact]
    public async Task A_failed_engine_closes_promptly_and_writes_no_checkpoint_of_state_that_never_became_durable()
    {
        var engine = await OpenAsync(commitTimeout: TimeSpan.FromSeconds(2));
        Assert.True((await engine.SendAsync(Draft("durable"))).IsOk);
        _device!.Fault = DeviceFault.HangWrites;
        await Assert.ThrowsAsync<StorageFailureException>(async () => await engine.SendAsync(Draft("never-durable")));

        // And closing the failed device blocks, as it did on a read-only file system: the broker must still stop.
        using var blocked = new ManualResetEventSlim(false);
        _device.BlockDispose = blocked;
        var sw = Stopwatch.StartNew();
        try
        {
            await engine.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            blocked.Set();
        }
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(15), $"closing took {sw.Elapsed}");
        _engine = null;
        Assert.False(Directory.Exists(Path.Combine(_dir, "checkpoints")) && Directory.EnumerateFiles(Path.Combine(_dir, "checkpoints"), "*.bin").Any(),
            "a checkpoint was written after the storage failure");

        // Restart on a healthy device: the acknowledged message is there.
        _device = null;
        var again = await OpenAsync();
        var got = await again.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", BatchSize = 8 });
        Assert.Contains(got.Messages, m => m.Message.MessageId == "durable");
    }

    private string Dump() => string.Join("\n", _logs.Lines.Select(l => $"{l.Level} {l.Category}: {l.Text}"));

    [Fact]
    public async Task Whoever_sees_the_storage_failure_also_sees_Failed_completed()
    {
        // CI once saw a writer's StorageFailureException while Failed was not yet complete: the log woke its waiters
        // before completing Failed. Many waiters, many fresh logs, so that a window of microseconds shows.
        for (int round = 0; round < 40; round++)
        {
            var dir = Path.Combine(_dir, "r" + round);
            var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 22, memorySizeBits: 23);
            try
            {
                long beyond = log.Append("x"u8) + (1 << 20);
                var waiters = Enumerable.Range(0, 32).Select(_ => Task.Run(async () =>
                {
                    try { await log.WaitCommittedAsync(beyond); return "not failed"; }
                    catch (StorageFailureException) { return log.Failed.IsCompleted ? "ok" : "Failed not complete"; }
                })).ToList();
                var watcher = Task.Run(() =>
                {
                    while (log.Fault is null) Thread.SpinWait(10);
                    return log.Failed.IsCompleted ? "ok" : "Failed not complete";
                });
                log.FailForTest("test");
                var seen = await Task.WhenAll(waiters.Append(watcher)).WaitAsync(TimeSpan.FromSeconds(30));
                Assert.All(seen, s => Assert.Equal("ok", s));
            }
            finally
            {
                await log.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            }
        }
    }
}

/// <summary>Issue 8, defect 7, in-process: one data dir, one broker.</summary>
public sealed class DataDirLockTests
{
    [Fact]
    public async Task A_second_engine_on_the_same_data_dir_is_refused_naming_the_dir_and_the_holder()
    {
        var dir = Path.Combine(Path.GetTempPath(), "halfmsg-lock-" + Guid.NewGuid().ToString("N")[..12]);
        var options = new CoreOptions { DataDir = dir, SegmentSizeBits = 22, MemorySizeBits = 23 };
        try
        {
            await using (var first = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false))
            {
                Assert.True((await first.SendAsync(new MessageDraft { Topic = "t", MessageId = "m1", Body = "x"u8.ToArray() })).IsOk);
                var ex = await Assert.ThrowsAsync<DataDirLockedException>(() => BrokerEngine.OpenAsync(options, startBackgroundLoops: false));
                Assert.Contains(Path.GetFullPath(dir), ex.Message);
                Assert.Contains($"pid {Environment.ProcessId}", ex.Message);
                Assert.DoesNotContain('\n', ex.Message);
                // The refused open touched nothing: the first engine still works.
                Assert.True((await first.SendAsync(new MessageDraft { Topic = "t", MessageId = "m2", Body = "x"u8.ToArray() })).IsOk);
            }
            // Released on close.
            await using var second = await BrokerEngine.OpenAsync(options, startBackgroundLoops: false);
            var got = await second.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "t", BatchSize = 8 });
            Assert.Equal(2, got.Messages.Count);
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
