using System.Buffers.Binary;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Fuzz;

/// <summary>
/// The data directory the <c>checkpoint</c> target opens: a log written by a small workload of every kind of state
/// (normal, FIFO and delay messages, halves committed, rolled back and left pending, leases, acks, a lease change, a
/// dead letter and a re-drive of one, a started group, a pull group's offset), with a checkpoint after each of its phases (one whole, then
/// deltas on it), and a few records after the last one for replay to apply on top. Built once per process.
/// </summary>
/// <remarks>
/// A checkpoint file is only loaded when its name and header name the same covered address, a delta when the one it
/// builds on is there, and either only when the log reaches the address it covers. An input alone in an empty data dir
/// (the target until 2026-12-05) therefore never got past the header check since checkpoints became deltas
/// (2026-11-30). Now the input's files take this fixture's covered addresses, in order, so mutations reach the snapshot
/// decoder and the chain's loading over a real log.
/// </remarks>
public static class CheckpointChainFixture
{
    public const int SegmentBits = 22;
    public const int MemoryBits = 23;
    public const int QueuesPerTopic = 2;

    // The on-disk header (HalfMsg.Broker.Core.Storage.Checkpointer): "HMCP", version, covered (i64) at 5, ..., and from
    // version 3 the kind at 21 (0 whole, 1 delta) and the checkpoint a delta builds on (i64) at 22.
    private static ReadOnlySpan<byte> Magic => "HMCP"u8;
    private const int CoveredAt = 5, KindAt = 21, PreviousAt = 22, HeaderV3 = 30;
    private const byte KindDelta = 1;

    /// <summary>The fixture's log (every file of its data dir but the checkpoints) and its checkpoint files, oldest first.</summary>
    public sealed record Template(string Dir, IReadOnlyList<(long Covered, byte[] Bytes)> Checkpoints);

    private static readonly Lazy<Template> Built = new(Build);

    public static Template Get() => Built.Value;

    public static CoreOptions Options(string dir) => new()
    {
        DataDir = dir, SegmentSizeBits = SegmentBits, MemorySizeBits = MemoryBits, QueuesPerTopic = QueuesPerTopic,
        MaxDeliveryAttempts = 2,
    };

    /// <summary>The fixture's checkpoint files as one input (the seed): the files one after another.</summary>
    public static byte[] SeedInput() => Get().Checkpoints.SelectMany(c => c.Bytes).ToArray();

