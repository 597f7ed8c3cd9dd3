using System.Diagnostics;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Durability is tested by SIGKILL, not by a clean dispose: a child process drives load against the core and prints every
/// acknowledged outcome; the test kills it mid-load, recovers the same data dir and checks every acknowledgement.
/// </summary>
public sealed class CrashTests
{
    [Theory]
    [InlineData(1500, false, false, false)]
    [InlineData(4000, false, false, false)]
    [InlineData(4000, true, false, false)]   // retention cuts the log while the load runs
    [InlineData(4000, true, true, false)]    // ... and one record in the middle of the log is damaged before recovery
    [InlineData(4000, false, false, true)]   // decisions answered before they are durable (--decision-durability relaxed)
    public async Task After_kill_9_every_acknowledged_outcome_survives_and_nothing_rolled_back_or_acked_is_delivered(int runMs, bool retention, bool damage, bool relaxed)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-crash-" + Guid.NewGuid().ToString("N")[..12]);
        var lines = new List<string>();
        try
        {
            string driver = Path.Combine(AppContext.BaseDirectory, "HalfMsg.CrashDriver.dll");
            var psi = new ProcessStartInfo("dotnet", [driver, dataDir, "4", retention ? "retention" : "none", relaxed ? "relaxed" : "sync"]) { RedirectStandardOutput = true, RedirectStandardError = true };
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
            // Kill after a condition, not after a fixed time (a busy machine is slow): enough acknowledged commits and,
            // with retention, cuts that took effect; then a little more at a random moment so the kill lands mid-load.
            int wantCommits = runMs / 20;
            var deadline = DateTime.UtcNow.AddSeconds(120);
            while (DateTime.UtcNow < deadline)
            {
                int commits, cuts;
                lock (lines) { commits = lines.Count(l => l.StartsWith("C ", StringComparison.Ordinal)); cuts = lines.Count(l => l.StartsWith("B ", StringComparison.Ordinal)); }
                if (commits >= wantCommits && (!retention || cuts >= 3)) break;
                await Task.Delay(20);
            }
            await Task.Delay(Random.Shared.Next(0, 200));
            process.Kill(entireProcessTree: true);              // SIGKILL: no dispose, no final commit, no checkpoint
            await process.WaitForExitAsync();
            await reader;
            Assert.True(process.ExitCode != 0, "the driver must have been killed, not have exited: " + await stderr);

            string[] output;
            lock (lines) output = lines.ToArray();
            var committed = Ids(output, "C");
            var rolledBack = Ids(output, "R");
            var pending = Ids(output, "P");
            var acked = Ids(output, "A");
            Assert.True(committed.Count > 10, $"too little load before the kill ({committed.Count} commits)");
            Assert.True(acked.Count > 0);

            // One damaged record costs at most the transaction it belongs to.
            var (lost, replayed) = damage ? DamageOneRecord(dataDir) : (new HashSet<string>(), false);

            await using var engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = dataDir, QueuesPerTopic = 4, SegmentSizeBits = 24, MemorySizeBits = 24 },
                startBackgroundLoops: false);
            // Reported loudly when recovery had to read it (it may sit before the newest checkpoint, where replay never looks).
            if (replayed) Assert.Equal(Broker.Core.Diagnostics.HealthStatus.Degraded, engine.Health.Status);
            if (retention) Assert.True(engine.LogBeginAddress > 64, "retention cut the log during the load");
            pending.ExceptWith(lost);
            rolledBack.ExceptWith(lost);
            acked.ExceptWith(lost);
            // Limits are limits: a commit whose half was stored before the last cut's boundary was sampled may have
            // expired with the cut. Every later one must be delivered.
            committed = CommittedAfterLastCut(output, engine.LogBeginAddress, committed);
            committed.ExceptWith(lost);
            if (relaxed)
            {
                // A relaxed decision may be lost in the crash; then its half is still pending (a check-back decides it
                // again), never rolled back or gone. Those are the only acknowledged decisions allowed to be missing.
                var undecided = committed.Concat(rolledBack).Where(id => engine.FindTransaction(id) is not null).ToHashSet();
                foreach (var id in undecided)
                    Assert.Equal(BrokerStatus.Ok, (await engine.EndTransactionAsync(id, null, Broker.Core.Model.TransactionResolution.Unknown, Broker.Core.Model.DecisionSource.CheckBack)).Error.Status);
                committed.ExceptWith(undecided);
                rolledBack.ExceptWith(undecided);
                pending.UnionWith(undecided);
            }

            // Every pending half is still pending, with at least the check count that was durable before the kill.
            foreach (var id in pending)
                Assert.True(engine.FindTransaction(id) is not null, $"pending half {id} was lost");
            foreach (var (id, minChecks) in DurableCheckCounts(output))
                if (engine.FindTransaction(id) is { } tx) Assert.True(tx.Checks >= minChecks, $"{id}: {tx.Checks} checks recovered, at least {minChecks} were durable");

            // Drain what the group can still receive (leases from before the crash are still invisible; receive with a new group too).
            var redelivered = new List<string>();
            var freshGroup = new List<string>();
            for (int i = 0; i < 1000; i++)
            {
                var r = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g", Topic = "orders", BatchSize = 256, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (r.Messages.Count == 0) break;
                redelivered.AddRange(r.Messages.Select(m => m.Message.MessageId));
            }
            for (int i = 0; i < 1000; i++)
            {
                var r = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "audit", Topic = "orders", BatchSize = 256, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (r.Messages.Count == 0) break;
                freshGroup.AddRange(r.Messages.Select(m => m.Message.MessageId));
            }

            // A fresh group sees every acknowledged commit exactly once, and never a rolled-back or pending half.
            Assert.Empty(committed.Except(freshGroup));
            Assert.Equal(freshGroup.Count, freshGroup.Distinct().Count());
            Assert.Empty(freshGroup.Intersect(rolledBack));
            Assert.Empty(freshGroup.Intersect(pending));
            // Acked messages are not redelivered to the group that acked them.
            Assert.Empty(redelivered.Intersect(acked));
            // Rolled-back transactions stay rolled back.
            foreach (var id in rolledBack.Take(20))
                Assert.Equal(BrokerStatus.TransactionConflict, (await engine.EndTransactionAsync(id, null, Broker.Core.Model.TransactionResolution.Commit, Broker.Core.Model.DecisionSource.CheckBack)).Error.Status);
        }
        finally
        {
            try { Directory.Delete(dataDir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>Commits whose half was stored after the marker of the last cut that took effect (boundary ≤ the recovered begin).</summary>
    private static HashSet<string> CommittedAfterLastCut(string[] lines, long begin, HashSet<string> committed)
    {
        int marker = Array.FindLastIndex(lines, l => l.StartsWith("B ", StringComparison.Ordinal) && long.Parse(l[2..]) <= begin);
        if (marker < 0) return committed;
        var storedAfter = lines.Skip(marker + 1).Where(l => l.StartsWith("H ", StringComparison.Ordinal)).Select(l => l[2..]).ToHashSet();
        return committed.Where(storedAfter.Contains).ToHashSet();
    }

    /// <summary>
    /// Flips one byte inside the payload of a half or decision record in the middle of the log (found by scanning the
    /// log the way recovery does) and returns the transaction it belonged to: the only one allowed to be affected.
    /// </summary>
    private static (HashSet<string> Lost, bool Replayed) DamageOneRecord(string dataDir)
    {
        long covered = Directory.Exists(Path.Combine(dataDir, "checkpoints"))
            ? Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin")
                .Select(f => Broker.Core.Storage.CheckpointStoreNames.Covered(f)).DefaultIfEmpty(0).Max()
            : 0;
        var found = new List<(long Address, string Tx)>();
        var log = new Broker.Core.Storage.RecordLog(Path.Combine(dataDir, "log"), FlushMode.Sync, TimeSpan.FromMilliseconds(5), 24, 24);
        try
        {
            var collector = new Collector(found);
            log.Replay(log.BeginAddress, ref collector);
        }
        finally
        {
            log.DisposeAsync().AsTask().GetAwaiter().GetResult();
        }
        Assert.True(found.Count > 10, "records to choose from");
        var afterCheckpoint = found.Where(f => f.Address >= covered).ToList();
        bool replayed = afterCheckpoint.Count > 0;
        var (address, tx) = replayed ? afterCheckpoint[afterCheckpoint.Count / 2] : found[found.Count / 2];
        string file = Path.Combine(dataDir, "log", $"broker.log.{address >> 24}");
        using (var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
        {
            stream.Position = (address & ((1L << 24) - 1)) + 4 + 8 + 1;
            int b = stream.ReadByte();
            stream.Position -= 1;
            stream.WriteByte((byte)(b ^ 0x5A));
        }
        return ([tx], replayed);
    }

    private struct Collector(List<(long, string)> found) : Broker.Core.Storage.IRecordConsumer
    {
        public void Consume(ReadOnlySpan<byte> record, long address)
        {
            if (!Broker.Core.Storage.RecordHeader.TryOpen(record, out var kind, out var r, out _)) return;
            if (kind == Broker.Core.Storage.RecordKind.HalfStored) found.Add((address, Broker.Core.Storage.HalfStoredRecord.Read(ref r).TransactionId));
            else if (kind == Broker.Core.Storage.RecordKind.TxDecided) found.Add((address, Broker.Core.Storage.TxDecidedRecord.Read(ref r).TransactionId));
        }
    }

    private static HashSet<string> Ids(string[] lines, string tag)
        => lines.Where(l => l.StartsWith(tag + " ", StringComparison.Ordinal)).Select(l => l[(tag.Length + 1)..]).ToHashSet();

    /// <summary>
    /// "K id n" is printed before check n's record is appended, and check n-1's record was appended before check n was
    /// sent. A check record is appended without waiting for the disk, so what proves it durable is a half whose send
    /// STARTED after the K line: its record was appended after the check record, its "H" line says it is durable, and
    /// the log is durable in order. An H line merely printed after the K line proves nothing: its half may have been
    /// appended before the check record and its commit (a slow fsync) finished only after the K line, while the check
    /// record waited for the next commit when the kill came. A worker starts its next send only after printing the H
    /// lines of the previous one, so a K line counts when some worker printed an H line after it and then the H line of
    /// a later send.
    /// </summary>
    private static Dictionary<string, int> DurableCheckCounts(string[] lines)
    {
        // "H tx-{pid}-{worker}-{i}": even workers send one half at a time (send i), odd ones eight (send i / 8).
        static (string Worker, int Send) SendOf(string line)
        {
            var id = line[2..].Split('-');
            int worker = int.Parse(id[2]), i = int.Parse(id[3]);
            return (id[2], worker % 2 == 1 ? i / 8 : i);
        }
        var lastSend = new Dictionary<string, int>();
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].StartsWith("H ", StringComparison.Ordinal)) { var (w, s) = SendOf(lines[i]); lastSend[w] = Math.Max(lastSend.GetValueOrDefault(w), s); }
        // The last H line whose worker printed a later send's H line after it: every K line before it counts.
        int proof = Array.FindLastIndex(lines, l => l.StartsWith("H ", StringComparison.Ordinal) && SendOf(l) is var (w, s) && s < lastSend[w]);
        var result = new Dictionary<string, int>();
        for (int i = 0; i < proof; i++)
        {
            if (!lines[i].StartsWith("K ", StringComparison.Ordinal)) continue;
            var parts = lines[i].Split(' ');
            int n = int.Parse(parts[2]) - 1;
            result[parts[1]] = Math.Max(result.GetValueOrDefault(parts[1]), n);
        }
        return result;
    }
}
