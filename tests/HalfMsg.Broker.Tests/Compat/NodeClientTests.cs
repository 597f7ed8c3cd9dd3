using System.Globalization;
using System.Text.Json;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Compat;

/// <summary>
/// The unmodified official Apache RocketMQ Node client (rocketmq-client-nodejs 1.0.8) against the real broker process.
/// Scripts live in tests/compat/node; each prints JSON lines, the last one carrying <c>result</c>.
/// </summary>
[Trait("Category", "Compat")]
public sealed class NodeClientTests(NodeClientFixture fixture) : IClassFixture<NodeClientFixture>
{
    private static readonly TimeSpan ScriptTimeout = TimeSpan.FromSeconds(45);
    private string Endpoint => fixture.Broker.Endpoint;

    private static string Unique(string prefix) => $"{prefix}_{Guid.NewGuid():N}"[..(prefix.Length + 13)];

    private async Task<NodeScript.Result> Run(string script, params string[] args)
    {
        NodeScript.Result result = await NodeScript.RunAsync(script, ScriptTimeout, args);
        Assert.True(result.ExitCode == 0 && result.Final.ValueKind != JsonValueKind.Undefined,
            $"{script} {string.Join(' ', args)} failed: {result.Describe()}\n--- broker ---\n{Tail(fixture.Broker.Output)}");
        return result;
    }

    private static string Tail(string s) => s.Length <= 3000 ? s : s[^3000..];

    private Task<NodeScript.Result> Collect(string topic, string group, int count, int timeoutMs, string? tag = null)
        => Run("simple.js", Endpoint, topic, group, "collect", JsonSerializer.Serialize(new { count, timeoutMs, tag = tag ?? "*" }));

    private Task<NodeScript.Result> Produce(string topic, object spec) => Run("produce.js", Endpoint, topic, JsonSerializer.Serialize(spec));

    private static List<JsonElement> Got(NodeScript.Result r) => [.. r.Final.GetProperty("got").EnumerateArray()];

    private static List<string> Bodies(NodeScript.Result r) => Got(r).Select(m => m.GetProperty("body").GetString()!).ToList();

    [Fact]
    public async Task Committed_transaction_is_visible_to_a_simple_consumer()
    {
        string topic = Unique("TxCommit");
        NodeScript.Result tx = await Run("tx.js", Endpoint, topic, "commit");
        string id = tx.Final.GetProperty("id").GetString()!;

        NodeScript.Result got = await Collect(topic, Unique("G"), 1, 10_000);

        JsonElement message = Assert.Single(Got(got));
        Assert.Equal(id, message.GetProperty("id").GetString());
        Assert.Equal("tx-commit", message.GetProperty("body").GetString());
        Assert.Equal(1, message.GetProperty("attempt").GetInt32());
        Assert.False(message.GetProperty("corrupted").GetBoolean());
    }

    [Fact]
    public async Task Rolled_back_transaction_is_never_delivered()
    {
        string topic = Unique("TxRollback");
        await Run("tx.js", Endpoint, topic, "rollback");
        // A marker sent afterwards: once it arrives, the rolled-back message would have arrived too.
        await Produce(topic, new { count = 1, prefix = "marker" });

        NodeScript.Result got = await Collect(topic, Unique("G"), 2, 4_000);

        Assert.Equal(["marker-0"], Bodies(got));
    }

    [Fact]
    public async Task Undecided_half_is_checked_back_and_the_commit_answer_makes_it_visible()
    {
        string topic = Unique("TxCheckCommit");
        NodeScript.Result tx = await Run("tx.js", Endpoint, topic, "check-commit", "15000");
        string id = tx.Final.GetProperty("id").GetString()!;
        JsonElement check = tx.Final.GetProperty("checks").EnumerateArray().First();
        Assert.Equal(id, check.GetProperty("id").GetString());
        Assert.Equal(topic, check.GetProperty("topic").GetString());
        Assert.False(check.GetProperty("corrupted").GetBoolean());
        // The check named the half by its check token after the id (the Node client says x-mq-language HTTP, not DOTNET),
        // and the client's verbatim echo of it committed the half (since the afternoon session of 2026-12-07).
        string checkedAs = tx.Final.GetProperty("checkTransactionIds").EnumerateArray().First().GetString()!;
        Assert.Matches("^" + System.Text.RegularExpressions.Regex.Escape(id) + "~ck[0-9]+$", checkedAs);

        NodeScript.Result got = await Collect(topic, Unique("G"), 1, 10_000);
        Assert.Equal(["tx-check-commit"], Bodies(got));
    }

