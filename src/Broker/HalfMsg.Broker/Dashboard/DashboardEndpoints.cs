using System.Globalization;
using System.Text;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using static HalfMsg.Broker.Dashboard.Html;

namespace HalfMsg.Broker.Dashboard;

/// <summary>
/// The web dashboard on the admin port: server-rendered pages over the same engine calls as the admin API, behind the
/// same <see cref="Admin.AdminGuard"/> (a browser asks for the Basic credentials; forms post same-origin only).
/// </summary>
internal static class DashboardEndpoints
{
    private const int PageSize = 50;

    public static void MapDashboard(this IEndpointRouteBuilder app, BrokerEngine engine, BrokerOptions options)
    {
        app.MapGet("/", () => Results.Redirect("/dashboard"));
        app.MapGet("/dashboard", (RateSampler sampler) => Overview(engine, options, sampler));
        app.MapGet("/dashboard/transactions", (string? view, string? topic, string? group, int? page, string? sort, string? msg, string? err)
            => Transactions(engine, view == "parked", topic, group, Math.Max(1, page ?? 1), sort == "newest", msg, err));
        app.MapGet("/dashboard/transactions/{id}", (string id) => Transaction(engine, id));
        app.MapPost("/dashboard/transactions/{id}/{action}", async (string id, string action, CancellationToken ct) =>
        {
            string back = "/dashboard/transactions?view=parked";
            BrokerError error;
            switch (action)
            {
                case "resume":
                    error = await engine.ResumeTransactionAsync(id, ct);
                    break;
                case "commit":
                case "rollback":
                    var result = await engine.EndTransactionAsync(id, null, action == "commit" ? TransactionResolution.Commit : TransactionResolution.Rollback,
                        DecisionSource.Operator, ct);
                    error = result.Error;
                    break;
                default:
                    return Results.Json(new Admin.ErrorBody($"unknown action '{action}'; use resume, commit or rollback", "NotFound"), statusCode: 404);
            }
            string done = action switch { "resume" => "resumed (checked again from zero)", "commit" => "committed", _ => "rolled back" };
            return Results.Redirect(error.IsOk
                ? $"{back}&msg={U($"Transaction {id} {done}.")}"
                : $"{back}&err={U($"Transaction {id}: {error.Message}")}");
        });
        app.MapGet("/dashboard/messages", async (string? id, string? key, string? topic, CancellationToken ct) => await Messages(engine, id, key, topic, ct));
        app.MapGet("/dashboard/topics", () => Topics(engine));
        app.MapGet("/dashboard/groups", () => Groups(engine));
        app.MapGet("/dashboard/groups/{group}", (string group, string? msg, string? err) => Group(engine, group, msg, err));
        app.MapPost("/dashboard/groups/{group}/redrive", async (string group, CancellationToken ct) =>
        {
            var result = await engine.RedriveDeadLettersAsync(group, null, 10_000, null, ct);
            string back = $"/dashboard/groups/{U(group)}";
            return Results.Redirect(result.Error.IsOk
                ? $"{back}?msg={U($"{result.Redriven} dead letter(s) moved back to their topics." + NotRedriven(result))}"
                : $"{back}?err={U($"Re-drive stopped after {result.Redriven}: {result.Error.Message}" + NotRedriven(result))}");
        });
    }

    /// <summary>The dead letters a re-drive left in the dead-letter topic, with the first one's reason; empty if none.</summary>
    private static string NotRedriven(BrokerEngine.RedriveResult result) => (result.NotRedrivenLetters is [var first, ..]
        ? $" {result.NotRedriven} could not be put back and stay in {result.DeadLetterTopic} (message {first.MessageId ?? $"at offset {first.DeadLetterOffset}"}: {first.Reason})."
        : "") + (result.More ? " The re-drive stopped at its limit of letters left; halfmsg dlq redrive goes on past them." : "");

