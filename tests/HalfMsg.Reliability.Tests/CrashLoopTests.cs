using System.Diagnostics;
using System.Text;
using HalfMsg.Reliability.Tests.CrashLoop;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests;

/// <summary>
/// Issue 13 items 1 and 4: a real broker process under mixed transactional traffic over gRPC and Remoting, killed with
/// SIGKILL at random moments again and again on one data dir (retention cutting the log meanwhile), optionally with the
/// disk damaged between kill and restart; after every restart and at the end the invariants are checked against a model
/// of what the broker acknowledged. <c>HALFMSG_SLOW_TESTS=1</c> runs the long versions; <c>HALFMSG_CRASH_SEED=n</c>
/// replays one seed.
/// </summary>
[Trait("Category", "Reliability")]
public sealed class CrashLoopTests(ITestOutputHelper output)
{
    private static readonly string[] BrokerArgs =
    [
        "--queues-per-topic", LoadDriver.Queues.ToString(System.Globalization.CultureInfo.InvariantCulture),
        "--retention-size", "32KiB", "--checkpoint-every", "100",
        "--max-delivery-attempts", "1000", "--transaction-check-max", "1000",
    ];

    private static int Seed()
        => int.TryParse(Environment.GetEnvironmentVariable("HALFMSG_CRASH_SEED"), out int s) ? s : Random.Shared.Next(1, 1_000_000);

    [Fact]
    public Task Kill_9_at_random_moments_loses_no_acknowledged_outcome()
        => RunAsync(ReliabilityConventions.SlowTestsEnabled ? 20 : 3, damage: null);

    [Fact]
    public Task Damage_on_disk_after_kill_9_is_reported_and_costs_only_the_damaged_records()
        => RunAsync(ReliabilityConventions.SlowTestsEnabled ? 12 : 3,
            damage: [DamageKind.TruncateSegment, DamageKind.FlipByte, DamageKind.TearCheckpoint]);

