using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// A transaction id is taken again once its decision is forgotten (HalfIndex.Exists: after DecisionRetention, or past
/// MaxRememberedDecisions): what names a half by its id alone must not mix up the old half of the id and the new one.
/// </summary>
public sealed class ReusedTransactionIdTests
{
    private static MessageDraft Draft(EngineHarness h, string topic, string id, string body) => new()
    {
        Topic = topic, MessageId = id, Body = Encoding.UTF8.GetBytes(body),
        BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
    };

    /// <summary>Another decision pushes the id's decision out (MaxRememberedDecisions = 1).</summary>
    private static async Task ForgetDecisionsAsync(EngineHarness h, string otherId)
    {
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", otherId, "other"), "orders", "p1", null)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync(otherId, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
    }

    /// <summary>Half X at A1 rolled back and forgotten, a new half X committed: returns A1 and the committed half's address.</summary>
    private static async Task<(long RolledBackAt, long CommittedAt)> RollBackThenReuseAndCommitAsync(EngineHarness h, string id, string otherId)
    {
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "ROLLED-BACK"), "orders", "p1", null)).IsOk);
        long rolledBackAt = h.Engine.FindTransaction(id)!.LogAddress;
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Rollback, DecisionSource.Client)).IsOk);
        Assert.Null(await h.Engine.ReadMessageAtAsync(rolledBackAt));
        await ForgetDecisionsAsync(h, otherId);
        var second = await h.Engine.SendHalfAsync(Draft(h, "orders", id, "COMMITTED"), "orders", "p1", null);
        Assert.True(second.IsOk, second.Error.ToString());
        long committedAt = h.Engine.FindTransaction(id)!.LogAddress;
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        return (rolledBackAt, committedAt);
    }

    private static async Task AssertOnlyTheCommittedBodyIsReadableAsync(EngineHarness h, long rolledBackAt, long committedAt)
    {
        var read = await h.Engine.ReadMessageAtAsync(rolledBackAt);
        Assert.True(read is null, $"the rolled-back half's body is readable by offset: '{(read is null ? "" : Encoding.UTF8.GetString(read.Body.Span))}'");
        var committed = await h.Engine.ReadMessageAtAsync(committedAt);
        Assert.NotNull(committed);
        Assert.Equal("COMMITTED", Encoding.UTF8.GetString(committed.Body.Span));
    }

    // Before 2026-12-07: a read by offset asked only whether some decision of the id was a commit, so the rolled-back body was readable.
    [Fact]
    public async Task A_rolled_back_half_is_not_readable_by_offset_after_its_id_is_reused_and_committed()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        var (rolledBackAt, committedAt) = await RollBackThenReuseAndCommitAsync(h, "0A0000000000000000000000000000AA", "0A0000000000000000000000000000BB");
        await AssertOnlyTheCommittedBodyIsReadableAsync(h, rolledBackAt, committedAt);
    }

    // Before 2026-12-07: a send-back of the rolled-back half's offset copied its body into %DLQ%G, where it was delivered.
    [Fact]
    public async Task A_rolled_back_half_cannot_be_sent_back_after_its_id_is_reused_and_committed()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        var (rolledBackAt, committedAt) = await RollBackThenReuseAndCommitAsync(h, "0A0000000000000000000000000000CC", "0A0000000000000000000000000000DD");
        var back = await h.Engine.SendBackAsync("G", rolledBackAt, -1, maxReconsumeTimes: 16, "orders"); // straight to %DLQ%G
        Assert.False(back.Error.IsOk, $"send-back of the rolled-back half's offset was accepted into {back.Topic}");
        var committed = await h.Engine.SendBackAsync("G", committedAt, -1, maxReconsumeTimes: 16, "orders");
        Assert.True(committed.Error.IsOk, committed.Error.ToString());
    }

    // Before 2026-12-07: the same after a restart, from a checkpoint or from the log alone (the check reads only state both restore).
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_rolled_back_half_stays_unreadable_by_offset_after_a_restart(bool fromCheckpoint)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        var (rolledBackAt, committedAt) = await RollBackThenReuseAndCommitAsync(h, "0A0000000000000000000000000000EE", "0A0000000000000000000000000000FF");
        if (fromCheckpoint) await h.Engine.CheckpointAsync();
        await h.Engine.DisposeAsync();
        if (!fromCheckpoint)
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        await AssertOnlyTheCommittedBodyIsReadableAsync(h, rolledBackAt, committedAt);
    }

    // The check follows the committed body where retention moves it (the commit's queue entry is moved with it), and after a restart.
    [Fact]
    public async Task A_reused_ids_committed_body_stays_readable_by_offset_after_retention_moves_it()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        const string id = "0A00000000000000000000000000000A";
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "ROLLED-BACK"), "orders", "p1", null)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Rollback, DecisionSource.Client)).IsOk);
        await ForgetDecisionsAsync(h, "0A00000000000000000000000000000B");
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "COMMITTED"), "orders", "p1", null)).IsOk);
        long committedAt = h.Engine.FindTransaction(id)!.LogAddress;
        long boundary = h.Engine.LogTailAddress;
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        await h.SendNormalAsync("filler", "f");
        // The commit entered its queue after the cut point, its body before it: the body moves to the tail.
        Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 1);
        for (int restart = 0; restart < 2; restart++)
        {
            var pulled = new List<PulledMessage>();
            foreach (int q in Enumerable.Range(0, h.Engine.QueueCount("orders")))
                pulled.AddRange((await h.Engine.PullAsync("orders", q, 0, 32, TagFilter.All, TimeSpan.Zero)).Messages);
            var moved = Assert.Single(pulled, m => Encoding.UTF8.GetString(m.Message.Body.Span) == "COMMITTED");
            Assert.NotEqual(committedAt, moved.PhysicalOffset);
            var read = await h.Engine.ReadMessageAtAsync(moved.PhysicalOffset);
            Assert.Equal("COMMITTED", read is null ? null : Encoding.UTF8.GetString(read.Body.Span));
            Assert.True((await h.Engine.SendBackAsync("G", moved.PhysicalOffset, -1, 16, "orders")).Error.IsOk);
            await h.RestartAsync();
        }
    }

    /// <summary>Half X checked (its checker slow), committed by its producer and forgotten; a new half X stored.</summary>
    private static async Task CheckCommitForgetAndReuseAsync(EngineHarness h, string id, string otherId)
    {
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "FIRST"), "orders", "p1", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());    // check #1 of the first half is out; its checker is slow
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        await ForgetDecisionsAsync(h, otherId);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "SECOND"), "orders", "p1", null)).IsOk);
    }

    /// <summary>The late answer is refused, the new half stays pending, gets its own check #1, and that answer decides it.</summary>
    private static async Task AssertLateAnswerRefusedThenOwnCheckDecidesAsync(EngineHarness h, RecordingChannel p, string id)
    {
        var late = await h.Engine.EndTransactionAsync(id, id, TransactionResolution.Rollback, DecisionSource.CheckBack);
        Assert.Equal(BrokerStatus.TransactionNotFound, late.Error.Status);
        Assert.True(h.Engine.FindTransaction(id) is not null, "the late answer to the first half's check decided the second half");

        while (p.Checks.TryDequeue(out _)) { }
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p.Checks.TryDequeue(out var own));
        Assert.Equal(1, own.CheckNumber);
        Assert.Equal("SECOND", Encoding.UTF8.GetString(own.HalfMessage.Body.Span));
        Assert.True((await h.Engine.EndTransactionAsync(id, id, TransactionResolution.Rollback, DecisionSource.CheckBack)).IsOk);
        Assert.Null(h.Engine.FindTransaction(id));
    }

    // Before 2026-12-07: a check-back answer named the id alone, so the late Rollback rolled back the new half, never checked.
    [Fact]
    public async Task A_late_check_back_answer_for_a_forgotten_half_does_not_decide_a_new_half_of_the_same_id()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        const string id = "0D0000000000000000000000000000AA";
        await CheckCommitForgetAndReuseAsync(h, id, "0D0000000000000000000000000000BB");
        await AssertLateAnswerRefusedThenOwnCheckDecidesAsync(h, p, id);
    }

    // Before 2026-12-07: the same after a restart (the new half's checks are known from its records and the checkpoint).
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task A_late_check_back_answer_after_a_restart_does_not_decide_a_new_half_of_the_same_id(bool fromCheckpoint)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        const string id = "0D0000000000000000000000000000CC";
        {
            var first = new RecordingChannel("p1");
            using var firstReg = h.Engine.Producers.Register("orders", first);
            await CheckCommitForgetAndReuseAsync(h, id, "0D0000000000000000000000000000DD");
        }
        if (fromCheckpoint) await h.Engine.CheckpointAsync();
        await h.Engine.DisposeAsync();
        if (!fromCheckpoint)
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        await AssertLateAnswerRefusedThenOwnCheckDecidesAsync(h, p, id);
    }

    /// <summary>A channel that takes the check, then fails before its TxChecked record is written (as a crash loses it).</summary>
    private sealed class LosesTheRecordChannel(string clientId) : HalfMsg.Broker.Core.Transactions.ICheckBackChannel
    {
        public string ClientId { get; } = clientId;
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => throw new IOException("the check went out; its record did not");
    }

    // A check sent whose TxChecked record is lost: its answer is refused, safely, as the half is checked again.
    [Fact]
    public async Task An_answer_to_a_check_whose_record_was_lost_is_refused_and_the_half_is_checked_again()
    {
        await using var h = await EngineHarness.StartAsync();
        const string id = "0D0000000000000000000000000000EE";
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "orders", id, "HALF"), "orders", "p1", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        // The channel's exception is the pass's no longer (CheckBackSendFailureTests): the check counts as not sent.
        using (h.Engine.Producers.Register("orders", new LosesTheRecordChannel("p1")))
            Assert.Equal(0, await h.Engine.RunCheckPassAsync());
        await h.RestartAsync();

        var answer = await h.Engine.EndTransactionAsync(id, id, TransactionResolution.Commit, DecisionSource.CheckBack);
        Assert.Equal(BrokerStatus.TransactionNotFound, answer.Error.Status);
        Assert.NotNull(h.Engine.FindTransaction(id));
        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());     // due since its timeout: checked again at once
        Assert.True(p.Checks.TryDequeue(out var again));
        Assert.Equal(1, again.CheckNumber);
        Assert.True((await h.Engine.EndTransactionAsync(id, id, TransactionResolution.Commit, DecisionSource.CheckBack)).IsOk);
    }
}