    [Fact]
    public async Task Undecided_half_is_checked_back_and_the_rollback_answer_drops_it()
    {
        string topic = Unique("TxCheckRollback");
        NodeScript.Result tx = await Run("tx.js", Endpoint, topic, "check-rollback", "15000");
        Assert.NotEmpty(tx.Final.GetProperty("checks").EnumerateArray());
        await Produce(topic, new { count = 1, prefix = "marker" });

        NodeScript.Result got = await Collect(topic, Unique("G"), 2, 4_000);
        Assert.Equal(["marker-0"], Bodies(got));
    }

    [Fact]
    public async Task A_checker_answering_unknown_is_asked_again()
    {
        string topic = Unique("TxUnknown");
        NodeScript.Result tx = await Run("tx.js", Endpoint, topic, "check-unknown-then-commit", "20000");
        Assert.True(tx.Final.GetProperty("checks").GetArrayLength() >= 2, tx.Describe());

        NodeScript.Result got = await Collect(topic, Unique("G"), 1, 10_000);
        Assert.Equal(["tx-check-unknown-then-commit"], Bodies(got));
    }

    [Fact]
    public async Task When_the_sending_producer_is_gone_a_new_instance_of_the_group_receives_the_check()
    {
        string topic = Unique("TxOrphan");
        NodeScript.Result orphan = await Run("tx.js", Endpoint, topic, "orphan");
        string id = orphan.Final.GetProperty("id").GetString()!;

        NodeScript.Result checker = await Run("tx.js", Endpoint, topic, "checker-commit", "20000");
        Assert.Contains(checker.Final.GetProperty("checks").EnumerateArray(), c => c.GetProperty("id").GetString() == id);

        NodeScript.Result got = await Collect(topic, Unique("G"), 1, 10_000);
        Assert.Equal(["tx-orphan"], Bodies(got));
    }

    [Fact]
    public async Task Two_namespaces_with_the_same_topic_and_group_names_keep_their_transactions_checks_and_messages_apart()
    {
        string topic = Unique("TxNs");
        string group = Unique("G");
        NodeScript.Result r = await Run("namespace.js", Endpoint, topic, group, "tenant-a", "tenant-b", "20000");
        JsonElement ids = r.Final.GetProperty("ids");
        string aCommit = ids.GetProperty("aCommit").GetString()!, aChecked = ids.GetProperty("aChecked").GetString()!;
        string bCommit = ids.GetProperty("bCommit").GetString()!;

        // The undecided half of A was checked back with A's producer, under the topic's name as A knows it, not with B's.
        JsonElement check = Assert.Single(r.Final.GetProperty("checksA").EnumerateArray());
        Assert.Equal(aChecked, check.GetProperty("id").GetString());
        Assert.Equal(topic, check.GetProperty("topic").GetString());
        Assert.Empty(r.Final.GetProperty("checksB").EnumerateArray());

        List<JsonElement> gotA = [.. r.Final.GetProperty("gotA").EnumerateArray()];
        List<JsonElement> gotB = [.. r.Final.GetProperty("gotB").EnumerateArray()];
        Assert.Equal(new[] { aChecked, aCommit }.Order(), gotA.Select(m => m.GetProperty("id").GetString()!).Order());
        Assert.Equal([bCommit], gotB.Select(m => m.GetProperty("id").GetString()!));
        Assert.All(gotA.Concat(gotB), m => Assert.Equal(topic, m.GetProperty("topic").GetString()));
        Assert.All(gotA.Concat(gotB), m => Assert.False(m.GetProperty("corrupted").GetBoolean()));
    }

    [Fact]
    public async Task Simple_consumer_ack_change_invisible_duration_and_redelivery_count_attempts()
    {
        string topic = Unique("Simple");
        await Produce(topic, new { count = 1 });

        NodeScript.Result r = await Run("simple.js", Endpoint, topic, Unique("G"), "redeliver", "{}");

        List<JsonElement> got = Got(r);
        Assert.Equal([1, 2, 3], got.Select(m => m.GetProperty("attempt").GetInt32()));
        Assert.Single(got.Select(m => m.GetProperty("id").GetString()).Distinct());
        Assert.Contains(r.Lines, l => l.TryGetProperty("afterAck", out var n) && n.GetInt32() == 0);
        // The first handle was replaced by later leases: acking it is rejected, not silently accepted.
        Assert.Contains(r.Lines, l => l.TryGetProperty("staleAck", out var s) && s.GetString() != "ok");
    }

