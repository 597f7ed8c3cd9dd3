using System.Diagnostics;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>A Remoting broker whose transaction timeout (60 s) is far longer than the immunity the test asks for.</summary>
public sealed class LongTransactionTimeoutRemotingBrokerFixture : RemotingBrokerFixture
{
    // The last flag wins (BrokerConfiguration.ParseCommandLine): this replaces the fixture's 1 s.
    protected override string[] ExtraArgs => ["--transaction-timeout", "60s"];
}

/// <summary>
/// A RocketMQ 4 producer's CHECK_IMMUNITY_TIME_IN_SECONDS replaces the broker's transaction timeout, as Apache's broker
/// reads it (TransactionalMessageServiceImpl.check, getImmunityTime), also when it is shorter. Until the afternoon session
/// of 2026-12-06 the longer of the two applied (the core's and gRPC's tests: BoundsTests, HandlerTests); this is the
/// Remoting path end to end, through a real broker process.
/// </summary>
public sealed class RemotingCheckImmunityTests(LongTransactionTimeoutRemotingBrokerFixture broker) : IClassFixture<LongTransactionTimeoutRemotingBrokerFixture>
{
    [Fact]
    public async Task A_half_with_a_one_second_immunity_is_checked_back_long_before_the_transaction_timeout()
    {
        await using var c = await broker.ConnectAsync();
        var p = new RemotingTransactionProducer(c, Unique("PG"));
        await p.HeartbeatAsync();
        var clock = Stopwatch.StartNew();
        var (uniq, sent) = await p.SendHalfAsync(Unique("TxImmunity"), "undecided", more: (MessageConst.CheckImmunityTimeInSeconds, "1"));
        Assert.Equal(ResponseCode.Success, sent.Code);

        // Due 1 s after the store; the broker's check interval is 1 s. The bound is generous for a busy machine and still
        // half the 60 s timeout, after which the check would come without the immunity.
        var (check, _) = await p.AnswerCheckAsync(MessageSysFlag.TransactionRollbackType, TimeSpan.FromSeconds(30));
        Assert.Equal(uniq, check.Get("transactionId"));
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(30), $"first check after {clock.Elapsed}");
    }
}