    private async Task RunAsync(int kills, DamageKind[]? damage)
    {
        int seed = Seed();
        var rng = new Random(seed);
        var model = new AckModel(seed);
        var total = Stopwatch.StartNew();
        var log = new StringBuilder($"seed {seed} (rerun with HALFMSG_CRASH_SEED={seed}), {kills} kills, damage {(damage is null ? "none" : string.Join("/", damage))}\n");
        await using var broker = await BrokerProcess.StartAsync(BrokerArgs);
        var admin = new Admin(broker);
        long pullSkipped = 0;
        long pullPassed = 0;
        long cuts = 0;
        int commitsAcked = 0;
        long sharedDecisions = 0;
        int targetCommits = 30;
        try
        {
            for (int epoch = 0; epoch < kills; epoch++)
            {
                model.Epoch = epoch;
                var driver = await LoadDriver.StartAsync(broker, model, seed + epoch, produce: true);
                await using (driver)
                {
                    // Kill after a condition (enough acknowledged commits over both protocols), then at a random moment.
                    // The first epoch also waits for a retention cut, so every run kills a broker whose log was cut.
                    var deadline = DateTime.UtcNow.AddSeconds(120);
                    long epochCuts = 0;
                    while (driver.EpochCommits < targetCommits || driver.EpochCommitsGrpc < 3 || driver.EpochCommitsRemoting < 3
                        || (epoch == 0 && (epochCuts = await admin.StatAsync("retentionCuts")) == 0))
                    {
                        Assert.True(DateTime.UtcNow < deadline, Fail(model, log, broker, $"epoch {epoch}: only {driver.EpochCommits} commits acknowledged and {epochCuts} retention cuts in 120 s"));
                        await Task.Delay(100);
                    }
                    await Task.Delay(rng.Next(0, 1000));
                    try { cuts += await admin.StatAsync("retentionCuts"); } catch (HttpRequestException) { }
                    broker.Kill();
                    commitsAcked += driver.EpochCommits;
                    sharedDecisions += driver.EpochSharedCallDecisions;
                    log.Append($"epoch {epoch}: killed after {driver.EpochCommits} acknowledged commits ({driver.EpochSharedCallDecisions} gRPC decisions sent several to a call)\n");
                }

                // Counted once the driver is stopped: a pull answered just before the kill may be handled after it.
                pullSkipped += driver.PullSkipped;
                pullPassed += driver.PullPassedInAnswers;

                DamageReport? report = null;
                if (damage is not null)
                {
                    var kind = damage[epoch % damage.Length];
                    report = DiskDamage.Apply(broker.DataDir, kind, rng, model);
                    model.Damaged.UnionWith(report.AffectedIds);
                    foreach (var (topic, queue) in report.AffectedOffsets) model.ForgetOffset(topic, queue);
                    model.DamagePositions(report.UnattributedPositions);
                    log.Append($"  damage: {report.What}; model ids hit: {(report.AffectedIds.Count == 0 ? "none" : string.Join(",", report.AffectedIds.Take(30)))}" +
                        $"{(report.UnattributedPositions.Count == 0 ? "" : $"; queue positions not yet tied to an id: {string.Join(",", report.UnattributedPositions.Take(10))}")}\n");
                }

                try
                {
                    await broker.RestartAsync();
                }
                catch (Exception ex)
                {
                    Assert.Fail(Fail(model, log, broker, $"epoch {epoch}: the broker did not start after the kill{(report is null ? "" : " and " + report.What)}: {ex.Message}"));
                }
                if (report is not null) await CheckDamageReportedAsync(admin, report, model, log);
                await CheckAfterRestartAsync(admin, model);
            }

            // Final round: no more kills or new sends; consumers and check-back answers run until every group got every
            // acknowledged commit (or the time is up).
            model.Epoch = kills;
            string[] groups = [LoadDriver.AckingGroup, LoadDriver.FailingGroup, LoadDriver.PullGroup];
            var must = model.MustBeDelivered();
            // Retention's contract: limits are limits, a message whose queue position was cut expires whether or not a
            // group got it. A missing message is excused only when its position (seen by the pull consumer) is below
            // its queue's first offset; a position nobody saw is excused only while the pull consumer itself skipped
            // as many expired positions.
            List<ModelEntry> Unexplained(string g, Dictionary<(string, int), long> min, long skipped, out int expired, out int unknown)
            {
                var missing = must.Where(e => !model.WasDelivered(g, e.Id)).ToList();
                int exp = 0, unk = 0;
                var left = new List<ModelEntry>();
                foreach (var e in missing)
                {
                    if (model.PositionOf(e.Id) is { } p) { if (p.Offset < min[(p.Topic, p.Queue)]) exp++; else left.Add(e); }
                    else { unk++; left.Add(e); }
                }
                expired = exp;
                unknown = unk;
                return unk <= skipped ? left.Where(e => model.PositionOf(e.Id) is not null).ToList() : left;
            }
            var finalDriver = await LoadDriver.StartAsync(broker, model, seed + kills, produce: false);
            await using (finalDriver)
            {
                var deadline = DateTime.UtcNow.AddSeconds(120);
                while (DateTime.UtcNow < deadline)
                {
                    var min = await LoadDriver.MinOffsetsAsync(broker);
                    if (groups.All(g => Unexplained(g, min, pullSkipped + finalDriver.PullSkipped, out _, out _).Count == 0)) break;
                    await Task.Delay(500);
                }
            }
            pullSkipped += finalDriver.PullSkipped;
            pullPassed += finalDriver.PullPassedInAnswers;
            var minOffsets = await LoadDriver.MinOffsetsAsync(broker);
            foreach (string g in groups)
            {
                var lost = Unexplained(g, minOffsets, pullSkipped, out int expired, out int unknown);
                log.Append($"group {g}: {model.Deliveries(g)} deliveries; of {must.Count} acknowledged commits/sends {expired} expired by retention before the group got them, {unknown} at positions the pull consumer never saw ({pullSkipped} skipped, {pullPassed} of them passed over in answers with messages), {lost.Count} lost\n");
                if (lost.Count > 0)
                {
                    model.Violation($"invariant 'every acknowledged commit is delivered at least once to every group': {lost.Count} never reached group {g} and retention did not expire them: {string.Join("; ", lost.Take(20).Select(e => $"{e} at {model.PositionOf(e.Id)?.ToString() ?? "unknown position"}"))}");
                    // The broker's own view, for whoever reads the failure: where it put each lost message (its history and
                    // queue position), and the group's progress there.
                    log.Append($"broker's view of group {g}: {await admin.RawAsync($"/api/groups/{g}")}\n");
                    foreach (var e in lost.Take(5))
                        log.Append($"broker's view of {e.Id}: {await admin.RawAsync($"/api/messages/{e.MessageId}")}\n");
                    log.Append($"{await admin.RawAsync("/health")}\n");
                }
            }

            cuts += await admin.StatAsync("retentionCuts");
            var entries = model.Entries();
            log.Append($"{entries.Count} model messages: {entries.Count(e => e.Intent == Intent.Commit && e.DecisionAckedAt is not null)} commits and {entries.Count(e => e.Intent == Intent.Rollback && e.DecisionAckedAt is not null)} rollbacks acknowledged, " +
                $"{entries.Count(e => e.Intent == Intent.Send && e.Stored)} plain sends acknowledged, {entries.Count(e => e.Intent == Intent.Leave && e.Stored)} halves left pending, " +
                $"{model.ChecksReceived()} check-backs answered, {cuts} retention cuts, {total.Elapsed.TotalSeconds:F0} s\n");
            model.ResolveDeferred();
            // The violations go to the test's output as well as its failure message: a CI log may show only the output.
            foreach (string v in model.Violations.Take(40)) log.Append($"VIOLATION {v}\n");
            output.WriteLine(log.ToString());
            Assert.True(model.Violations.Count == 0, Fail(model, log, broker, "invariants broken"));
            Assert.True(model.ChecksReceived() > 0, Fail(model, log, broker, "no check-back was ever answered: the load did not exercise check-back"));
            Assert.True(commitsAcked >= kills * targetCommits, Fail(model, log, broker, "too little load"));
            // The kills must have landed on coalesced decisions too (EndTransactions, the core's batch path).
            Assert.True(sharedDecisions > 0, Fail(model, log, broker, "no gRPC decision went in a call with another"));
            Assert.True(cuts > 0, Fail(model, log, broker, "retention never cut the log during the run"));
        }
        catch (Exception) when (LogOnFailure(log))
        {
            throw;
        }
    }

