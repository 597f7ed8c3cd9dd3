using System.Text.Json;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Cli;

namespace HalfMsg.Ops.Tests;

/// <summary>The <c>halfmsg</c> CLI against a real broker (in-process, loopback, credentials on).</summary>
public sealed class CliTests(OpsBroker broker) : IClassFixture<OpsBroker>
{
    private sealed record Run(int ExitCode, string Out, string Err);

    private async Task<Run> Halfmsg(params string[] args) => await HalfmsgWith(OpsBroker.Secret, args);

    private async Task<Run> HalfmsgWith(string? secret, params string[] args)
    {
        var env = new Dictionary<string, string?>
        {
            ["HALFMSG_URL"] = broker.Url,
            ["HALFMSG_ACCESS_KEY"] = secret is null ? null : OpsBroker.AccessKey,
            ["HALFMSG_SECRET"] = secret,
        };
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await HalfMsgCli.RunAsync(args, output, error, name => env.GetValueOrDefault(name));
        return new Run(code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Topics_prints_a_table_with_message_counts()
    {
        var run = await Halfmsg("topics");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var line = run.Out.Split('\n').Single(l => l.StartsWith(OpsBroker.PendingTopic + " ", StringComparison.Ordinal));
        Assert.Matches(@"^ops-payments\s+2\s+2\s+2\s+ops-consumers\s*$", line);
        Assert.StartsWith("TOPIC", run.Out);
    }

    [Fact]
    public async Task Tx_pending_and_parked_list_the_halves_and_json_is_the_apis_own()
    {
        var parked = await Halfmsg("tx", "parked");
        Assert.Equal(ExitCodes.Ok, parked.ExitCode);
        for (int i = 0; i < OpsBroker.ParkedCount; i++) Assert.Contains($"ops-parked-{i}", parked.Out);
        Assert.Contains($"{OpsBroker.ParkedCount} shown of {OpsBroker.ParkedCount} parked", parked.Out);

        var pending = await Halfmsg("tx", "pending", "--json", "--topic", OpsBroker.PendingTopic);
        Assert.Equal(ExitCodes.Ok, pending.ExitCode);
        using var doc = JsonDocument.Parse(pending.Out);
        Assert.Equal(OpsBroker.PendingCount, doc.RootElement.GetProperty("items").GetArrayLength());
        Assert.All(doc.RootElement.GetProperty("items").EnumerateArray(), i => Assert.Equal(OpsBroker.PendingTopic, i.GetProperty("topic").GetString()));
    }

    [Fact]
    public async Task Tx_pending_all_pages_through_with_progress_on_stderr()
    {
        var run = await Halfmsg("tx", "parked", "--all", "--limit", "1");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains($"{OpsBroker.ParkedCount} shown of {OpsBroker.ParkedCount} parked", run.Out);
        Assert.Contains("fetched 1 of 3 parked", run.Err);
        Assert.Contains("fetched 2 of 3 parked", run.Err);
    }

    [Fact]
    public async Task Tx_show_resume_commit_and_rollback_have_meaningful_exit_codes()
    {
        var show = await Halfmsg("tx", "show", "ops-pending-0");
        Assert.Equal(ExitCodes.Ok, show.ExitCode);
        Assert.Contains("ops-idle-producers", show.Out);

        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("tx", "show", "no-such-tx")).ExitCode);
        var missing = await Halfmsg("tx", "commit", "no-such-tx");
        Assert.Equal(ExitCodes.NotFound, missing.ExitCode);
        Assert.Contains("no-such-tx", missing.Err);

        // A half of its own, so the counts other tests read do not move.
        Assert.True((await broker.Engine.SendHalfAsync(OpsBroker.Draft("ops-cli-decide", "cli-decide-1"), "ops-cli-producers", null, null)).IsOk);
        var commit = await Halfmsg("tx", "commit", "cli-decide-1");
        Assert.Equal(ExitCodes.Ok, commit.ExitCode);
        Assert.Equal("cli-decide-1: commit", commit.Out.Trim());
        var again = await Halfmsg("tx", "commit", "cli-decide-1");
        Assert.Equal(ExitCodes.Ok, again.ExitCode);
        Assert.Contains("already decided so", again.Out);
        Assert.Equal(ExitCodes.Conflict, (await Halfmsg("tx", "rollback", "cli-decide-1")).ExitCode);
        Assert.Null(broker.Engine.FindTransaction("cli-decide-1"));

        // Resume is for parked halves: on a pending one the broker says so and changes nothing.
        var resume = await Halfmsg("tx", "resume", "ops-pending-0");
        Assert.Equal(ExitCodes.Failed, resume.ExitCode);
        Assert.Contains("not parked", resume.Err);
    }