/// <summary>
/// A check-back carries its half's check token (the address the half was stored at), and an answer that echoes it
/// names the half it answers: once the new half of a reused id has had its own check, a late answer to the check of the
/// EARLIER half is refused by its token. Until the midday session of 2026-12-07's check tokens the answer named the id alone
/// and decided the new half. The token survives retention's moves, a restart from a checkpoint and from the log alone.
/// </summary>
public sealed class CheckTokenTests
{
    private static MessageDraft Draft(EngineHarness h, string id, string body) => new()
    {
        Topic = "orders", MessageId = id, Body = Encoding.UTF8.GetBytes(body),
        BornTimestampMs = h.Clock.GetUtcNow().ToUnixTimeMilliseconds(), BornHost = "test",
    };

    private static DecisionRequest Answer(string id, TransactionResolution resolution, long token) => new(id, id, resolution, DecisionSource.CheckBack, CheckToken: token);

    // restart: "" (none), "checkpoint" (from a checkpoint taken after the move), "log" (the log alone, after the cut).
    [Theory]
    [InlineData("", false)]
    [InlineData("", true)]
    [InlineData("checkpoint", true)]
    [InlineData("log", true)]
    public async Task A_late_answer_to_the_earlier_halfs_check_is_refused_after_the_new_half_was_checked(string restart, bool move)
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        const string id = "0E0000000000000000000000000000AA";
        var p = new RecordingChannel("p1");
        var reg = h.Engine.Producers.Register("orders", p);