    [Fact]
    public async Task Push_consumer_listener_that_fails_once_gets_the_message_again()
    {
        string topic = Unique("PushRetry");
        await Produce(topic, new { count = 2 });

        NodeScript.Result r = await Run("push.js", Endpoint, topic, Unique("G"), "fail-first", JsonSerializer.Serialize(new { count = 2, runMs = 20_000 }));

        List<JsonElement> consumed = [.. r.Final.GetProperty("consumed").EnumerateArray()];
        Assert.Equal(2, consumed.Count);
        Assert.All(consumed, m => Assert.Equal(2, m.GetProperty("attempt").GetInt32()));
    }

    [Fact]
    public async Task Push_consumer_of_an_orderly_group_consumes_a_queue_one_message_after_another_in_order()
    {
        // An orderly group (consumeMessageOrderly): the broker says fifo in the subscription settings, so the official
        // client consumes with its FIFO consume service, and the broker holds each queue while a message of it is
        // leased. Messages without a message group, ordered by queue as a RocketMQ 4 MessageQueueSelector producer's
        // are. Until the order modes came the settings said fifo = false: the client ran a batch's listeners side by
        // side. Configured before its consumer starts, as an operator does.
        string topic = Unique("PushOrderly"), group = Unique("G");
        using (var http = new HttpClient { BaseAddress = new Uri(fixture.Broker.AdminUrl) })
        {
            using var set = await http.PostAsync($"/api/groups/{group}/order?mode=orderly", null);
            Assert.True(set.IsSuccessStatusCode, $"order mode not set: {(int)set.StatusCode} {await set.Content.ReadAsStringAsync()}");
        }
        await Produce(topic, new { count = 8 });

        NodeScript.Result r = await Run("push.js", Endpoint, topic, group, "slow", JsonSerializer.Serialize(new { count = 8, sleepMs = 100, runMs = 30_000 }));

        Assert.True(r.Final.GetProperty("consumed").GetArrayLength() == 8, $"not every message was consumed: {r.Describe()}");
        // Every listener call in the order it began, by queue (the receipt handle is v1.<queue>.<offset>.<lease>).
        var calls = r.Final.GetProperty("attempts").EnumerateArray().Select(a =>
        {
            string[] handle = a.GetProperty("handle").GetString()!.Split('.');
            return (Queue: int.Parse(handle[1], CultureInfo.InvariantCulture), Offset: long.Parse(handle[2], CultureInfo.InvariantCulture),
                Attempt: a.GetProperty("attempt").GetInt32(), Start: a.GetProperty("receivedMs").GetInt64(), End: a.GetProperty("endMs").GetInt64());
        }).ToList();
        Assert.Equal(8, calls.Count);
        Assert.All(calls, c => Assert.Equal(1, c.Attempt));
        foreach (var queue in calls.GroupBy(c => c.Queue))
        {
            var seen = queue.ToList();
            Assert.True(seen.Select(c => c.Offset).SequenceEqual(seen.Select(c => c.Offset).Order()),
                $"queue {queue.Key} consumed out of order: {string.Join(' ', seen.Select(c => c.Offset))}");
            for (int k = 1; k < seen.Count; k++)
                Assert.True(seen[k].Start >= seen[k - 1].End,
                    $"queue {queue.Key}: offset {seen[k].Offset} began at {seen[k].Start}, before offset {seen[k - 1].Offset} ended at {seen[k - 1].End}");
        }
    }

    [Fact]
    public async Task Push_consumer_listener_slower_than_the_lease_gets_the_message_once_and_its_ack_holds()
    {
        // Its own broker with a 3 s default lease: the push consumer names none and asks for auto-renewal, so the
        // broker must extend the lease while the 8 s listener runs, and accept its ack with the first handle.
        await using var broker = await BrokerProcess.StartAsync("--default-invisible-duration", "3s");
        string topic = Unique("PushSlow"), group = Unique("G");
        async Task<NodeScript.Result> On(string script, params string[] args)
        {
            NodeScript.Result result = await NodeScript.RunAsync(script, ScriptTimeout, args);
            Assert.True(result.ExitCode == 0 && result.Final.ValueKind != JsonValueKind.Undefined,
                $"{script} {string.Join(' ', args)} failed: {result.Describe()}\n--- broker ---\n{Tail(broker.Output)}");
            return result;
        }

        await On("produce.js", broker.Endpoint, topic, JsonSerializer.Serialize(new { count = 1 }));
        NodeScript.Result r = await On("push.js", broker.Endpoint, topic, group, "slow", JsonSerializer.Serialize(new { count = 1, sleepMs = 8_000, runMs = 30_000, settleMs = 1_000 }));
        List<int> attempts = [.. r.Final.GetProperty("attempts").EnumerateArray().Select(a => a.GetProperty("attempt").GetInt32())];
        Assert.Equal([1], attempts);

        // Acked: nothing comes back to the group once three more leases have passed.
        NodeScript.Result after = await On("simple.js", broker.Endpoint, topic, group, "collect", JsonSerializer.Serialize(new { count = 1, timeoutMs = 9_000, tag = "*" }));
        Assert.Empty(Got(after));
    }