    [Fact]
    public async Task Group_lag_and_stats_show_the_consumer_group_and_counters()
    {
        var lag = await Halfmsg("group", "lag", OpsBroker.Consumers);
        Assert.Equal(ExitCodes.Ok, lag.ExitCode);
        Assert.Contains("total lag 2;", lag.Out);
        // Nobody configured its order mode: the broker's --default-group-order (message-group) is shown.
        Assert.Contains("order: default (message-group)", lag.Out);
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("group", "lag", "nobody")).ExitCode);

        var stats = await Halfmsg("stats", "--json");
        Assert.Equal(ExitCodes.Ok, stats.ExitCode);
        using var doc = JsonDocument.Parse(stats.Out);
        Assert.True(doc.RootElement.GetProperty("halvesStored").GetInt64() >= OpsBroker.ParkedCount + OpsBroker.PendingCount);
    }

    /// <summary>
    /// The admin port answers HTTPS too (<c>--admin-tls auto</c>, its default), with the broker's self-signed
    /// certificate when none is configured: the CLI refuses it unless told to trust it (<c>--admin-ca</c>: the
    /// certificate as PEM, or the broker's own <c>&lt;data&gt;/tls/self-signed.pfx</c>) or not to verify (<c>--insecure</c>,
    /// with a warning). Until 2026-12-07 the port spoke plain HTTP only.
    /// </summary>
    [Fact]
    public async Task Group_lag_over_https_with_the_brokers_self_signed_certificate_given_by_admin_ca()
    {
        string https = $"https://127.0.0.1:{broker.HttpPort}";
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-cli-ca-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        try
        {
            var untrusted = await Halfmsg("--url", https, "group", "lag", OpsBroker.Consumers);
            Assert.Equal(ExitCodes.Unreachable, untrusted.ExitCode);
            Assert.Contains("--admin-ca", untrusted.Err);

            var insecure = await Halfmsg("--url", https, "--insecure", "group", "lag", OpsBroker.Consumers);
            Assert.True(insecure.ExitCode == ExitCodes.Ok, insecure.Err);
            Assert.Contains("total lag 2;", insecure.Out);
            Assert.Contains("warning: --insecure", insecure.Err);

            // The certificate the broker keeps in its data dir (made at the first TLS connection), as PEM and as it is.
            string kept = Path.Combine(broker.Host.Options.DataDir, "tls", "self-signed.pfx");
            string pem = Path.Combine(dir, "broker.pem");
            using (var certificate = System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12FromFile(kept, null))
                File.WriteAllText(pem, certificate.ExportCertificatePem());
            foreach (string ca in new[] { pem, kept })
            {
                var lag = await Halfmsg("--url", https, "--admin-ca", ca, "group", "lag", OpsBroker.Consumers);
                Assert.True(lag.ExitCode == ExitCodes.Ok, lag.Err);
                Assert.Contains("total lag 2;", lag.Out);
                Assert.Equal("", lag.Err);
            }

            // Another certificate is not the broker's: refused. A file that is not there: a usage error naming the option.
            string other = Path.Combine(dir, "other.pem");
            using (var key = System.Security.Cryptography.ECDsa.Create())
            {
                var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=localhost", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
                using var made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
                File.WriteAllText(other, made.ExportCertificatePem());
            }
            Assert.Equal(ExitCodes.Unreachable, (await Halfmsg("--url", https, "--admin-ca", other, "group", "lag", OpsBroker.Consumers)).ExitCode);
            var missing = await Halfmsg("--url", https, "--admin-ca", Path.Combine(dir, "nope.pem"), "group", "lag", OpsBroker.Consumers);
            Assert.Equal(ExitCodes.Usage, missing.ExitCode);
            Assert.Contains("--admin-ca: no file", missing.Err);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// <c>--admin-ca</c> (or <c>HALFMSG_ADMIN_CA</c>) with an <c>http://</c> URL is a usage error naming the option and
    /// the URL, before anything is sent: the operator pinned a certificate and so expects the broker to be verified,
    /// which plain HTTP cannot do (and the credentials go in clear). <c>--insecure</c> with <c>http://</c> asks for
    /// less than plain HTTP already gives, so it runs, with a warning that it does nothing. Until 2026-12-07 both were
    /// ignored silently.
    /// </summary>
    [Fact]
    public async Task Admin_ca_with_an_http_url_is_a_usage_error_and_insecure_a_warning()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-cli-http-ca-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(dir);
        try
        {
            string pem = Path.Combine(dir, "broker.pem");
            using (var key = System.Security.Cryptography.ECDsa.Create())
            {
                var request = new System.Security.Cryptography.X509Certificates.CertificateRequest("CN=localhost", key, System.Security.Cryptography.HashAlgorithmName.SHA256);
                using var made = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
                File.WriteAllText(pem, made.ExportCertificatePem());
            }
            Assert.StartsWith("http://", broker.Url);
            var pinned = await Halfmsg("--url", broker.Url, "--admin-ca", pem, "stats");
            Assert.Equal(ExitCodes.Usage, pinned.ExitCode);
            Assert.Contains("--admin-ca", pinned.Err);
            Assert.Contains("plain HTTP", pinned.Err);
            Assert.Equal("", pinned.Out);

            // From the environment too (HALFMSG_URL is the fixture's http:// URL).
            var env = new Dictionary<string, string?>
            {
                ["HALFMSG_URL"] = broker.Url,
                ["HALFMSG_ACCESS_KEY"] = OpsBroker.AccessKey,
                ["HALFMSG_SECRET"] = OpsBroker.Secret,
                ["HALFMSG_ADMIN_CA"] = pem,
            };
            using (var output = new StringWriter())
            using (var error = new StringWriter())
            {
                Assert.Equal(ExitCodes.Usage, await HalfMsgCli.RunAsync(["stats"], output, error, name => env.GetValueOrDefault(name)));
                Assert.Contains("HALFMSG_ADMIN_CA", error.ToString());
            }

            var insecure = await Halfmsg("--url", broker.Url, "--insecure", "stats", "--json");
            Assert.True(insecure.ExitCode == ExitCodes.Ok, insecure.Err);
            Assert.Contains("warning: --insecure does nothing with an http:// --url", insecure.Err);
            using var doc = JsonDocument.Parse(insecure.Out);
            Assert.True(doc.RootElement.TryGetProperty("halvesStored", out _));

            // Without either, plain HTTP runs quietly as before.
            var plain = await Halfmsg("--url", broker.Url, "stats", "--json");
            Assert.Equal(ExitCodes.Ok, plain.ExitCode);
            Assert.Equal("", plain.Err);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Group_lag_shows_a_configured_order_mode()
    {
        // A group of its own, configured before it receives: no other test's group changes mode.
        Assert.Equal(ExitCodes.Ok, (await Halfmsg("group", "order", "ops-cli-orderly", "orderly")).ExitCode);
        var lag = await Halfmsg("group", "lag", "ops-cli-orderly");
        Assert.Equal(ExitCodes.Ok, lag.ExitCode);
        Assert.Contains("order: orderly", lag.Out);
        Assert.Equal(ExitCodes.Ok, (await Halfmsg("group", "order", "ops-cli-orderly", "concurrent")).ExitCode);
        Assert.Contains("order: concurrent", (await Halfmsg("group", "lag", "ops-cli-orderly")).Out);
    }

    [Fact]
    public async Task Missing_or_wrong_credentials_exit_5_and_an_unreachable_broker_exits_6()
    {
        var none = await HalfmsgWith(null, "stats");
        Assert.Equal(ExitCodes.Refused, none.ExitCode);
        Assert.Contains("credentials required", none.Err);
        var wrong = await HalfmsgWith("wrong", "tx", "commit", "ops-parked-0");
        Assert.Equal(ExitCodes.Refused, wrong.ExitCode);
        Assert.Contains("credentials not accepted", wrong.Err);
        Assert.Equal(ExitCodes.Ok, (await HalfmsgWith(null, "health")).ExitCode);   // /health is open for probes

        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await HalfMsgCli.RunAsync(["stats", "--url", "http://127.0.0.1:1"], output, error, _ => null);
        Assert.Equal(ExitCodes.Unreachable, code);
    }

    [Fact]
    public async Task Message_show_and_find_say_where_a_message_is()
    {
        var show = await Halfmsg("message", "show", "ops-parked-0");
        Assert.Equal(ExitCodes.Ok, show.ExitCode);
        Assert.Matches(@"ops-parked-0\s+ops-orders\s+key-ops-parked-0\s+parked", show.Out);

        var find = await Halfmsg("message", "find", "--key", "key-ops-plain-1", "--json");
        Assert.Equal(ExitCodes.Ok, find.ExitCode);
        using var doc = JsonDocument.Parse(find.Out);
        var plain = doc.RootElement.EnumerateArray().Single();
        Assert.Equal("stored", plain.GetProperty("state").GetString());
        Assert.Equal(OpsBroker.Consumers, plain.GetProperty("groups")[0].GetProperty("group").GetString());

        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("message", "find", "--key", "no-such-key")).ExitCode);
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("message", "show", "no-such-id")).ExitCode);
    }

    [Fact]
    public async Task Topic_create_creates_once_and_rejects_a_bad_name()
    {
        var first = await Halfmsg("topic", "create", "cli-created");
        Assert.Equal(ExitCodes.Ok, first.ExitCode);
        Assert.Equal("cli-created: created", first.Out.Trim());
        Assert.Equal("cli-created: already exists", (await Halfmsg("topic", "create", "cli-created")).Out.Trim());
        Assert.Contains(broker.Engine.ListTopics(), t => t.Name == "cli-created");
        var bad = await Halfmsg("topic", "create", "bad name!");
        Assert.Equal(ExitCodes.Failed, bad.ExitCode);
        Assert.Contains("not a valid name", bad.Err);
    }

    /// <summary>
    /// <c>halfmsg topic create --queues N</c> (POST /api/topics/{name}?queues=N): a new topic gets N queues, an existing
    /// one with fewer gets the queues it lacks, fewer than it has is refused with its count. Until 2026-12-06 the admin
    /// API and the CLI had no queue count at all (every topic got --queues-per-topic) and could not add queues.
    /// </summary>
    [Fact]
    public async Task Topic_create_with_queues_creates_grows_and_refuses_fewer()
    {
        Assert.Equal("cli-grown: created", (await Halfmsg("topic", "create", "cli-grown", "--queues", "2")).Out.Trim());
        Assert.Equal(2, broker.Engine.QueueCount("cli-grown"));
        Assert.Equal("cli-grown: already exists", (await Halfmsg("topic", "create", "cli-grown", "--queues", "2")).Out.Trim());

        var grown = await Halfmsg("topic", "create", "cli-grown", "--queues", "6");
        Assert.Equal(ExitCodes.Ok, grown.ExitCode);
        Assert.Equal("cli-grown: grown from 2 to 6 queues", grown.Out.Trim());
        Assert.Equal(6, broker.Engine.QueueCount("cli-grown"));
        var json = await Halfmsg("topic", "create", "cli-grown", "--queues", "8", "--json");
        using (var doc = JsonDocument.Parse(json.Out))
        {
            Assert.False(doc.RootElement.GetProperty("created").GetBoolean());
            Assert.Equal(8, doc.RootElement.GetProperty("queues").GetInt32());
            Assert.Equal(6, doc.RootElement.GetProperty("grownFrom").GetInt32());
        }

        var fewer = await Halfmsg("topic", "create", "cli-grown", "--queues", "4");
        Assert.Equal(ExitCodes.Failed, fewer.ExitCode);
        Assert.Contains("has 8 queues", fewer.Err);
        Assert.Equal(8, broker.Engine.QueueCount("cli-grown"));
        // Without --queues an existing topic is found as before, whatever its count.
        Assert.Equal("cli-grown: already exists", (await Halfmsg("topic", "create", "cli-grown")).Out.Trim());
    }

    [Fact]
    public async Task Pending_halves_show_keys_tag_and_why_they_wait()
    {
        var run = await Halfmsg("tx", "show", "ops-pending-0", "--json");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using var doc = JsonDocument.Parse(run.Out);
        Assert.Equal("key-ops-pending-0", doc.RootElement.GetProperty("keys")[0].GetString());
        Assert.Equal("created", doc.RootElement.GetProperty("tag").GetString());
        Assert.Contains("no producer of group 'ops-idle-producers' is connected", doc.RootElement.GetProperty("waitingFor").GetString());
        Assert.Equal(JsonValueKind.Null, doc.RootElement.GetProperty("nextCheckAt").ValueKind);
        Assert.Contains("waiting: no producer connected", (await Halfmsg("tx", "pending", "--topic", OpsBroker.PendingTopic)).Out);
    }

    [Fact]
    public async Task Usage_errors_exit_2()
    {
        Assert.Equal(ExitCodes.Usage, (await Halfmsg("tx", "frobnicate")).ExitCode);
        Assert.Equal(ExitCodes.Usage, (await Halfmsg("tx", "commit")).ExitCode);
        Assert.Equal(ExitCodes.Usage, (await Halfmsg("stats", "--url", "not a url")).ExitCode);
        // "localhost:8080" is an absolute URI of scheme "localhost": it crashed the CLI with NotSupportedException (review 2026-12-05).
        var noScheme = await Halfmsg("stats", "--url", "localhost:8080");
        Assert.Equal(ExitCodes.Usage, noScheme.ExitCode);
        Assert.Contains("--url must be an absolute URL", noScheme.Err);
    }

    [Fact]
    public async Task Group_lag_shows_a_pull_groups_committed_offsets_and_a_group_only_seen_so_far()
    {
        // A consumer seen (a Remoting heartbeat, or a gRPC consumer before its first receive) but with no progress yet:
        // the answer lacked deadLettered and the CLI crashed with KeyNotFoundException (review 2026-12-05).
        broker.Engine.Consumers.Seen("ops-seen-only", "ops-seen-client", "Remoting", "127.0.0.1:5555");
        var seen = await Halfmsg("group", "lag", "ops-seen-only");
        Assert.Equal(ExitCodes.Ok, seen.ExitCode);
        Assert.Contains("total lag 0; dead-lettered 0 in %DLQ%ops-seen-only", seen.Out);

        // A pull group (RocketMQ 4 Remoting) keeps committed offsets, not leases: its lag is shown too.
        const string topic = "ops-cli-pull";
        Assert.True((await broker.Engine.CreateTopicAsync(topic)).Error.IsOk);
        for (int i = 0; i < 6; i++) Assert.True((await broker.Engine.SendAsync(OpsBroker.Draft(topic, $"ops-pull-{i}"))).IsOk);
        Assert.True(broker.Engine.TryGetQueueOffsets(topic, 0, out _, out long max0));
        Assert.True((await broker.Engine.CommitConsumerOffsetAsync("ops-pull-group", topic, 0, 1)).IsOk);
        var pull = await Halfmsg("group", "lag", "ops-pull-group");
        Assert.Equal(ExitCodes.Ok, pull.ExitCode);
        Assert.Contains($"total lag {6 - Math.Min(1, max0)}; dead-lettered 0", pull.Out); // queue 0 from offset 1, queue 1 from its start
        var json = await Halfmsg("group", "lag", "ops-pull-group", "--json");
        using var doc = JsonDocument.Parse(json.Out);
        var t = Assert.Single(doc.RootElement.GetProperty("topics").EnumerateArray());
        Assert.Equal("pull", t.GetProperty("kind").GetString());
        var q0 = t.GetProperty("queues").EnumerateArray().Single(q => q.GetProperty("queueId").GetInt32() == 0);
        Assert.Equal(1, q0.GetProperty("consumedOffset").GetInt64());
        Assert.Equal(Math.Max(0, max0 - 1), q0.GetProperty("lag").GetInt64());
    }

    [Fact]
    public async Task Tx_pending_with_a_topic_shows_a_page_of_that_topics_halves_wherever_they_are()
    {
        // Newer than the fixture's pending halves: not on the first page of one.
        for (int i = 0; i < 2; i++)
            Assert.True((await broker.Engine.SendHalfAsync(OpsBroker.Draft("ops-cli-filter", $"ops-filter-{i}"), "ops-idle-producers", null, null)).IsOk);
        var run = await Halfmsg("tx", "pending", "--topic", "ops-cli-filter", "--limit", "1");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("ops-filter-0", run.Out);
        Assert.DoesNotContain("ops-filter-1", run.Out); // one page of one
        Assert.Contains("1 shown of", run.Out);
    }

    /// <summary>Review (ops, 2026-12-06): pendingTransactions counted the parked halves too, so `halfmsg stats` showed a
    /// larger "pending" than the dashboard and halfmsg_transactions_pending.</summary>
    [Fact]
    public async Task Stats_count_pending_and_parked_halves_as_the_dashboard_and_metrics_do()
    {
        var run = await Halfmsg("stats", "--json");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var (pending, parked) = broker.Engine.TransactionCounts(); // what the dashboard and /metrics show
        using var doc = JsonDocument.Parse(run.Out);
        Assert.True(parked > 0);
        Assert.Equal(pending, doc.RootElement.GetProperty("pendingTransactions").GetInt32());
        Assert.Equal(parked, doc.RootElement.GetProperty("parkedTransactions").GetInt32());
    }

    [Fact]
    public async Task Message_find_of_an_unknown_key_exits_3_with_json_too()
    {
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("message", "find", "--key", "no-such-key")).ExitCode);
        var json = await Halfmsg("message", "find", "--key", "no-such-key", "--json");
        Assert.Equal(ExitCodes.NotFound, json.ExitCode);
        Assert.Equal("[]", json.Out.Trim());
    }
    [Fact]
    public async Task Topic_delete_removes_the_topic_and_a_second_delete_is_not_found()
    {
        Assert.Equal(ExitCodes.Ok, (await Halfmsg("topic", "create", "cli-doomed")).ExitCode);
        Assert.True((await broker.Engine.SendAsync(OpsBroker.Draft("cli-doomed", "cli-doomed-1"))).IsOk);
        var run = await Halfmsg("topic", "delete", "cli-doomed");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Equal("cli-doomed: deleted", run.Out.Trim());
        Assert.DoesNotContain(broker.Engine.ListTopics(), t => t.Name == "cli-doomed");
        var again = await Halfmsg("topic", "delete", "cli-doomed");
        Assert.Equal(ExitCodes.NotFound, again.ExitCode);
        Assert.Contains("does not exist", again.Err);
        var system = await Halfmsg("topic", "delete", "%DLQ%" + OpsBroker.Consumers);
        Assert.Equal(ExitCodes.Failed, system.ExitCode);
        Assert.Contains("system topic", system.Err);
    }

    [Fact]
    public async Task Group_delete_forgets_the_group_and_a_second_delete_is_not_found()
    {
        Assert.True((await broker.Engine.SendAsync(OpsBroker.Draft("cli-group-topic", "cli-group-1"))).IsOk);
        var got = await broker.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = "cli-doomed-group", Topic = "cli-group-topic", LongPollTimeout = TimeSpan.FromSeconds(5) });
        Assert.Single(got.Messages);
        Assert.NotNull(broker.Engine.FindGroup("cli-doomed-group"));

        var run = await Halfmsg("group", "delete", "cli-doomed-group", "--json");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using (var doc = JsonDocument.Parse(run.Out)) Assert.True(doc.RootElement.GetProperty("deleted").GetBoolean());
        Assert.Null(broker.Engine.FindGroup("cli-doomed-group"));
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("group", "delete", "cli-doomed-group")).ExitCode);
    }

    [Fact]
    public async Task Group_order_sets_the_groups_mode_and_a_bad_mode_fails_with_the_reason()
    {
        var run = await Halfmsg("group", "order", "cli-orderly-group", "orderly");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("cli-orderly-group: orderly", run.Out);
        Assert.Equal(HalfMsg.Broker.Core.GroupOrder.Orderly, broker.Engine.GroupOrderOf("cli-orderly-group"));
        var bad = await Halfmsg("group", "order", "cli-orderly-group", "fifo");
        Assert.Equal(ExitCodes.Failed, bad.ExitCode);
        Assert.Contains("mode must be orderly, concurrent or default", bad.Err);
        Assert.Equal(HalfMsg.Broker.Core.GroupOrder.Orderly, broker.Engine.GroupOrderOf("cli-orderly-group"));
    }

    [Fact]
    public async Task Dlq_redrive_moves_a_dead_letter_back_and_the_group_receives_it_again()
    {
        const string topic = "cli-redrive-orders", group = "cli-redrive-consumers";
        var draft = new MessageDraft
        {
            Topic = topic, MessageId = "cli-redrive-1", Keys = ["key-redrive-1"], Tag = "paid",
            Properties = new Dictionary<string, string> { ["tenant"] = "acme" }, Body = "{\"order\":7}"u8.ToArray(),
        };
        Assert.True((await broker.Engine.SendAsync(draft)).IsOk);

        // Received and never acknowledged, twice (the broker's maximum): the sweeper dead-letters it.
        int attempts = 0;
        await OpsBroker.WaitUntilAsync(async () =>
        {
            var got = await broker.Engine.ReceiveAsync(new ReceiveRequest
            {
                ConsumerGroup = group, Topic = topic, InvisibleDuration = TimeSpan.FromMilliseconds(100), LongPollTimeout = TimeSpan.FromMilliseconds(200),
            });
            attempts += got.Messages.Count;
            return broker.Engine.FindGroup(group)?.DeadLettered == 1;
        }, "message dead-lettered");
        Assert.Equal(2, attempts);
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("dlq", "redrive", "cli-nobody")).ExitCode);

        // A filter for another topic passes it over and moves nothing. (The sweeper's dead-lettering becomes visible on
        // the DLQ once durable, a moment after the count moves: wait for the pass-over, not a fixed time.)
        Run filtered = null!;
        await OpsBroker.WaitUntilAsync(async () =>
        {
            filtered = await Halfmsg("dlq", "redrive", group, "--topic", "cli-other-topic");
            Assert.Equal(ExitCodes.Ok, filtered.ExitCode);
            Assert.StartsWith($"%DLQ%{group}: 0 moved back to their topics", filtered.Out.Trim());
            return filtered.Out.Contains("passed over");
        }, "dead letter visible to the re-drive");
        Assert.Equal($"%DLQ%{group}: 0 moved back to their topics, 1 from other topics passed over", filtered.Out.Trim());

        var run = await Halfmsg("dlq", "redrive", group, "--json");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        using (var doc = JsonDocument.Parse(run.Out))
        {
            Assert.Equal(1, doc.RootElement.GetProperty("redriven").GetInt32());
            Assert.Equal("cli-redrive-1", doc.RootElement.GetProperty("messageIds")[0].GetString());
        }

        var again = await broker.Engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = group, Topic = topic, LongPollTimeout = TimeSpan.FromSeconds(5) });
        var m = Assert.Single(again.Messages);
        Assert.Equal(1, m.DeliveryAttempt);
        Assert.Equal("cli-redrive-1", m.Message.MessageId);
        Assert.Equal("paid", m.Message.Tag);
        Assert.Equal(["key-redrive-1"], m.Message.Keys);
        Assert.Equal("acme", m.Message.Properties["tenant"]);
        Assert.Equal("{\"order\":7}", System.Text.Encoding.UTF8.GetString(m.Message.Body.Span));
        Assert.True((await broker.Engine.AckAsync(group, topic, m.ReceiptHandle)).IsOk);

        // Each dead letter is moved once: a second re-drive finds nothing new.
        var second = await Halfmsg("dlq", "redrive", group);
        Assert.Equal(ExitCodes.Ok, second.ExitCode);
        Assert.StartsWith($"%DLQ%{group}: 0 moved", second.Out.Trim());
    }

    [Fact]
    public async Task Message_show_prints_properties_and_the_body_preview()
    {
        var run = await Halfmsg("message", "show", "ops-plain-2");
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        Assert.Contains("body (12 bytes, text):", run.Out);
        Assert.Contains("{\"order\":42}", run.Out);

        var json = await Halfmsg("message", "show", "ops-parked-0", "--json");
        using var doc = JsonDocument.Parse(json.Out);
        var message = doc.RootElement.GetProperty("message");
        Assert.Equal("parked", doc.RootElement.GetProperty("state").GetString());
        Assert.Equal("text", message.GetProperty("bodyEncoding").GetString());
        Assert.Equal("{\"order\":42}", message.GetProperty("bodyPreview").GetString());
        Assert.Equal("ops-parked-0", message.GetProperty("transactionId").GetString());
    }

    [Fact]
    public async Task Message_show_prints_the_delivery_history_with_group_attempt_and_consumer()
    {
        var run = await Halfmsg("message", "show", broker.DeliveredId);
        Assert.Equal(ExitCodes.Ok, run.ExitCode);
        var lines = run.Out.Split('\n');
        int header = Array.FindIndex(lines, l => l.StartsWith("history:", StringComparison.Ordinal));
        Assert.True(header >= 0, run.Out);
        Assert.StartsWith("TIME", lines[header + 1]);
        Assert.Matches(@"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\s+stored\s+-\s+", lines[header + 2]);
        Assert.Matches($@"^\d{{4}}-.*\s+delivered\s+{OpsBroker.Consumers}\s+1\s+{System.Text.RegularExpressions.Regex.Escape(OpsBroker.ConsumerClientId)}", lines[header + 3]);

        var json = await Halfmsg("message", "show", broker.DeliveredId, "--json");
        using var doc = JsonDocument.Parse(json.Out);
        Assert.Equal(["stored", "delivered"], doc.RootElement.GetProperty("history").EnumerateArray().Select(s => s.GetProperty("kind").GetString()!).ToArray());
    }
    [Fact]
    public async Task Group_reset_offset_moves_a_pull_groups_committed_offsets()
    {
        const string topic = "cli-pull-orders", group = "cli-pull-consumers";
        for (int i = 0; i < 4; i++) Assert.True((await broker.Engine.SendAsync(new MessageDraft { Topic = topic, MessageId = $"cli-pull-{i}", QueueId = 0, Body = new byte[] { 1 } })).IsOk);
        Assert.True((await broker.Engine.CommitConsumerOffsetAsync(group, topic, 0, 3)).IsOk);

        var earliest = await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "earliest");
        Assert.Equal(ExitCodes.Ok, earliest.ExitCode);
        Assert.Matches(@"(?m)^ *0 +3 +0 *$", earliest.Out);
        Assert.Equal(0, broker.Engine.QueryConsumerOffset(group, topic, 0));

        Assert.Equal(ExitCodes.Ok, (await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "latest")).ExitCode);
        Assert.Equal(4, broker.Engine.QueryConsumerOffset(group, topic, 0));

        // A time before every message: the first message at or after it is offset 0.
        Assert.Equal(ExitCodes.Ok, (await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "2020-01-01T00:00:00Z")).ExitCode);
        Assert.Equal(0, broker.Engine.QueryConsumerOffset(group, topic, 0));

        Assert.Equal(ExitCodes.Failed, (await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "yesterday-ish")).ExitCode);
        Assert.Equal(ExitCodes.NotFound, (await Halfmsg("group", "reset-offset", group, "--topic", "cli-no-such-topic")).ExitCode);
    }

    [Fact]
    public async Task Group_reset_offset_moves_a_lease_group_back_and_forth_and_refuses_one_on_several_topics()
    {
        const string topic = "cli-lease-orders", group = "cli-lease-consumers";
        var engine = broker.Engine;
        var stored = new List<DateTimeOffset>();
        long previousSendEndedMs = long.MinValue;
        for (int i = 0; i < 4; i++)
        {
            // Store times are in milliseconds: each send starts in a later millisecond than the one before ended, so a
            // reset to the time taken before send i never also takes send i - 1 (it did when both fell in one millisecond).
            while (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() <= previousSendEndedMs) await Task.Yield();
            stored.Add(DateTimeOffset.UtcNow);
            Assert.True((await engine.SendAsync(new MessageDraft { Topic = topic, MessageId = $"cli-lease-{i}", QueueId = 0, Body = new byte[] { 1 } })).IsOk);
            previousSendEndedMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        }
        async Task<List<string>> ReceiveAll()
        {
            var got = await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = group, Topic = topic, BatchSize = 16 });
            foreach (var d in got.Messages) Assert.True((await engine.AckAsync(group, topic, d.ReceiptHandle)).IsOk);
            return got.Messages.Select(d => d.Message.MessageId).ToList();
        }
        Assert.Equal(4, (await ReceiveAll()).Count);
        Assert.Empty(await ReceiveAll());

        // Back to the earliest: all four again, each as a first delivery.
        var earliest = await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "earliest");
        Assert.Equal(ExitCodes.Ok, earliest.ExitCode);
        Assert.Matches(@"(?m)^ *0 +4 +0 *$", earliest.Out);   // queue 0: consumed 4, now 0
        Assert.Contains("lease group: 0 in-flight lease(s) ended", earliest.Out);
        Assert.Equal(["cli-lease-0", "cli-lease-1", "cli-lease-2", "cli-lease-3"], (await ReceiveAll()).Order(StringComparer.Ordinal));

        // To a time: the messages stored at or after the third send.
        var at = await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", stored[2].ToUnixTimeMilliseconds().ToString(System.Globalization.CultureInfo.InvariantCulture), "--json");
        Assert.Equal(ExitCodes.Ok, at.ExitCode);
        using (var doc = JsonDocument.Parse(at.Out)) Assert.Equal("lease", doc.RootElement.GetProperty("kind").GetString());
        Assert.Equal(["cli-lease-2", "cli-lease-3"], (await ReceiveAll()).Order(StringComparer.Ordinal));

        // To the latest: nothing until a new message arrives.
        Assert.Equal(ExitCodes.Ok, (await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "latest")).ExitCode);
        Assert.Empty(await ReceiveAll());

        // A group that also receives from another topic is not reset (its progress there would be lost).
        Assert.True((await engine.SendAsync(new MessageDraft { Topic = "cli-lease-other", MessageId = "cli-lease-other-1", Body = new byte[] { 1 } })).IsOk);
        Assert.Single((await engine.ReceiveAsync(new ReceiveRequest { ConsumerGroup = group, Topic = "cli-lease-other" })).Messages);
        var refused = await Halfmsg("group", "reset-offset", group, "--topic", topic, "--to", "earliest");
        Assert.Equal(ExitCodes.Conflict, refused.ExitCode);
        Assert.Contains("cli-lease-other", refused.Err);
        Assert.Empty(await ReceiveAll());
    }
}