    private static IResult Overview(BrokerEngine engine, BrokerOptions options, RateSampler sampler)
    {
        var (pending, parked) = engine.TransactionCounts();
        var m = engine.Metrics;
        var uptime = DateTimeOffset.UtcNow - sampler.StartedAt;
        var sb = new StringBuilder();
        sb.Append("<div class=\"cards\">");
        var health = Admin.AdminApi.HealthOf(engine);
        string healthClass = health.Status switch { "ready" => "ok", "storage-failure" => "bad", _ => "warn" };
        Card(sb, "health", $"<span class=\"{healthClass}\">{E(health.Status)}</span>", "status");
        Card(sb, "uptime", E(FormatAge(uptime)), "uptime");
        Card(sb, "pending halves", pending.ToString(CultureInfo.InvariantCulture), "pending");
        Card(sb, "parked halves", parked > 0 ? $"<span class=\"bad\">{parked}</span>" : "0", "parked");
        Card(sb, "log size", E(FormatBytes(Math.Max(0, engine.LogTailAddress - engine.LogBeginAddress))), "log-size");
        Card(sb, "producers connected", engine.Producers.ChannelCount.ToString(CultureInfo.InvariantCulture), "producers");
        sb.Append("</div>");
        if (health.Reasons.Count > 0)
            sb.Append("<div class=\"flash error\" role=\"alert\" data-testid=\"health-reasons\">Health: ").Append(E(health.Status)).Append(" — ")
              .Append(E(string.Join("; ", health.Reasons))).Append(" (as <a href=\"/health\">/health</a> says)</div>");
        sb.Append("<h2>Rates, last minutes</h2>").Append(SvgChart.Rates(sampler.Snapshot()));
        sb.Append("<h2>Totals since start</h2><table><tr><th>sent</th><th>halves</th><th>committed</th><th>rolled back</th><th>checks sent</th><th>delivered</th><th>acked</th><th>dead-lettered</th></tr><tr>");
        foreach (long v in new[] { m.MessagesStored, m.HalvesStored, m.Commits, m.Rollbacks, m.ChecksSent, m.Delivered, m.Acked, m.DeadLettered })
            sb.Append("<td class=\"num\">").Append(v.ToString(CultureInfo.InvariantCulture)).Append("</td>");
        sb.Append("</tr></table>");
        sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\">HalfMsgBroker {E(BrokerConfiguration.Version)} · data {E(Path.GetFullPath(options.DataDir))} · flush {options.Core.Flush} · gRPC {E(options.Bind)}:{options.GrpcPort} · <a href=\"/metrics\">/metrics</a></p>");
        return Page("Overview", "Overview", sb.ToString());
    }

    private static void Card(StringBuilder sb, string label, string valueHtml, string testId)
        => sb.Append("<div class=\"card\" data-testid=\"").Append(testId).Append("\"><div class=\"v\">").Append(valueHtml)
             .Append("</div><div class=\"k\">").Append(E(label)).Append("</div></div>");

    private const int ShownLimit = 1000, ScanLimit = 100_000;

    private static IResult Transactions(BrokerEngine engine, bool parked, string? topic, string? group, int page, bool newest, string? msg, string? err)
    {
        // The engine pages in log order, 1,000 at a time (each page one short hold of its lock). The view keeps the first
        // (oldest first) or the last (newest first) 1,000 halves that match the filters, looking through at most
        // ScanLimit halves: until 2026-12-05 it looked at the oldest 1,000 only, so "newest first" and the filters
        // missed every half past them (found by review). The admin API pages through millions.
        var all = new List<BrokerEngine.PendingTransaction>();
        long after = -1;
        int total = 0, looked = 0;
        while (looked < ScanLimit)
        {
            var batch = engine.ListTransactions(parked, after, 1000, out total);
            looked += batch.Count;
            all.AddRange(batch.Where(t => (string.IsNullOrEmpty(topic) || t.Topic == topic) && (string.IsNullOrEmpty(group) || t.ProducerGroup == group)));
            if (all.Count > ShownLimit) all.RemoveRange(newest ? 0 : ShownLimit, all.Count - ShownLimit);
            if (batch.Count < 1000 || (!newest && all.Count >= ShownLimit)) break;
            after = batch[^1].LogAddress;
        }
        bool partial = looked >= ScanLimit && looked < total;
        if (newest) all.Reverse();
        var rows = all.Skip((page - 1) * PageSize).Take(PageSize).ToList();
        var now = DateTimeOffset.UtcNow;
        string view = parked ? "parked" : "pending";
        var sb = new StringBuilder();
        if (!string.IsNullOrEmpty(msg)) sb.Append("<div class=\"flash\" role=\"status\">").Append(E(msg)).Append("</div>");
        if (!string.IsNullOrEmpty(err)) sb.Append("<div class=\"flash error\" role=\"alert\">").Append(E(err)).Append("</div>");
        sb.Append("<div class=\"filters\">");
        sb.Append(parked ? "<a href=\"/dashboard/transactions?view=pending\">Pending</a> · <b>Parked</b>" : "<b>Pending</b> · <a href=\"/dashboard/transactions?view=parked\">Parked</a>");
        sb.Append(CultureInfo.InvariantCulture, $" &nbsp; <form method=\"get\" action=\"/dashboard/transactions\"><input type=\"hidden\" name=\"view\" value=\"{view}\">");
        sb.Append(CultureInfo.InvariantCulture, $"<input name=\"topic\" placeholder=\"topic\" value=\"{E(topic)}\"> <input name=\"group\" placeholder=\"producer group\" value=\"{E(group)}\"> ");
        sb.Append(CultureInfo.InvariantCulture, $"<select name=\"sort\"><option value=\"oldest\">oldest first</option><option value=\"newest\"{(newest ? " selected" : "")}>newest first</option></select> <button type=\"submit\">Filter</button></form></div>");
        sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\" data-testid=\"count\">{all.Count} shown of {total} {view}");
        if (partial) sb.Append(CultureInfo.InvariantCulture, $" (the {ScanLimit:N0} oldest looked through; the admin API or the CLI's <code>tx {view} --all</code> pages through every one)");
        sb.Append("</p>");
        sb.Append("<table data-testid=\"transactions\"><tr><th>transaction id</th><th>message id</th><th>topic</th><th>producer group</th><th class=\"num\">age</th><th class=\"num\">checks</th><th>last answer</th><th>")
          .Append(parked ? "parked" : "next check").Append("</th>").Append(parked ? "<th>actions</th>" : "").Append("</tr>");
        foreach (var t in rows)
        {
            string link = "/dashboard/transactions/" + U(t.TransactionId);
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-tx=\"{E(t.TransactionId)}\"><td><a href=\"{E(link)}\"><code>{E(t.TransactionId)}</code></a></td><td><code>{E(t.MessageId)}</code></td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td>{E(t.Topic)}</td><td>{E(t.ProducerGroup)}</td><td class=\"num\">{E(FormatAge(now - t.StoredAt))}</td><td class=\"num\">{t.Checks}</td>");
            sb.Append("<td>").Append(E(LastAnswer(t, now))).Append("</td>");
            sb.Append("<td>").Append(parked ? E(FormatAge(now - (t.ParkedAt ?? now)) + " ago") : NextCheck(engine, t, now)).Append("</td>");
            if (parked) sb.Append("<td>").Append(Actions(t.TransactionId)).Append("</td>");
            sb.Append("</tr>");
        }
        sb.Append("</table>");
        if (page > 1 || all.Count > page * PageSize)
        {
            string Q(int p) => $"/dashboard/transactions?view={view}&topic={U(topic ?? "")}&group={U(group ?? "")}&sort={(newest ? "newest" : "oldest")}&page={p}";
            sb.Append("<p>");
            if (page > 1) sb.Append("<a href=\"").Append(E(Q(page - 1))).Append("\">← previous</a> ");
            if (all.Count > page * PageSize) sb.Append("<a href=\"").Append(E(Q(page + 1))).Append("\">next →</a>");
            sb.Append("</p>");
        }
        return Page(parked ? "Parked transactions" : "Pending transactions", "Transactions", sb.ToString());
    }

    private static string Actions(string txId)
    {
        string baseUrl = "/dashboard/transactions/" + U(txId);
        return ActionButton(baseUrl + "/resume", "Resume", $"Check transaction {txId} again from zero?")
             + ActionButton(baseUrl + "/commit", "Commit", $"Commit transaction {txId}? Consumers will receive the message.")
             + ActionButton(baseUrl + "/rollback", "Rollback", $"Roll back transaction {txId}? The message is discarded.", "danger");
    }

    /// <summary>What the producer last answered without deciding (in memory since start), or why nothing is known.</summary>
    private static string LastAnswer(BrokerEngine.PendingTransaction t, DateTimeOffset now)
        => t.LastAnswer is { } a ? $"{a}, {FormatAge(now - (t.LastAnswerAt ?? now))} ago" : t.Checks == 0 ? "not checked yet" : "no answer";

    /// <summary>A half whose producer group has nobody connected is not "due in the past": say why it waits.</summary>
    private static string NextCheck(BrokerEngine engine, BrokerEngine.PendingTransaction t, DateTimeOffset now)
    {
        if (engine.Producers.CountLive(t.ProducerGroup) == 0)
            return $"<span class=\"warn\">waiting: no producer of {E(t.ProducerGroup)} connected</span>";
        if (t.NextCheckAt is not { } next) return "";
        return next <= now ? "due now" : "in " + E(FormatAge(next - now));
    }

    private static IResult Transaction(BrokerEngine engine, string id)
    {
        if (engine.FindTransaction(id) is not { } t)
            return Page("Transaction not found", "Transactions",
                $"<p>Transaction <code>{E(id)}</code> is neither pending nor parked: it was decided, or it never existed.</p>", 404);
        var now = DateTimeOffset.UtcNow;
        var sb = new StringBuilder("<table data-testid=\"transaction\">");
        void Row(string k, string vHtml) => sb.Append("<tr><th>").Append(E(k)).Append("</th><td>").Append(vHtml).Append("</td></tr>");
        Row("transaction id", $"<code>{E(t.TransactionId)}</code>");
        Row("message id", $"<code>{E(t.MessageId)}</code>");
        Row("state", t.Parked ? "<span class=\"bad\">parked</span>" : "pending");
        Row("topic", E(t.Topic));
        Row("producer group", E(t.ProducerGroup));
        Row("origin client", E(t.OriginClientId ?? "—"));
        Row("stored at", E(t.StoredAt.ToString("u", CultureInfo.InvariantCulture)) + $" ({E(FormatAge(now - t.StoredAt))} ago)");
        Row("checks so far", t.Checks.ToString(CultureInfo.InvariantCulture));
        Row("last check sent", E(t.LastCheckAt is { } lc ? lc.ToString("u", CultureInfo.InvariantCulture) + $" ({FormatAge(now - lc)} ago)" : "—"));
        Row("last answer", E(LastAnswer(t, now)));
        Row(t.Parked ? "parked at" : "next check", t.Parked ? E(t.ParkedAt?.ToString("u", CultureInfo.InvariantCulture)) : NextCheck(engine, t, now));
        Row("log address", t.LogAddress.ToString(CultureInfo.InvariantCulture));
        sb.Append("</table>");
        if (t.Parked) sb.Append("<h2>Actions</h2>").Append(Actions(t.TransactionId));
        return Page("Transaction", "Transactions", sb.ToString());
    }

    private static async Task<IResult> Messages(BrokerEngine engine, string? id, string? key, string? topic, CancellationToken ct)
    {
        var sb = new StringBuilder("<form method=\"get\" action=\"/dashboard/messages\" class=\"filters\">");
        sb.Append(CultureInfo.InvariantCulture, $"<input name=\"id\" placeholder=\"message id\" value=\"{E(id)}\"> or <input name=\"key\" placeholder=\"key\" value=\"{E(key)}\"> <input name=\"topic\" placeholder=\"topic (optional)\" value=\"{E(topic)}\"> <button type=\"submit\">Find</button></form>");
        List<Core.Diagnostics.MessageIndex.Entry> found = [];
        if (!string.IsNullOrEmpty(id) && engine.MessageIndex.Find(id) is { } one) found.Add(one);
        else if (!string.IsNullOrEmpty(key)) found.AddRange(engine.MessageIndex.FindByKey(key, string.IsNullOrEmpty(topic) ? null : topic));
        if (string.IsNullOrEmpty(id) && string.IsNullOrEmpty(key))
            sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\">The index remembers the last {engine.MessageIndex.Capacity} messages of the retained log ({engine.MessageIndex.Count} now).</p>");
        else if (found.Count == 0)
            sb.Append("<p data-testid=\"not-found\">").Append(E(engine.MessageIndex.IsWarming
                ? $"Not found yet: the index is still being rebuilt from the log after the start ({engine.MessageIndex.RecordsScanned} records read). Try again shortly."
                : "No such message in the index (cut by retention, or forgotten as older than the index's capacity).")).Append("</p>");
        else
        {
            if (engine.MessageIndex.IsWarming && string.IsNullOrEmpty(id))
                sb.Append("<p class=\"warn\" data-testid=\"warming\">").Append(E($"The index is still being rebuilt from the log after the start ({engine.MessageIndex.RecordsScanned} records read): messages with this key it has not reached yet are not listed.")).Append("</p>");
            sb.Append("<table data-testid=\"messages\"><tr><th>message id</th><th>topic</th><th>keys</th><th>tag</th><th>kind</th><th>stored</th><th>where it is</th><th>queue / offset</th><th>consumer groups</th></tr>");
            foreach (var e in found)
            {
                var loc = Admin.MessageLookup.Locate(engine, e);
                string where = E(loc.State) + (loc.Resolution is null ? "" : $" <span class=\"muted\">by {E(loc.DecidedBy)}</span>");
                if (loc.TransactionId is not null && loc.Resolution is null)
                    where = $"<a href=\"/dashboard/transactions/{E(U(loc.TransactionId))}\">{where}</a>";
                sb.Append(CultureInfo.InvariantCulture, $"<tr data-message=\"{E(e.MessageId)}\"><td><code>{E(e.MessageId)}</code></td><td>{E(e.Topic)}</td><td>{E(string.Join(", ", e.Keys))}</td><td>{E(e.Tag)}</td><td>{E(loc.Kind)}</td>");
                sb.Append(CultureInfo.InvariantCulture, $"<td>{E(FormatAge(DateTimeOffset.UtcNow - e.StoredAt))} ago</td><td class=\"state\">{where}</td><td>{(loc.QueueId is null ? "—" : $"{loc.QueueId} / {loc.QueueOffset}")}</td>");
                sb.Append("<td>").Append(E(string.Join("; ", loc.Groups.Select(g => $"{g.Group}: {g.State}")))).Append("</td></tr>");
            }
            sb.Append("</table>");
            if (found.Count == 1 && !string.IsNullOrEmpty(id))
            {
                AppendMessage(sb, await Admin.MessageLookup.ReadAsync(engine, found[0], ct));
                AppendHistory(sb, Admin.MessageLookup.History(engine, Admin.MessageLookup.Locate(engine, found[0])));
            }
        }
        return Page("Find a message", "Messages", sb.ToString());
    }

    /// <summary>What happened to the message, oldest first.</summary>
    private static void AppendHistory(StringBuilder sb, (IReadOnlyList<Admin.MessageLookup.HistoryStep> Steps, int Dropped) history)
    {
        sb.Append("<h2>Delivery history</h2>");
        if (history.Dropped > 0)
            sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\">{history.Dropped} earlier step(s) not kept (the history is bounded).</p>");
        sb.Append("<table data-testid=\"history\"><tr><th>time</th><th>step</th><th>group</th><th class=\"num\">attempt</th><th>consumer</th><th>detail</th></tr>");
        foreach (var h in history.Steps)
        {
            string at = h.At?.ToString("yyyy-MM-dd HH:mm:ss.fff 'UTC'", CultureInfo.InvariantCulture) ?? "—";
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-step=\"{E(h.Kind)}\"><td>{E(at)}</td><td>{E(h.Kind.Replace('_', ' '))}</td><td>{E(h.Group ?? "—")}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{(h.Attempt is int a ? a.ToString(CultureInfo.InvariantCulture) : "")}</td><td>{E(h.ClientId ?? "—")}</td><td>{E(h.Detail ?? "")}</td></tr>");
        }
        sb.Append("</table><p class=\"muted\">Steps rebuilt from the log after a restart show no time where their record has none, and no consumer id.</p>");
    }

    /// <summary>One message's headers, properties and body preview (text, or hex when it is not text).</summary>
    private static void AppendMessage(StringBuilder sb, Admin.MessageLookup.Preview? m)
    {
        if (m is null)
        {
            sb.Append("<p class=\"muted\" data-testid=\"no-body\">The stored message can no longer be read (rolled back, cut by retention, waiting for its delivery time, or recalled).</p>");
            return;
        }
        static string T(DateTimeOffset? t) => t?.ToString("yyyy-MM-dd HH:mm:ss.fff 'UTC'", CultureInfo.InvariantCulture) ?? "—";
        sb.Append("<h2>Headers</h2><table data-testid=\"headers\">");
        foreach (var (name, value) in new (string, string?)[]
        {
            ("message id", m.MessageId), ("topic", m.Topic), ("queue / offset", m.QueueId is null ? null : $"{m.QueueId} / {m.QueueOffset}"), ("kind", m.Kind),
            ("tag", m.Tag), ("keys", string.Join(", ", m.Keys)), ("transaction id", m.TransactionId), ("born", T(m.BornAt)), ("born host", m.BornHost),
            ("stored", T(m.StoredAt)), ("message group", m.MessageGroup), ("deliver at", m.DeliverAt is null ? null : T(m.DeliverAt)), ("original topic", m.OriginalTopic),
        })
            sb.Append("<tr><th>").Append(E(name)).Append("</th><td>").Append(string.IsNullOrEmpty(value) ? "—" : E(value)).Append("</td></tr>");
        sb.Append("</table><h2>Properties</h2>");
        if (m.Properties.Count == 0) sb.Append("<p class=\"muted\" data-testid=\"properties\">none</p>");
        else
        {
            sb.Append("<table data-testid=\"properties\"><tr><th>name</th><th>value</th></tr>");
            foreach (var p in m.Properties.OrderBy(p => p.Key, StringComparer.Ordinal))
                sb.Append("<tr><td><code>").Append(E(p.Key)).Append("</code></td><td>").Append(E(p.Value)).Append("</td></tr>");
            sb.Append("</table>");
        }
        sb.Append(CultureInfo.InvariantCulture, $"<h2>Body</h2><p class=\"muted\" data-testid=\"body-info\">{E(FormatBytes(m.BodySize))}, shown as {E(m.BodyEncoding)}{(m.BodyTruncated ? $" (first {Admin.MessageLookup.PreviewBytes} bytes)" : "")}</p>");
        sb.Append("<pre data-testid=\"body\" class=\"body\">").Append(E(m.BodyPreview)).Append("</pre>");
    }

    private static IResult Topics(BrokerEngine engine)
    {
        var sb = new StringBuilder("<table data-testid=\"topics\"><tr><th>topic</th><th class=\"num\">queues</th><th class=\"num\">messages kept</th><th class=\"num\">messages ever</th><th>queue offsets (min–max)</th><th>consumer groups</th></tr>");
        foreach (var t in engine.ListTopics())
        {
            long kept = t.Queues.Sum(q => q.MaxOffset - q.MinOffset), ever = t.Queues.Sum(q => q.MaxOffset);
            string offsets = string.Join(", ", t.Queues.Select(q => $"{q.QueueId}: {q.MinOffset}–{q.MaxOffset}"));
            string groups = string.Join(", ", t.ConsumerGroups.Select(g => $"<a href=\"/dashboard/groups/{E(U(g))}\">{E(g)}</a>"));
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-topic=\"{E(t.Name)}\"><td>{E(t.Name)}{(t.System ? " <span class=\"muted\">(system)</span>" : "")}</td><td class=\"num\">{t.Queues.Count}</td><td class=\"num\">{kept}</td><td class=\"num\">{ever}</td><td><code>{E(offsets)}</code></td><td>{groups}</td></tr>");
        }
        sb.Append("</table>");
        return Page("Topics and queues", "Topics", sb.ToString());
    }

    /// <summary>Groups known only by their members that the group list shows at most (members name groups freely, up to
    /// <see cref="Core.Diagnostics.ConsumerMembers.MaxMembers"/> of them).</summary>
    internal const int MaxMembersOnlyGroupsListed = 1000;

    /// <summary>
    /// The lease groups (gRPC receives) and the pull groups (RocketMQ 4 Remoting, committed offsets), the re-drive cursors
    /// left out (<see cref="BrokerEngine.ListTopics"/>). Until 2026-12-06 a pull group was not listed and its page
    /// answered 404, so its dead letters had no re-drive button (found by review).
    /// </summary>
    private static IResult Groups(BrokerEngine engine)
    {
        // With the groups an operator configured before any consumer came, and those seen so far only as members (a
        // consumer connected that has not received yet; GET /api/groups/{group} shows both too; until the night session
        // of 2026-12-06 the list left out the second). Members name groups as they like: at most
        // MaxMembersOnlyGroupsListed of those, the count of the rest said below the table.
        var configured = engine.ConfiguredGroups().ToHashSet(StringComparer.Ordinal);
        var listed = engine.ListTopics().SelectMany(t => t.ConsumerGroups).Concat(configured).ToHashSet(StringComparer.Ordinal);
        var (membersOnlyShown, membersOnlyTotal) = engine.Consumers.GroupsWithMembers(MaxMembersOnlyGroupsListed, skip: listed.Contains);
        var membersOnly = membersOnlyShown.ToHashSet(StringComparer.Ordinal);
        var groups = listed.Concat(membersOnly).Order(StringComparer.Ordinal).ToList();
        var pull = engine.PullProgress().ToDictionary(p => p.Group, p => p.Topics, StringComparer.Ordinal); // one pass, not one per group
        var sb = new StringBuilder("<table data-testid=\"groups\"><tr><th>consumer group</th><th>order</th><th>topics</th><th class=\"num\">lag</th><th class=\"num\">in flight</th><th class=\"num\">dead-lettered</th><th>last seen</th><th>members</th></tr>");
        foreach (string g in groups)
        {
            var info = engine.FindGroup(g);
            var pulled = pull.GetValueOrDefault(g) ?? [];
            if (info is null && pulled.Count == 0 && !configured.Contains(g) && !membersOnly.Contains(g)) continue;
            var leaseTopics = info?.Topics ?? [];
            var topics = leaseTopics.Select(t => t.Topic).Concat(pulled.Select(t => t.Topic + " (pull)"));
            long dead = info?.DeadLettered ?? engine.DeadLetteredOf(g);
            sb.Append(CultureInfo.InvariantCulture, $"<tr data-group=\"{E(g)}\"><td><a href=\"/dashboard/groups/{E(U(g))}\">{E(g)}</a></td><td class=\"order\">{E(OrderShown(engine, g))}</td><td>{E(string.Join(", ", topics))}</td>");
            sb.Append(CultureInfo.InvariantCulture, $"<td class=\"num\">{leaseTopics.Sum(t => t.Lag) + pulled.Sum(t => t.Lag)}</td><td class=\"num\">{leaseTopics.Sum(t => t.InFlight)}</td><td class=\"num\">{dead}</td>");
            // A pull group's receives are its client's pulls, which the broker does not record per group.
            sb.Append("<td>").Append(leaseTopics.Count == 0 ? "—" : E(FormatAge(DateTimeOffset.UtcNow - leaseTopics.Max(t => t.LastSeen))) + " ago").Append("</td>");
            var members = engine.Consumers.Of(g);
            sb.Append("<td class=\"members\">").Append(members.Count == 0 ? "<span class=\"muted\">none connected</span>"
                : string.Join("<br>", members.Select(m => $"<code>{E(m.ClientId)}</code> <span class=\"muted\">{E(m.Protocol)}, seen {E(FormatAge(DateTimeOffset.UtcNow - m.LastSeen))} ago</span>")))
              .Append("</td></tr>");
        }
        sb.Append("</table>");
        if (membersOnlyTotal > membersOnlyShown.Count)
            sb.Append(CultureInfo.InvariantCulture, $"<p class=\"muted\" data-testid=\"groups-not-listed\">Groups known only by their connected consumers: the first {membersOnlyShown.Count} of {membersOnlyTotal} by name are listed; open another at /dashboard/groups/&lt;group&gt;.</p>");
        if (groups.Count == 0) sb.Append("<p class=\"muted\">No consumer group has received from this broker yet.</p>");
        return Page("Consumer groups", "Consumer groups", sb.ToString());
    }

    /// <summary>A lease group's or a pull group's page (as <c>GET /api/groups/{group}</c>: either kind, or a group only
    /// seen as members so far).</summary>
    private static IResult Group(BrokerEngine engine, string group, string? msg, string? err)
    {
        var info = engine.FindGroup(group);
        var pulled = engine.PullProgressOf(group);
        var members = engine.Consumers.Of(group);
        if (info is null && pulled.Count == 0 && members.Count == 0 && engine.GroupOrderOf(group) == GroupOrder.NotConfigured)
            return Page("Consumer group not found", "Consumer groups", $"<p>Consumer group <code>{E(group)}</code> has never received from this broker.</p>", 404);
        string deadLetterTopic = BrokerEngine.DeadLetterPrefix + group;
        long deadLettered = info?.DeadLettered ?? engine.DeadLetteredOf(group);
        var sb = new StringBuilder();
        if (!string.IsNullOrEmpty(msg)) sb.Append("<div class=\"flash\" role=\"status\">").Append(E(msg)).Append("</div>");
        if (!string.IsNullOrEmpty(err)) sb.Append("<div class=\"flash error\" role=\"alert\">").Append(E(err)).Append("</div>");
        sb.Append("<p>Order mode <b data-testid=\"order\">").Append(E(OrderShown(engine, group))).Append("</b></p>");
        sb.Append(CultureInfo.InvariantCulture, $"<p>Dead-letter topic <code>{E(deadLetterTopic)}</code>: {deadLettered} message(s) ever. ");
        if (deadLettered > 0)
            sb.Append(ActionButton($"/dashboard/groups/{U(group)}/redrive", "Re-drive dead letters",
                $"Move the dead letters of {group} not yet re-driven back to {group} (and no other group) to receive again?"));
        sb.Append("</p>");
        sb.Append("<h2>Members</h2>");
        if (members.Count == 0) sb.Append("<p class=\"muted\" data-testid=\"members\">No consumer of this group has been seen in the last minutes.</p>");
        else
        {
            sb.Append("<table data-testid=\"members\"><tr><th>client id</th><th>protocol</th><th>address</th><th>first seen</th><th>last seen</th></tr>");
            foreach (var m in members)
                sb.Append(CultureInfo.InvariantCulture, $"<tr data-member=\"{E(m.ClientId)}\"><td><code>{E(m.ClientId)}</code></td><td>{E(m.Protocol)}</td><td>{E(m.Address ?? "—")}</td><td>{E(FormatAge(DateTimeOffset.UtcNow - m.FirstSeen))} ago</td><td>{E(FormatAge(DateTimeOffset.UtcNow - m.LastSeen))} ago</td></tr>");
            sb.Append("</table>");
        }
        foreach (var t in info?.Topics ?? [])
        {
            sb.Append(CultureInfo.InvariantCulture, $"<h2>{E(t.Topic)}</h2><p>lag <b data-testid=\"lag\">{t.Lag}</b> · in flight {t.InFlight} · waiting redelivery {t.WaitingRedelivery} · last seen {E(FormatAge(DateTimeOffset.UtcNow - t.LastSeen))} ago</p>");
            sb.Append("<table><tr><th class=\"num\">queue</th><th class=\"num\">consumed</th><th class=\"num\">acked below</th><th class=\"num\">max offset</th><th class=\"num\">lag</th><th class=\"num\">in flight</th></tr>");
            foreach (var q in t.Queues)
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td class=\"num\">{q.QueueId}</td><td class=\"num\">{q.ConsumedOffset}</td><td class=\"num\">{q.AckedOffset}</td><td class=\"num\">{q.MaxOffset}</td><td class=\"num\">{q.Lag}</td><td class=\"num\">{q.InFlight}</td></tr>");
            sb.Append("</table>");
        }
        foreach (var t in pulled)
        {
            sb.Append(CultureInfo.InvariantCulture, $"<h2>{E(t.Topic)} <span class=\"muted\">(RocketMQ 4 pull: committed offsets)</span></h2><p>lag <b data-testid=\"lag\">{t.Lag}</b></p>");
            sb.Append("<table><tr><th class=\"num\">queue</th><th class=\"num\">committed</th><th class=\"num\">max offset</th><th class=\"num\">lag</th></tr>");
            foreach (var q in t.Queues)
                sb.Append(CultureInfo.InvariantCulture, $"<tr><td class=\"num\">{q.QueueId}</td><td class=\"num\">{q.ConsumedOffset}</td><td class=\"num\">{q.MaxOffset}</td><td class=\"num\">{q.Lag}</td></tr>");
            sb.Append("</table>");
        }
        return Page("Consumer group " + group, "Consumer groups", sb.ToString());
    }

    /// <summary>A group's order mode as <c>halfmsg group lag</c> shows it: orderly, concurrent, or default with the
    /// broker's --default-group-order in brackets.</summary>
    private static string OrderShown(BrokerEngine engine, string group)
        => Admin.AdminInputs.OrderShown(engine.GroupOrderOf(group), engine.Options.DefaultGroupOrder);

    internal static string FormatAge(TimeSpan age)
    {
        if (age < TimeSpan.Zero) age = TimeSpan.Zero;
        if (age.TotalSeconds < 60) return $"{age.TotalSeconds:0}s";
        if (age.TotalMinutes < 60) return $"{(int)age.TotalMinutes}m {age.Seconds}s";
        if (age.TotalHours < 48) return $"{(int)age.TotalHours}h {age.Minutes}m";
        return $"{(int)age.TotalDays}d {age.Hours}h";
    }

    internal static string FormatBytes(long bytes) => bytes switch
    {
        < 1024 => $"{bytes} B",
        < 1024 * 1024 => $"{bytes / 1024.0:0.#} KiB",
        < 1024L * 1024 * 1024 => $"{bytes / (1024.0 * 1024):0.#} MiB",
        _ => $"{bytes / (1024.0 * 1024 * 1024):0.##} GiB",
    };
}
