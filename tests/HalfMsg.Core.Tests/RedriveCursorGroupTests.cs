using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// Review (ops, 2026-12-06): the re-drive's internal cursor (%REDRIVE%A) was an ordinary lease group on %DLQ%A: the
/// dashboard's group list and /metrics showed it, it counted toward MaxConsumerGroups (whose refusal tells operators to
/// delete groups), and POST /api/groups/{group}/delete (halfmsg group delete) forgot it like any group. The next re-drive
/// then started the cursor at the earliest retained dead letter and put back every dead letter that was already
/// re-driven: group A received them twice. A reset to the earliest did the same; a start from the latest skipped them.
/// </summary>
public sealed class RedriveCursorGroupTests
{
    /// <summary>Group A lets one message run out of attempts into %DLQ%A, and a re-drive puts it back (A acks it).</summary>
    private static async Task OneRedrivenDeadLetterAsync(EngineHarness h)
    {
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "poison"))).IsOk);
        Assert.Single(await h.ReceiveAsync("A", "t", invisible: TimeSpan.FromSeconds(1)));
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A"));

        var first = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.Equal(1, first.Redriven);
        var again = Assert.Single(await h.ReceiveAsync("A", "t"));
        Assert.True((await h.Engine.AckAsync("A", "t", again.ReceiptHandle)).IsOk);
    }

    [Fact]
    public async Task Deleting_the_redrive_cursor_group_does_not_make_the_next_redrive_put_dead_letters_back_again()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        await OneRedrivenDeadLetterAsync(h);

        // The cursor is not listed as a consumer group of %DLQ%A (dashboard, /metrics, /api/topics) ...
        Assert.DoesNotContain("%REDRIVE%A", h.Engine.ListTopics().Single(t => t.Name == "%DLQ%A").ConsumerGroups);
        Assert.Contains("ops", h.Engine.ListTopics().Single(t => t.Name == "%DLQ%A").ConsumerGroups);
        // ... and an operator's "group delete" of it is refused, saying why.
        var deleted = await h.Engine.DeleteGroupAsync("%REDRIVE%A");
        var second = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(!deleted.IsOk || second.Redriven == 0,
            $"group delete of the cursor was accepted and the next re-drive put {second.Redriven} already re-driven dead letter(s) back");
        Assert.Equal(BrokerStatus.BadRequest, deleted.Status);
        Assert.Contains("re-drive cursor", deleted.Message);
    }

    [Fact]
    public async Task Resetting_or_starting_a_redrive_cursor_or_its_sibling_is_refused()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1 });
        await OneRedrivenDeadLetterAsync(h);
        Assert.Equal(0, (await h.Engine.RedriveDeadLettersAsync("A", "t", 100)).Redriven); // creates the sibling %REDRIVE%A|t

        foreach (string cursor in new[] { "%REDRIVE%A", "%REDRIVE%A|t" })
        {
            Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.ResetGroupAsync(cursor, "%DLQ%A", GroupStartFrom.Earliest)).Status);
            Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.DeleteGroupAsync(cursor)).Status);
            Assert.Equal(BrokerStatus.BadRequest, (await h.Engine.StartGroupAsync(cursor, "t", GroupStartFrom.Latest)).Status);
        }
        Assert.Equal(0, (await h.Engine.RedriveDeadLettersAsync("A", null, 100)).Redriven);
        Assert.Equal(0, (await h.Engine.RedriveDeadLettersAsync("A", "t", 100)).Redriven);
    }

    /// <summary>The limit's refusal tells operators to delete unused groups: the cursors, which they cannot delete and do
    /// not see listed, are not counted, and a re-drive at the limit still runs.</summary>
    [Fact]
    public async Task Redrive_cursors_do_not_count_toward_the_consumer_group_limit()
    {
        // A on t and ops on %DLQ%A: the limit of 2 is reached by the operator's groups alone.
        await using var h = await EngineHarness.StartAsync(o => o with { MaxDeliveryAttempts = 1, MaxConsumerGroups = 2 });
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "poison"))).IsOk);
        Assert.Single(await h.ReceiveAsync("A", "t", invisible: TimeSpan.FromSeconds(1)));
        h.Clock.Advance(TimeSpan.FromSeconds(2));
        h.Engine.RunSweep();
        Assert.Single(await h.ReceiveWhenVisibleAsync("ops", "%DLQ%A"));

        var redrive = await h.Engine.RedriveDeadLettersAsync("A", null, 100);
        Assert.True(redrive.Error.IsOk, redrive.Error.ToString());
        Assert.Equal(1, redrive.Redriven);
        // Deleting ops frees one place: with the cursor counted, B would still be refused.
        Assert.True((await h.Engine.DeleteGroupAsync("ops")).IsOk);
        Assert.Single(await h.ReceiveAsync("B", "t"));
    }

    /// <summary>Cursors are left out of the limit, so a client may not make one: without this, any client could start
    /// groups past the limit by naming them %REDRIVE%…, or receive and ack under a cursor's name.</summary>
    [Fact]
    public async Task A_client_cannot_receive_or_commit_offsets_under_a_cursor_name()
    {
        await using var h = await EngineHarness.StartAsync();
        Assert.True((await h.Engine.SendAsync(h.Draft("t", "m"))).IsOk);
        var receive = await h.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "%REDRIVE%x", Topic = "t" });
        Assert.Equal(BrokerStatus.IllegalConsumerGroup, receive.Error.Status);
        Assert.Contains("reserved", receive.Error.Message);
        Assert.Equal(BrokerStatus.IllegalConsumerGroup, (await h.Engine.CommitConsumerOffsetAsync("%REDRIVE%x", "t", 0, 1)).Status);
        Assert.Null(h.Engine.FindGroup("%REDRIVE%x"));
    }
}