    /// <summary>
    /// Fills <paramref name="dir"/> with the fixture's log and the input's checkpoint files. The input is one or more
    /// files, each starting with "HMCP" (an input without it is one file). File i is named after the fixture's i-th
    /// covered address and its header says so; a delta names the file before it as its base. Record checksums are
    /// recomputed. Files beyond the fixture's count are dropped.
    /// </summary>
    public static void Prepare(string dir, byte[] input)
    {
        var template = Get();
        foreach (var file in Directory.GetFiles(template.Dir, "*", SearchOption.AllDirectories))
        {
            string target = Path.Combine(dir, Path.GetRelativePath(template.Dir, file));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            File.Copy(file, target);
        }
        string checkpoints = Path.Combine(dir, "checkpoints");
        Directory.CreateDirectory(checkpoints);
        var files = Split(input);
        for (int i = 0; i < files.Count && i < template.Checkpoints.Count; i++)
        {
            var bytes = files[i];
            long covered = template.Checkpoints[i].Covered;
            if (bytes.Length >= CoveredAt + 8) BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(CoveredAt), covered);
            if (i > 0 && bytes.Length >= HeaderV3 && bytes[4] >= 3 && bytes[KindAt] == KindDelta)
                BinaryPrimitives.WriteInt64LittleEndian(bytes.AsSpan(PreviousAt), template.Checkpoints[i - 1].Covered);
            File.WriteAllBytes(Path.Combine(checkpoints, $"checkpoint-{covered:x16}.bin"), FuzzTargets.WithCheckpointChecksums(bytes));
        }
    }

    /// <summary>
    /// Opens an engine on the fixture's log with the input's checkpoint files (none: the log alone is replayed) and says
    /// which checkpoint it loaded and what state it recovered, in the public API's words (for the test that the seed
    /// loads its whole chain and recovers what replaying the log alone does).
    /// </summary>
    public static async Task<(long LoadedCheckpoint, string State)> OpenAndDescribeAsync(byte[] input)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-fuzz-open-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        try
        {
            Prepare(dir, input);
            await using var engine = await BrokerEngine.OpenAsync(Options(dir), startBackgroundLoops: false);
            var state = new StringBuilder();
            state.AppendLine(System.Text.Json.JsonSerializer.Serialize(engine.ListTopics()));
            state.AppendLine($"pending {engine.PendingCount}, counts {engine.TransactionCounts()}");
            foreach (string group in new[] { "g1", "g2", "g3" })
                state.AppendLine(System.Text.Json.JsonSerializer.Serialize(engine.FindGroup(group)));
            state.AppendLine(System.Text.Json.JsonSerializer.Serialize(engine.ConsumerOffsetsOf("FzA")));
            return (engine.LastCheckpointAddress, state.ToString());
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The input cut before each "HMCP" after its start.</summary>
    public static List<byte[]> Split(byte[] input)
    {
        var files = new List<byte[]>();
        int start = 0;
        while (start < input.Length)
        {
            int next = input.AsSpan(start + 1).IndexOf(Magic);
            int end = next < 0 ? input.Length : start + 1 + next;
            files.Add(input[start..end]);
            start = end;
        }
        return files;
    }

    private static Template Build()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-fuzz-fixture-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        BuildAsync(dir).GetAwaiter().GetResult();
        // Take the checkpoints out: each input brings its own.
        var checkpoints = Directory.GetFiles(Path.Combine(dir, "checkpoints"))
            .Select(f => (Covered: Broker.Core.Storage.CheckpointStoreNames.Covered(f), File: f))
            .Where(c => c.Covered >= 0)
            .OrderBy(c => c.Covered)
            .Select(c => (c.Covered, File.ReadAllBytes(c.File)))
            .ToList();
        // The one written at shutdown covers the whole log: without it, replay has the last phase's records to apply.
        if (checkpoints.Count > 1) checkpoints.RemoveAt(checkpoints.Count - 1);
        Directory.Delete(Path.Combine(dir, "checkpoints"), recursive: true);
        foreach (var name in new[] { "broker.lock", "broker.pid" }) File.Delete(Path.Combine(dir, name));
        AppDomain.CurrentDomain.ProcessExit += (_, _) => { try { Directory.Delete(dir, recursive: true); } catch (IOException) { } };
        return new Template(dir, checkpoints);
    }

    private static async Task BuildAsync(string dir)
    {
        var engine = await BrokerEngine.OpenAsync(Options(dir), startBackgroundLoops: false);
        int ids = 0;
        long now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        MessageDraft Draft(string topic, string body, string? group = null, long? at = null) => new()
        {
            Topic = topic, MessageId = $"0100000000000000000000{++ids:X12}", Body = Encoding.UTF8.GetBytes(body), Tag = "T" + ids % 3,
            Keys = [$"k{ids % 5}"], MessageGroup = group, DeliveryTimestampMs = at, BornTimestampMs = now, BornHost = "fuzz",
        };
        static void Ok(bool ok, string what) { if (!ok) throw new InvalidOperationException("fixture: " + what + " failed"); }
        try
        {
            // State that stays: the whole checkpoint is larger than the deltas after it, which are then written as deltas.
            for (int i = 0; i < 80; i++) Ok((await engine.SendAsync(Draft(i % 2 == 0 ? "FzA" : "FzC", $"base {i}"))).IsOk, "send");
            for (int phase = 0; phase < 4; phase++)
            {
                Ok((await engine.CreateTopicAsync("FzA")).Error.IsOk, "create topic");
                for (int i = 0; i < 6; i++) Ok((await engine.SendAsync(Draft("FzA", $"plain {phase}.{i}"))).IsOk, "send");
                Ok((await engine.SendAsync(Draft("FzA", "fifo", group: "order-" + phase))).IsOk, "fifo send");
                Ok((await engine.SendAsync(Draft("FzA", "later", at: now + 3_600_000))).IsOk, "delay send");
                for (int i = 0; i < 5; i++)
                {
                    var half = await engine.SendHalfAsync(Draft("FzB", $"half {phase}.{i}"), "fz-producers", "p1", null);
                    Ok(half.IsOk, "half");
                    if (i < 4)
                        Ok((await engine.EndTransactionAsync(half.TransactionId, half.MessageId, i % 2 == 0 ? TransactionResolution.Commit : TransactionResolution.Rollback, DecisionSource.Client)).IsOk, "decision");
                }
                var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g1", Topic = "FzA", BatchSize = 4, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (got.Messages.Count > 0) await engine.AckAsync("g1", "FzA", got.Messages[0].ReceiptHandle);
                if (got.Messages.Count > 1) await engine.ChangeInvisibleDurationAsync("g1", "FzA", got.Messages[1].ReceiptHandle, TimeSpan.FromMinutes(10));
                if (got.Messages.Count > 2) await engine.ForwardToDeadLetterAsync("g1", "FzA", got.Messages[2].ReceiptHandle);
                var committed = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "g2", Topic = "FzB", BatchSize = 2, InvisibleDuration = TimeSpan.FromMinutes(5) });
                if (committed.Messages.Count > 0) await engine.AckAsync("g2", "FzB", committed.Messages[0].ReceiptHandle);
                if (phase == 1) await engine.StartGroupAsync("g3", "FzA", GroupStartFrom.Earliest);
                // A re-driven dead letter: its queue entry is reserved for g1 (checkpoint version 4 writes the group).
                if (phase == 1) Ok((await engine.RedriveDeadLettersAsync("g1", null, 1)).Redriven > 0, "redrive");
                await engine.CommitConsumerOffsetAsync("pull1", "FzA", phase % QueuesPerTopic, phase + 1);
                if (phase < 3) await engine.CheckpointAsync();
            }
            // The last phase's records are after the newest checkpoint: replay applies them on top of the chain.
        }
        finally
        {
            // Disposing writes one more checkpoint (covering the tail); Build leaves it out.
            await engine.DisposeAsync();
        }
    }
}
