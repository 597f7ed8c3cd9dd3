using System.Buffers.Binary;
using System.Diagnostics;
using FASTER.core;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The log's commit manager (<see cref="SlotLogCommitManager"/>): two metadata slots in one file instead of a file
/// created and deleted per commit. Durability is tested by SIGKILL of a process that writes through
/// <see cref="RecordLog"/> and prints each record only once it is durable.
/// </summary>
public sealed class SlotLogCommitManagerTests
{
    [Theory]
    [InlineData(false, false)]
    [InlineData(true, false)]   // the begin address moves during the load: forced metadata writes
    [InlineData(true, true)]    // ... and the newest slot is torn (checksum fails) before recovery
    public async Task After_kill_9_every_durable_record_is_read_back_and_no_commit_file_is_churned(bool truncate, bool tearNewestSlot)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-slots-" + Guid.NewGuid().ToString("N")[..12]);
        var lines = new List<string>();
        try
        {
            string driver = Path.Combine(AppContext.BaseDirectory, "HalfMsg.CrashDriver.dll");
            var psi = new ProcessStartInfo("dotnet", ["exec", driver, "rawlog", dir, truncate ? "truncate" : "none"]) { RedirectStandardOutput = true, RedirectStandardError = true };
            using var process = Process.Start(psi)!;
            var stderr = process.StandardError.ReadToEndAsync();
            var ready = new TaskCompletionSource();
            var reader = Task.Run(async () =>
            {
                while (await process.StandardOutput.ReadLineAsync() is { } line)
                {
                    lock (lines) lines.Add(line);
                    if (line == "READY") ready.TrySetResult();
                }
            });
            await ready.Task.WaitAsync(TimeSpan.FromSeconds(60));
            // Enough durable records (and truncations) that several slot writes happened, then a kill at a random moment.
            var deadline = DateTime.UtcNow.AddSeconds(120);
            while (DateTime.UtcNow < deadline)
            {
                int durable, cuts;
                lock (lines) { durable = lines.Count(l => l.StartsWith("D ", StringComparison.Ordinal)); cuts = lines.Count(l => l.StartsWith("T ", StringComparison.Ordinal)); }
                if (durable >= (truncate ? 12000 : 6000) && (!truncate || cuts >= 4)) break;
                await Task.Delay(20);
            }
            await Task.Delay(Random.Shared.Next(0, 200));
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
            await reader;
            Assert.True(process.ExitCode != 0, "the driver must have been killed: " + await stderr);

            string[] output;
            lock (lines) output = lines.ToArray();
            var durableRecords = output.Where(l => l.StartsWith("D ", StringComparison.Ordinal))
                .Select(l => l.Split(' ')).Select(p => (Seq: long.Parse(p[1]), Address: long.Parse(p[2]))).ToList();
            long lastCut = output.Where(l => l.StartsWith("T ", StringComparison.Ordinal)).Select(l => long.Parse(l[2..])).DefaultIfEmpty(0).Max();
            long durableCut = output.Where(l => l.StartsWith("TD ", StringComparison.Ordinal)).Select(l => long.Parse(l[3..])).DefaultIfEmpty(0).Max();
            if (truncate) Assert.True(durableCut > 0, "no cut was confirmed durable before the kill");
            Assert.True(durableRecords.Count >= 1000, $"too little load before the kill ({durableRecords.Count})");

            // No file per commit: FASTER's log-commits directory never appears; the slot file does.
            Assert.False(Directory.Exists(Path.Combine(dir, "log-commits")), "a commit file directory was created");
            Assert.True(File.Exists(Path.Combine(dir, SlotLogCommitManager.FileName)));

            if (tearNewestSlot) TearNewestSlot(Path.Combine(dir, SlotLogCommitManager.FileName));

            var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
            try
            {
                Assert.True(log.BeginAddress <= Math.Max(lastCut, 64), $"begin {log.BeginAddress} beyond the last requested cut {lastCut}");
                Assert.True(log.BeginAddress >= durableCut, $"begin {log.BeginAddress} is before the cut {durableCut} a durable commit covered");
                int checkedRecords = 0;
                foreach (var (seq, address) in durableRecords)
                {
                    if (address < log.BeginAddress) continue; // cut away on purpose
                    byte[]? record = await log.ReadAsync(address);
                    Assert.True(record is not null, $"durable record {seq} at {address} is missing after kill -9 (begin {log.BeginAddress}, durable until {log.DurableUntil})");
                    Assert.Equal(seq, BinaryPrimitives.ReadInt64LittleEndian(record));
                    Assert.Equal(seq * 31 + 7, BinaryPrimitives.ReadInt64LittleEndian(record.AsSpan(8)));
                    checkedRecords++;
                }
                Assert.True(checkedRecords > 500, $"only {checkedRecords} records were above the begin address");

                // The recovered log keeps working: a new record becomes durable and is read back.
                long added = log.Append(new byte[] { 1, 2, 3 });
                await log.WaitDurableAsync(added).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
                Assert.Equal(new byte[] { 1, 2, 3 }, await log.ReadAsync(added));
            }
            finally
            {
                await log.DisposeAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>Flips a byte in the metadata of the slot with the higher commit number: its checksum fails.</summary>
    private static void TearNewestSlot(string path)
    {
        byte[] file = File.ReadAllBytes(path);
        int slots = file.Length / SlotLogCommitManager.SlotSize;
        Assert.True(slots >= 1, "no slot was written");
        int newest = 0;
        long best = -1;
        for (int i = 0; i < Math.Min(slots, 2); i++)
        {
            long num = BinaryPrimitives.ReadInt64LittleEndian(file.AsSpan(i * SlotLogCommitManager.SlotSize + 8));
            if (num > best) { best = num; newest = i; }
        }
        file[newest * SlotLogCommitManager.SlotSize + 24] ^= 0xFF;
        File.WriteAllBytes(path, file);
    }

    [Fact]
    public async Task A_commit_is_not_reported_durable_before_its_commit_meta_slot_is_on_disk()
    {
        // FasterLog in fast-commit mode marks a commit done before it calls the commit manager, and its CommitAsync
        // returns as soon as it sees that (when the committing thread was away while the page write completed). The
        // device below recreates that moment: its write returns only once the commit manager was called, and the
        // manager's slot write is held until the test releases it.
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-slots-" + Guid.NewGuid().ToString("N")[..12]);
        FaultInjectionDevice? device = null;
        var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24,
            wrapDevice: d => device = new FaultInjectionDevice(d));
        var slots = log.CommitSlotsForTests!;
        var inCommit = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var waitingForSlot = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var release = new ManualResetEventSlim();
        try
        {
            await log.WaitDurableAsync(log.Append(new byte[100])); // a first commit, undisturbed

            bool armed = true;
            slots.BeforeCommitForTests = () =>
            {
                if (!Volatile.Read(ref armed)) return;
                inCommit.TrySetResult();
                release.Wait(TimeSpan.FromSeconds(30));
            };
            log.WaitingForCommitMetaForTests = () => waitingForSlot.TrySetResult();
            device!.WriteReturnsOnceTrue = () => inCommit.Task.IsCompleted;

            long address = log.Append(new byte[100]);
            var durable = log.WaitDurableAsync(address).AsTask();
            await inCommit.Task.WaitAsync(TimeSpan.FromSeconds(30));
            device.WriteReturnsOnceTrue = null;
            // Either the waiter is released (the slot is not written yet: the bug) or the log waits for the slot.
            var first = await Task.WhenAny(durable, waitingForSlot.Task).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.False(durable.IsCompleted, "the record was reported durable while its commit's metadata slot was still being written");
            Assert.Same(waitingForSlot.Task, first);
            Assert.True(log.DurableUntil <= address);

            Volatile.Write(ref armed, false);
            release.Set();
            await durable.WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(log.DurableUntil > address);
        }
        finally
        {
            release.Set();
            await log.DisposeAsync();
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Every_commit_writes_a_slot_in_place_so_recovery_knows_the_exact_tail_and_a_moved_begin_is_written_too()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-slots-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
            var manager = (SlotLogCommitManager)typeof(RecordLog).GetField("_commitManager", System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Instance)!.GetValue(log)!;
            try
            {
                long commitsBefore = log.Commits;
                long writesBefore = manager.SlotWrites;
                var sw = Stopwatch.StartNew();
                long last = 0;
                for (int i = 0; i < 200; i++)
                {
                    last = log.Append(new byte[100]);
                    await log.WaitDurableAsync(last);
                }
                long commits = log.Commits - commitsBefore;
                long writes = manager.SlotWrites - writesBefore;
                Assert.True(commits >= 100, $"expected a commit per durable wait, got {commits}");
                // One slot per commit (a throttled slot let a damaged record end recovery's scan for the tail and hide
                // everything after it), written in place: no commit files appear.
                Assert.True(writes >= commits, $"{writes} slot writes for {commits} commits in {sw.Elapsed.TotalSeconds:0.0} s");
                Assert.False(Directory.Exists(Path.Combine(dir, "log-commits")) && Directory.EnumerateFiles(Path.Combine(dir, "log-commits")).Any());

                long forcedBefore = manager.SlotWrites;
                log.TruncateUntil(last);
                long marker = log.Append(new byte[1]);
                await log.WaitDurableAsync(marker);
                await log.CommitNowAsync();
                Assert.True(manager.SlotWrites > forcedBefore, "moving the begin address must write the metadata");
            }
            finally
            {
                await log.DisposeAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task A_log_whose_commits_were_written_by_fasters_own_manager_recovers_and_drops_its_commit_files()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-slots-" + Guid.NewGuid().ToString("N")[..12]);
        try
        {
            // A data dir as a broker before this change left it: FASTER's DeviceLogCommitCheckpointManager writing
            // log-commits/commit.N.0 (no slot file).
            int pageBits = LogLayout.Resolve(dir, RecordLog.DefaultMaxRecordSize);
            var (settings, device, slots) = RecordLog.CreateSettings(dir, 20, 24, pageBits);
            slots.Dispose();
            File.Delete(Path.Combine(dir, SlotLogCommitManager.FileName));
            var legacy = new DeviceLogCommitCheckpointManager(new LocalStorageNamedDeviceFactory(), new DefaultCheckpointNamingScheme(dir), removeOutdated: true);
            settings.LogCommitManager = legacy;
            long a1, a2;
            using (var old = new FasterLog(settings))
            {
                a1 = old.Enqueue(new byte[] { 1 });
                await old.CommitAsync();
                a2 = old.Enqueue(new byte[] { 2 });
                await old.CommitAsync();
            }
            legacy.Dispose();
            device.Dispose();
            Assert.NotEmpty(Directory.GetFiles(Path.Combine(dir, "log-commits")));

            var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
            try
            {
                Assert.Equal(new byte[] { 1 }, await log.ReadAsync(a1));
                Assert.Equal(new byte[] { 2 }, await log.ReadAsync(a2));
                long a3 = log.Append(new byte[] { 3 });
                await log.WaitDurableAsync(a3);
                Assert.Empty(Directory.GetFiles(Path.Combine(dir, "log-commits")));
            }
            finally
            {
                await log.DisposeAsync();
            }

            // And again from the slots alone.
            var again = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
            try
            {
                Assert.Equal(new byte[] { 2 }, await again.ReadAsync(a2));
            }
            finally
            {
                await again.DisposeAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task The_commit_loop_counts_its_idle_time_apart_from_its_commits()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-idle-" + Guid.NewGuid().ToString("N")[..12]);
        var log = new RecordLog(dir, FlushMode.Sync, TimeSpan.FromMilliseconds(5), segmentSizeBits: 20, memorySizeBits: 24);
        try
        {
            long a = log.Append(new byte[100]);
            await log.WaitDurableAsync(a);
            var (idle0, _) = log.CommitLoopIdle;
            long commits0 = log.Commits;
            var commitTime0 = log.CommitTime;
            // Nobody writes: the loop waits for work (its idle tick wakes it every 20 ms, with nothing to commit).
            var sw = Stopwatch.StartNew();
            while (log.CommitLoopIdle.Idle - idle0 < TimeSpan.FromMilliseconds(100) && sw.Elapsed < TimeSpan.FromSeconds(30))
                await Task.Delay(10);
            Assert.True(log.CommitLoopIdle.Idle - idle0 >= TimeSpan.FromMilliseconds(100), $"idle grew by {log.CommitLoopIdle.Idle - idle0} in {sw.Elapsed}");
            Assert.Equal(commits0, log.Commits);
            Assert.Equal(commitTime0, log.CommitTime);
            // Writers that keep a commit request waiting while a commit runs are counted when the loop comes back.
            var writers = Enumerable.Range(0, 8).Select(_ => Task.Run(async () =>
            {
                for (int i = 0; i < 200; i++) await log.WaitDurableAsync(log.Append(new byte[100]));
            })).ToArray();
            await Task.WhenAll(writers);
            Assert.True(log.Commits > commits0);
            Assert.True(log.CommitLoopIdle.KickedOnReturn > 0, "8 concurrent writers never had a commit request waiting when a commit ended");
        }
        finally
        {
            await log.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