        // The first half is checked (its checker slow), committed by its producer, and its decision forgotten.
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "FIRST"), "orders", "p1", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p.Checks.TryDequeue(out var oldCheck));
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "0E0000000000000000000000000000BB", "other"), "orders", "p1", null)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync("0E0000000000000000000000000000BB", null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);

        // The id is taken again; the new half has its own check.
        long storedAt = h.Engine.LogTailAddress;
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "SECOND"), "orders", "p1", null)).IsOk);
        Assert.Equal(storedAt, h.Engine.FindTransaction(id)!.LogAddress);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p.Checks.TryDequeue(out var newCheck));
        Assert.Equal("SECOND", Encoding.UTF8.GetString(newCheck.HalfMessage.Body.Span));
        Assert.Equal(storedAt, newCheck.CheckToken);
        Assert.NotEqual(oldCheck.CheckToken, newCheck.CheckToken);

        if (move)
        {
            // Retention moves the new half's body to the tail: its address changes, its token does not.
            long boundary = h.Engine.LogTailAddress;
            await h.SendNormalAsync("filler", "f");
            Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 1);
            Assert.NotEqual(storedAt, h.Engine.FindTransaction(id)!.LogAddress);
        }
        reg.Dispose();
        if (restart.Length > 0)
        {
            if (restart == "checkpoint") await h.Engine.CheckpointAsync();
            await h.Engine.DisposeAsync();
            if (restart == "log")
                foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
            await h.RestartAfterDeletedCheckpointAsync();
        }

        // The late Rollback for the FIRST half's check: refused by its token; the new half stays pending.
        var late = await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Rollback, oldCheck.CheckToken));
        Assert.True(late.Error.Status == BrokerStatus.TransactionNotFound, $"the late answer to the first half's check was taken for the second half: {late.Error}");
        Assert.NotNull(h.Engine.FindTransaction(id));
        // Its "unknown" changes nothing either.
        Assert.True((await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Unknown, oldCheck.CheckToken))).IsOk);
        Assert.NotNull(h.Engine.FindTransaction(id));

        // The new half's own answer (its token, as its check carried it before the move and the restart) decides it.
        var own = await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Commit, newCheck.CheckToken));
        Assert.True(own.IsOk, own.Error.ToString());
        Assert.Null(h.Engine.FindTransaction(id));
    }

    // A late "unknown" to the earlier half's check is no answer from the instance the new half's check went to: that one
    // stays counted as leaving its checks unanswered (ProducerRegistry.NoteUnanswered), so checks keep going elsewhere
    // once there is an elsewhere. Until review on 2026-12-07 such an answer, refused by its token as this half's answer
    // (the half's LastAnswerAtMs unchanged), still cleared the asked instance's count.
    [Fact]
    public async Task A_late_unknown_to_the_earlier_halfs_check_does_not_count_as_the_asked_instances_answer()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 1 });
        const string id = "0E0000000000000000000000000000DD";
        var first = new RecordingChannel("p1");
        var reg1 = h.Engine.Producers.Register("orders", first);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "FIRST"), "orders", "p1", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(first.Checks.TryDequeue(out var oldCheck));
        Assert.True((await h.Engine.EndTransactionAsync(id, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, "0E0000000000000000000000000000EE", "other"), "orders", "p1", null)).IsOk);
        Assert.True((await h.Engine.EndTransactionAsync("0E0000000000000000000000000000EE", null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        reg1.Dispose();

        // The id again, from an instance that takes checks and never answers: checked twice, the first left unanswered.
        var silent = new RecordingChannel("silent");
        using var reg2 = h.Engine.Producers.Register("orders", silent);
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "SECOND"), "orders", "silent", null)).IsOk);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        h.Clock.Advance(TimeSpan.FromSeconds(31));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.Equal(2, silent.Checks.Count);
        Assert.Equal(1, h.Engine.Producers.UnansweredChecks("orders", "silent"));

        // The late "unknown" for the FIRST half's check: changes nothing, and is not the silent instance's answer.
        Assert.True((await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Unknown, oldCheck.CheckToken))).IsOk);
        Assert.Equal(1, h.Engine.Producers.UnansweredChecks("orders", "silent"));

        // The new half's own "unknown" is its answer.
        Assert.True(silent.Checks.TryDequeue(out var newCheck));
        Assert.True((await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Unknown, newCheck.CheckToken))).IsOk);
        Assert.Equal(0, h.Engine.Producers.UnansweredChecks("orders", "silent"));
    }

    // A check after moves and a restart still carries the token the half was stored with (live == recovered).
    [Theory]
    [InlineData("checkpoint")]
    [InlineData("log")]
    public async Task A_check_after_moves_and_a_restart_carries_the_token_the_half_was_stored_with(string restart)
    {
        await using var h = await EngineHarness.StartAsync();
        const string id = "0E0000000000000000000000000000CC";
        Assert.True((await h.Engine.SendHalfAsync(Draft(h, id, "HALF"), "orders", "p1", null)).IsOk);
        long storedAt = h.Engine.FindTransaction(id)!.LogAddress;
        // Moved twice: the second move's record, all a replay of the log alone has, moves it from the first move's place.
        for (int move = 0; move < 2; move++)
        {
            long boundary = h.Engine.LogTailAddress;
            await h.SendNormalAsync("filler", "f");
            Assert.True(await h.Engine.TruncateBeforeAsync(boundary) >= 1);
        }
        Assert.NotEqual(storedAt, h.Engine.FindTransaction(id)!.LogAddress);
        if (restart == "checkpoint") await h.Engine.CheckpointAsync();
        await h.Engine.DisposeAsync();
        if (restart == "log")
            foreach (var f in Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
        await h.RestartAfterDeletedCheckpointAsync();

        var p = new RecordingChannel("p1");
        using var reg = h.Engine.Producers.Register("orders", p);
        h.Clock.Advance(TimeSpan.FromSeconds(7));
        Assert.Equal(1, await h.Engine.RunCheckPassAsync());
        Assert.True(p.Checks.TryDequeue(out var check));
        Assert.Equal(storedAt, check.CheckToken);
        Assert.True((await h.Engine.EndTransactionAsync(Answer(id, TransactionResolution.Commit, storedAt))).IsOk);
    }
}