    [Fact]
    public async Task Push_consumer_listener_that_always_fails_ends_in_the_dead_letter_queue()
    {
        string topic = Unique("PushDlq");
        string group = Unique("G");
        NodeScript.Result sent = await Produce(topic, new { count = 1, prefix = "poison" });
        string id = sent.Final.GetProperty("sent")[0].GetProperty("id").GetString()!;

        NodeScript.Result r = await Run("push.js", Endpoint, topic, group, "always-fail", JsonSerializer.Serialize(new { runMs = 6_000 }));
        List<int> attempts = [.. r.Final.GetProperty("attempts").EnumerateArray().Select(a => a.GetProperty("attempt").GetInt32())];
        Assert.Equal([1, 2, 3], attempts);

        NodeScript.Result dlq = await Collect("%DLQ%" + group, Unique("DlqReader"), 1, 10_000);
        JsonElement dead = Assert.Single(Got(dlq));
        Assert.Equal(id, dead.GetProperty("id").GetString());
        Assert.Equal("poison-0", dead.GetProperty("body").GetString());
    }

    [Fact]
    public async Task Tag_filter_delivers_only_matching_tags()
    {
        string topic = Unique("Tags");
        await Produce(topic, new { count = 6, tags = new[] { "A", "B", "C" } });

        NodeScript.Result got = await Collect(topic, Unique("G"), 4, 6_000, "A || C");

        Assert.Equal(["A", "A", "C", "C"], Got(got).Select(m => m.GetProperty("tag").GetString()).Order());
    }

    [Fact]
    public async Task Sql92_filter_delivers_only_messages_whose_properties_match()
    {
        // FilterExpression(sql, FilterType.SQL): until 2026-12-06 every such receive was ILLEGAL_FILTER_EXPRESSION.
        string topic = Unique("Sql");
        await Produce(topic, new
        {
            count = 8, tags = new[] { "B", "A" },
            props = new object[] { new { region = "eu", amount = "10" }, new { region = "eu", amount = "200" }, new { region = "us", amount = "300" }, new { amount = "400" } },
        });

        // Asks for one more than match, for 6 s: the other messages of the topic would have come within that time. m-3
        // and m-7 have no region: unknown OR true matches.
        NodeScript.Result got = await Run("simple.js", Endpoint, topic, Unique("G"), "collect",
            JsonSerializer.Serialize(new { count = 5, timeoutMs = 6_000, sql = "region = 'eu' AND amount > 100 OR TAGS = 'A' AND amount >= 400" }));

        Assert.Equal(["m-1", "m-3", "m-5", "m-7"], Bodies(got).Order());
    }

    [Fact]
    public async Task Fifo_messages_of_one_group_are_delivered_in_send_order()
    {
        string topic = Unique("Fifo");
        await Produce(topic, new { count = 12, groups = new[] { "g1", "g2", "g3" } });

        NodeScript.Result got = await Collect(topic, Unique("G"), 12, 20_000);

        List<JsonElement> messages = Got(got);
        Assert.Equal(12, messages.Select(m => m.GetProperty("id").GetString()).Distinct().Count());
        foreach (var group in messages.GroupBy(m => m.GetProperty("group").GetString()))
        {
            List<int> order = [.. group.Select(m => int.Parse(m.GetProperty("body").GetString()!["m-".Length..], System.Globalization.CultureInfo.InvariantCulture))];
            Assert.True(order.SequenceEqual(order.Order()), $"group {group.Key} delivered out of order: {string.Join(',', order)}");
        }
    }

    [Fact]
    public async Task Delay_message_arrives_no_earlier_than_its_delivery_time()
    {
        string topic = Unique("Delay");
        NodeScript.Result sent = await Produce(topic, new { count = 1, delayMs = 3000 });
        long sentMs = sent.Final.GetProperty("sent")[0].GetProperty("sentMs").GetInt64();

        NodeScript.Result got = await Collect(topic, Unique("G"), 1, 15_000);

        JsonElement message = Assert.Single(Got(got));
        long receivedMs = message.GetProperty("receivedMs").GetInt64();
        Assert.True(receivedMs - sentMs >= 2_900, $"delivered after {receivedMs - sentMs} ms");
    }
}