    private bool LogOnFailure(StringBuilder log)
    {
        try { output.WriteLine(log.ToString()); } catch (InvalidOperationException) { }
        return false;
    }

    private static string Fail(AckModel model, StringBuilder log, BrokerProcess broker, string what)
    {
        var v = model.Violations;
        string tail = broker.Output;
        if (tail.Length > 8000) tail = tail[^8000..];
        return $"{what} (seed {model.Seed}; rerun with HALFMSG_CRASH_SEED={model.Seed})\n{v.Count} violations:\n{string.Join("\n", v.Take(40))}\n--- run ---\n{log}--- broker output (tail) ---\n{tail}";
    }

    /// <summary>Pending halves are still pending with at least their durable check counts; decided halves stay decided.</summary>
    private static async Task CheckAfterRestartAsync(Admin admin, AckModel model)
    {
        var pending = await admin.PendingAsync();
        foreach (var e in model.Entries())
        {
            if (!e.Stored || e.Intent == Intent.Send || model.Damaged.Contains(e.Id)) continue;
            (int Checks, bool Parked, string TransactionId) t = default;
            bool found = (e.MessageId is { } m && pending.TryGetValue(m, out t)) || (e.TransactionId is { } x && pending.TryGetValue(x, out t));
            if (e.DecisionAckedAt is { } at)
            {
                if (found) model.Violation($"invariant 'a decided half stays decided': {e}, whose {e.Intent} was acknowledged at {at:HH:mm:ss.fff}, is pending again after the restart");
            }
            else if (e.Intent == Intent.Leave)
            {
                if (!found) model.Violation($"invariant 'a pending half is still pending after a restart': {e} is not on /api/transactions/pending or /parked");
                else if (t.Checks < e.DurableChecks) model.Violation($"invariant 'check counts are durable': {e} has {t.Checks} checks after the restart; {e.DurableChecks} were durable before the kill");
            }
        }
    }

    /// <summary>The broker says what it could not read: degraded health naming the damaged address, the counter, the stats.</summary>
    private static async Task CheckDamageReportedAsync(Admin admin, DamageReport report, AckModel model, StringBuilder log)
    {
        var (status, reasons) = await admin.HealthAsync();
        long skipped = await admin.StatAsync("corruptRecordsSkipped");
        string metrics = await admin.MetricsAsync();
        string metricLine = metrics.Split('\n').FirstOrDefault(l => l.StartsWith("halfmsg_log_corrupt_records_skipped", StringComparison.Ordinal)) ?? "(absent)";
        log.Append($"  after restart: health {status} [{string.Join(" | ", reasons)}], corruptRecordsSkipped {skipped}, {metricLine}\n");
        if (!report.MustBeReported) return;
        if (status != "degraded")
            model.Violation($"damage not reported: after '{report.What}' /health is '{status}', not 'degraded'");
        // Exactly: every damaged record is named, by its address or inside a reported unreadable range.
        var unnamed = report.DamagedAddresses.Where(a => !reasons.Any(r => Names(r, a))).ToList();
        if (unnamed.Count > 0)
            model.Violation($"damage not reported exactly: after '{report.What}' no health reason names the damaged records at {string.Join(", ", unnamed.Take(10))}: [{string.Join(" | ", reasons)}]");
        if (skipped < 1 || metricLine.EndsWith(" 0", StringComparison.Ordinal))
            model.Violation($"damage not counted: after '{report.What}' corruptRecordsSkipped is {skipped}, metric line '{metricLine}'");
    }

    /// <summary>"... address A (...)" or "... from address X up to Y ..." with X &lt;= A &lt; Y.</summary>
    private static bool Names(string reason, long address)
    {
        if (reason.Contains($"address {address} ", StringComparison.Ordinal)) return true;
        // A log cut short: FasterLog's recovered tail can stop before records whose commit records the cut took, so
        // "to the end of the log" covers everything from the cut on.
        var end = System.Text.RegularExpressions.Regex.Match(reason, @"from address (\d+) to the end of the log");
        if (end.Success && long.Parse(end.Groups[1].Value) <= address) return true;
        var m = System.Text.RegularExpressions.Regex.Match(reason, @"from address (\d+) up to (\d+)");
        return m.Success && long.Parse(m.Groups[1].Value) <= address && address < long.Parse(m.Groups[2].Value);
    }
}
