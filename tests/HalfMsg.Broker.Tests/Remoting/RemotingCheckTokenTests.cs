using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>A Remoting broker that remembers the fewest decisions it allows (1,000), so a test can have one forgotten.</summary>
public sealed class FewDecisionsRemotingBrokerFixture : RemotingBrokerFixture
{
    protected override string[] ExtraArgs => ["--max-remembered-decisions", "1000"];
}

/// <summary>
/// A UNIQ_KEY is taken again once its decision is forgotten. A CHECK_TRANSACTION_STATE carries the half's check token
/// in <c>tranStateTableOffset</c>, which Java's <c>DefaultMQProducerImpl.checkTransactionState</c> echoes in its
/// END_TRANSACTION: a late answer to the check of the EARLIER half of the key is refused once the new half has had its
/// own check. Until the midday session of 2026-12-07's check tokens it decided the new half (the check of the new half was
/// taken as the one it answered; the offsets it echoed were not compared).
/// </summary>
public sealed class RemotingCheckTokenTests(FewDecisionsRemotingBrokerFixture broker) : IClassFixture<FewDecisionsRemotingBrokerFixture>
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    /// <summary>1,000 decisions of other ids, in two batches: the oldest decision (the first half's) is forgotten.</summary>
    private async Task ForgetDecisionsAsync(string topic)
    {
        var halves = Enumerable.Range(0, 1_000).Select(i => new HalfDraft(new MessageDraft
        {
            Topic = topic, MessageId = $"{topic}-other-{i}", Body = new byte[] { 1 },
        }, "other-producers", null, null)).ToList();
        Assert.All(await broker.Host.Engine.SendHalvesAsync(halves), r => Assert.True(r.IsOk, r.Error.ToString()));
        var decisions = halves.Select(h => new DecisionRequest(h.Message.MessageId, null, TransactionResolution.Rollback, DecisionSource.Client)).ToList();
        Assert.All(await broker.Host.Engine.EndTransactionsAsync(decisions), r => Assert.True(r.IsOk, r.Error.ToString()));
    }

    [Fact]
    public async Task A_late_answer_to_the_check_of_an_earlier_half_of_the_key_is_refused_after_the_new_half_was_checked()
    {
        string topic = Unique("TxToken");
        var c = await broker.ConnectAsync();
        await using var _ = c;
        var p = new RemotingTransactionProducer(c, Unique("PG"));
        await p.HeartbeatAsync();
        string uniq = Guid.NewGuid().ToString("N").ToUpperInvariant();

        // The first half is checked; its checker is slow. Its producer commits it meanwhile, and the decision is forgotten.
        var (_, first) = await p.SendHalfWithKeyAsync(uniq, topic, "FIRST");
        Assert.Equal(ResponseCode.Success, first.Code);
        var oldCheck = await c.NextServerRequestAsync(RequestCode.CheckTransactionState, Wait);
        Assert.Equal(uniq, oldCheck.Get("transactionId"));
        var commit = await p.EndAsync(uniq, first.Get("queueOffset")!, first.Get("msgId")!, MessageSysFlag.TransactionCommitType, fromCheck: false, oneway: false);
        Assert.Equal(ResponseCode.Success, commit!.Code);
        await ForgetDecisionsAsync(topic);

        // The key is sent again; the new half has its own check.
        var (_, second) = await p.SendHalfWithKeyAsync(uniq, topic, "SECOND");
        Assert.True(second.Code == ResponseCode.Success, second.Remark);
        RemotingCommand newCheck;
        while (true)
        {
            newCheck = await c.NextServerRequestAsync(RequestCode.CheckTransactionState, Wait);
            if (BodyOf(Assert.Single(StoredMessageCodec.DecodeAll(newCheck.Body.Span))) == "SECOND") break;
        }
        Assert.NotEqual(oldCheck.Get("tranStateTableOffset"), newCheck.Get("tranStateTableOffset"));
        // The new half's token is what its send result gave as queueOffset (what a Java producer echoes for its own decision).
        Assert.Equal(second.Get("queueOffset"), newCheck.Get("tranStateTableOffset"));

        // The late Rollback for the FIRST half's check, as Java answers it: refused; the new half is still pending.
        var late = await p.EndAsync(uniq, oldCheck.Get("tranStateTableOffset")!, oldCheck.Get("offsetMsgId")!, MessageSysFlag.TransactionRollbackType,
            fromCheck: true, oneway: false);
        Assert.True(late!.Code == ResponseCode.SystemError, $"the late answer to the first half's check was taken for the second half: {late.Code} {late.Remark}");
        Assert.NotNull(broker.Host.Engine.FindTransaction(uniq));

        // The new half's own check's answer decides it.
        var own = await p.EndAsync(uniq, newCheck.Get("tranStateTableOffset")!, newCheck.Get("offsetMsgId")!, MessageSysFlag.TransactionCommitType,
            fromCheck: true, oneway: false);
        Assert.True(own!.Code == ResponseCode.Success, own.Remark);
        var got = await EventuallyAsync(() => PullAllAsync(c, "G", topic), l => l.Count == 2, Wait, "both committed halves of the key");
        Assert.Equal(["FIRST", "SECOND"], got.Select(BodyOf).Order());
    }
}
