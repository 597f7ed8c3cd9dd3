using System.Net;
using System.Net.Sockets;
using System.Text.RegularExpressions;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>GET /metrics in the Prometheus text format, scraped from a real in-process host.</summary>
public sealed class MetricsTests() : InProcessAdminHost("metrics")
{

    /// <summary>The value of one sample line, e.g. <c>name{topic="t"}</c>; labels the exporter adds (otel_scope_*) are ignored.</summary>
    private static double Sample(string text, string name, params (string Key, string Value)[] labels)
    {
        foreach (Match m in Regex.Matches(text, @"^(?<name>[a-z_]+)(\{(?<labels>[^}]*)\})? (?<value>\S+)", RegexOptions.Multiline))
        {
            if (m.Groups["name"].Value != name) continue;
            string l = m.Groups["labels"].Value;
            if (labels.All(p => l.Contains($"{p.Key}=\"{p.Value}\"", StringComparison.Ordinal)))
                return double.Parse(m.Groups["value"].Value, System.Globalization.CultureInfo.InvariantCulture);
        }
        throw new Xunit.Sdk.XunitException($"no sample {name} {string.Join(",", labels)} in:\n{text}");
    }

    [Fact]
    public async Task Metrics_use_rocketmq_names_where_they_exist_and_ours_for_transactions()
    {
        var engine = _host.Engine;
        for (int i = 0; i < 3; i++)
            Assert.True((await engine.SendHalfAsync(new MessageDraft { Topic = "metrics-orders", MessageId = $"m-{i}", Body = new byte[] { 1 } }, "metrics-producers", null, null)).IsOk);
        Assert.True((await engine.EndTransactionAsync("m-0", null, TransactionResolution.Commit, DecisionSource.Operator)).IsOk);
        Assert.True((await engine.EndTransactionAsync("m-1", null, TransactionResolution.Rollback, DecisionSource.Operator)).IsOk);
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = "metrics-orders", MessageId = "plain-1", Body = new byte[] { 2 } })).IsOk);
        var received = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "metrics-consumers", Topic = "metrics-orders", BatchSize = 1 });
        Assert.Single(received.Messages);

        var response = await _http.GetAsync("/metrics");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.StartsWith("text/plain", response.Content.Headers.ContentType?.MediaType);
        string text = await response.Content.ReadAsStringAsync();

        Assert.Equal(2, Sample(text, "rocketmq_messages_in_total", ("topic", "metrics-orders")));   // one commit + one plain send
        Assert.Equal(1, Sample(text, "rocketmq_messages_out_total"));
        Assert.Equal(4, Sample(text, "rocketmq_throughput_in_total", ("topic", "metrics-orders")));   // 3 halves + 1 send, 1 byte each
        // Lag counts what the group has not acknowledged: the in-flight one included (as RocketMQ's ack offset lag does).
        Assert.Equal(2, Sample(text, "rocketmq_consumer_lag_messages", ("topic", "metrics-orders"), ("consumer_group", "metrics-consumers")));
        Assert.Equal(1, Sample(text, "rocketmq_consumer_inflight_messages", ("topic", "metrics-orders"), ("consumer_group", "metrics-consumers")));
        Assert.Equal(1, Sample(text, "halfmsg_transactions_pending"));
        Assert.Equal(0, Sample(text, "halfmsg_transactions_parked"));
        Assert.Equal(3, Sample(text, "halfmsg_half_messages_stored_total"));
        Assert.Equal(1, Sample(text, "halfmsg_transaction_decisions_total", ("resolution", "commit"), ("source", "operator")));
        Assert.Equal(1, Sample(text, "halfmsg_transaction_decisions_total", ("resolution", "rollback"), ("source", "operator")));
        Assert.True(Sample(text, "halfmsg_log_size_bytes") > 0);
        Assert.True(Sample(text, "halfmsg_transactions_oldest_pending_age_seconds") >= 0);
        Assert.Contains("# TYPE rocketmq_consumer_lag_messages gauge", text);
        Assert.Contains("# TYPE rocketmq_messages_in_total counter", text);

        // Live values, not a cached scrape: deciding the last half shows at once.
        Assert.True((await engine.EndTransactionAsync("m-2", null, TransactionResolution.Commit, DecisionSource.Operator)).IsOk);
        string after = await _http.GetStringAsync("/metrics");
        Assert.Equal(0, Sample(after, "halfmsg_transactions_pending"));
        Assert.Equal(2, Sample(after, "halfmsg_transaction_decisions_total", ("resolution", "commit"), ("source", "operator")));
    }

    /// <summary>
    /// RocketMQ 5 counts rocketmq_messages_in (and throughput_in) for sends to neither a %RETRY% nor a %DLQ% topic: a
    /// message sent back for a retry was counted once already, when it came in. Until 2026-12-06 the %RETRY% topics had
    /// series here (a send-back, or a RocketMQ 4 client's own send to the retry topic when its send-back failed), so a
    /// dashboard's sum over topics counted each retried message again.
    /// </summary>
    [Fact]
    public async Task Messages_sent_to_a_retry_topic_are_not_counted_as_messages_in()
    {
        var engine = _host.Engine;
        const string topic = "metrics-retried", group = "metrics-retry-consumers", retry = "%RETRY%" + group;
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = topic, MessageId = "retried-1", Body = new byte[] { 1 } })).IsOk);
        var pulled = await engine.PullAsync(topic, 0, 0, 32, HalfMsg.Broker.Core.Delivery.TagFilter.All, TimeSpan.Zero);
        var message = Assert.Single(pulled.Messages);
        Assert.True((await engine.SendBackAsync(group, message.PhysicalOffset, 1, 16, topic)).Error.IsOk);
        // What a RocketMQ 4 client does when its send-back fails: it sends the message to the retry topic itself.
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = retry, MessageId = "retried-2", Body = new byte[] { 1, 2 } })).IsOk);
        // The send-back reaches the retry topic after its delay (level 1: 1 s).
        var within = System.Diagnostics.Stopwatch.StartNew();
        while (!engine.ListTopics().Any(t => t.Name == retry && t.Queues.Sum(q => q.MaxOffset) == 2))
        {
            Assert.True(within.Elapsed < TimeSpan.FromSeconds(30), "the sent-back message did not reach the retry topic");
            await Task.Delay(50);
        }

        string text = await _http.GetStringAsync("/metrics");
        Assert.Equal(1, Sample(text, "rocketmq_messages_in_total", ("topic", topic)));
        Assert.Equal(1, Sample(text, "rocketmq_throughput_in_total", ("topic", topic)));
        Assert.DoesNotContain($"topic=\"{retry}\"", text);
    }

    [Fact]
    public async Task Half_age_log_commit_and_retention_metrics_show_plausible_values_after_traffic()
    {
        var engine = _host.Engine;
        for (int i = 0; i < 3; i++)
            Assert.True((await engine.SendHalfAsync(new MessageDraft { Topic = "metrics-age", MessageId = $"age-{i}", Body = new byte[] { 1 } }, "metrics-producers", null, null)).IsOk);
        var stored = DateTimeOffset.UtcNow;   // after the last half was stored
        // Wait for a measurable age (a condition, not a fixed sleep: at least 200 ms since the halves were stored).
        while (DateTimeOffset.UtcNow - stored < TimeSpan.FromMilliseconds(200)) await Task.Delay(10);
        Assert.True((await engine.EndTransactionAsync("age-0", null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True((await engine.EndTransactionAsync("age-1", null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
        Assert.True((await engine.EndTransactionAsync("age-2", null, TransactionResolution.Rollback, DecisionSource.Operator)).IsOk);
        // Concurrent writers share group commits.
        await Task.WhenAll(Enumerable.Range(0, 64).Select(i => engine.SendAsync(new MessageDraft { Topic = "metrics-batch", MessageId = $"batch-{i}", Body = new byte[100] }).AsTask()));
        long cutAt = engine.LogTailAddress;
        var written = new System.Collections.Concurrent.ConcurrentQueue<HalfMsg.Broker.Core.BrokerEngine.CheckpointFacts>();
        engine.CheckpointWritten += written.Enqueue;
        Assert.True(await engine.TruncateBeforeAsync(cutAt) >= 0, "the retention cut was postponed");
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = "metrics-batch", MessageId = "after-cut", Body = new byte[1] })).IsOk);
        await engine.CheckpointAsync();   // one message on the cut's checkpoint: a delta
        engine.CheckpointWritten -= written.Enqueue;
        long appended = engine.Metrics.RecordsAppended;

        string text = await _http.GetStringAsync("/metrics");
        double ageCount = Sample(text, "halfmsg_half_age_seconds_count", ("resolution", "commit"), ("source", "producer"));
        double ageSum = Sample(text, "halfmsg_half_age_seconds_sum", ("resolution", "commit"), ("source", "producer"));
        Assert.Equal(2, ageCount);
        Assert.InRange(ageSum / ageCount, 0.19, 120);   // at least the wait (ms rounding aside), at most the test's own run time
        Assert.Equal(1, Sample(text, "halfmsg_half_age_seconds_count", ("resolution", "rollback"), ("source", "operator")));
        // Cumulative buckets: none of the 2 commits is younger than 100 ms; all are under an hour.
        Assert.Equal(0, Sample(text, "halfmsg_half_age_seconds_bucket", ("resolution", "commit"), ("source", "producer"), ("le", "0.1")));
        Assert.Equal(2, Sample(text, "halfmsg_half_age_seconds_bucket", ("resolution", "commit"), ("source", "producer"), ("le", "3600")));
        Assert.Contains("# TYPE halfmsg_half_age_seconds histogram", text);

        double commits = Sample(text, "halfmsg_log_commit_duration_seconds_count");
        double commitSeconds = Sample(text, "halfmsg_log_commit_duration_seconds_sum");
        Assert.True(commits >= 2, $"{commits} commits");
        Assert.InRange(commitSeconds / commits, 1e-7, 5);   // a real fsync: more than nothing, less than the commit timeout
        double batches = Sample(text, "halfmsg_log_commit_batch_records_count");
        double batched = Sample(text, "halfmsg_log_commit_batch_records_sum");
        Assert.True(batches >= 1 && batches <= commits, $"{batches} batches, {commits} commits");
        // Every record appended before the cut's commit was covered by some commit; none is counted twice.
        Assert.InRange(batched, 67, appended);
        Assert.True(batched / batches >= 1);

        Assert.Equal(1, Sample(text, "halfmsg_retention_cuts_total"));
        Assert.InRange(Sample(text, "halfmsg_retention_cut_bytes_total"), 64 * 100, cutAt);
        Assert.Equal(engine.LogBeginAddress, Sample(text, "halfmsg_log_head_address_bytes"));
        // The 64 batch messages and the committed halves had no consumer group: the cut expired them.
        Assert.True(Sample(text, "halfmsg_messages_expired_total") >= 64);
        Assert.True(Sample(text, "halfmsg_message_index_messages") >= 67);

        // The cut wrote two checkpoints (one before it, one after) and held the engine lock once; one more came after.
        long whole = engine.Metrics.CheckpointsWhole, delta = engine.Metrics.CheckpointsDelta;
        Assert.True(whole >= 1 && delta >= 1 && whole + delta >= 3, $"{whole} whole, {delta} delta checkpoints");
        Assert.Equal(whole, Sample(text, "halfmsg_checkpoints_total", ("kind", "whole")));
        Assert.Equal(delta, Sample(text, "halfmsg_checkpoints_total", ("kind", "delta")));
        // Every checkpoint since the meter was attached is in each histogram once (the host attaches it before any).
        Assert.Equal(whole + delta, Sample(text, "halfmsg_checkpoint_duration_seconds_count"));
        Assert.Equal(whole + delta, Sample(text, "halfmsg_checkpoint_lock_hold_seconds_count"));
        Assert.Equal(whole + delta, Sample(text, "halfmsg_checkpoint_size_bytes_count"));
        // These checkpoints are all there were, and each histogram sums what each of them reported.
        Assert.Equal(whole + delta, written.Count);
        Assert.Equal(written.Sum(c => c.LongestHoldMicros) / 1e6, Sample(text, "halfmsg_checkpoint_lock_hold_seconds_sum"), 9);
        Assert.Equal(written.Sum(c => c.Seconds), Sample(text, "halfmsg_checkpoint_duration_seconds_sum"), 9);
        Assert.Equal(written.Sum(c => c.Bytes), Sample(text, "halfmsg_checkpoint_size_bytes_sum"));
        Assert.Equal(engine.Metrics.LastCheckpointBytes, written.Last().Bytes);
        Assert.Equal(engine.Metrics.LastCheckpointPauseMicros, written.Last().LongestHoldMicros);
        Assert.All(written, c => Assert.True(c.Bytes > 0 && c.LongestHoldMicros > 0, $"{c}"));
        Assert.Equal(1, Sample(text, "halfmsg_retention_cut_lock_hold_seconds_count"));
        Assert.Equal(engine.Metrics.LastRetentionCutPauseMicros / 1e6, Sample(text, "halfmsg_retention_cut_lock_hold_seconds_sum"), 9);
        Assert.True(engine.Metrics.LastRetentionCutPauseMicros > 0);
        Assert.Contains("# TYPE halfmsg_checkpoint_lock_hold_seconds histogram", text);

        // /api/stats counts the same holds in power-of-two buckets of microseconds (what the bench compares across a row).
        using var stats = System.Text.Json.JsonDocument.Parse(await _http.GetStringAsync("/api/stats"));
        long Total(string name) => stats.RootElement.GetProperty(name).EnumerateObject().Sum(p => p.Value.GetInt64());
        Assert.Equal(whole + delta, Total("checkpointLockHold"));
        Assert.Equal(1, Total("retentionCutLockHold"));
        // And every log commit's duration: as many as the commit histogram counted a moment before (a background commit
        // may have come since).
        Assert.InRange(Total("logCommitDuration"), (long)commits, (long)commits + 10);
        int cutBucket = HalfMsg.Broker.Core.Diagnostics.MicrosHistogram.BucketOf(engine.Metrics.LastRetentionCutPauseMicros);
        Assert.Equal(1, stats.RootElement.GetProperty("retentionCutLockHold").GetProperty($"b{cutBucket}").GetInt64());
        // No append waited for a page write while holding the engine lock (the log's backpressure kept ahead of them).
        Assert.Equal(0, stats.RootElement.GetProperty("logAppendsThatWaited").GetInt64());
        // Sends that waited for room outside the lock are reported beside it.
        Assert.Equal(System.Text.Json.JsonValueKind.Number, stats.RootElement.GetProperty("logReservationsThatWaited").ValueKind);
    }
}
