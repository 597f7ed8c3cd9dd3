using System.CommandLine;
using System.Text.Json;

namespace HalfMsg.Cli;

/// <summary>
/// <c>halfmsg</c>: topics, transactions, consumer groups and stats over the broker's admin API. Tables by default,
/// <c>--json</c> for scripts (the API's own JSON, unchanged), and exit codes a script can branch on (<see cref="ExitCodes"/>).
/// Credentials are the broker's access key and secret (HTTP Basic); pass the secret through <c>HALFMSG_SECRET</c> rather
/// than <c>--secret</c>, which other users can see in the process list.
/// </summary>
public static class HalfMsgCli
{
    public static async Task<int> RunAsync(string[] args, TextWriter output, TextWriter error,
        Func<string, string?>? environment = null, HttpMessageHandler? handler = null, CancellationToken ct = default)
    {
        environment ??= Environment.GetEnvironmentVariable;
        var url = new Option<string>("--url")
        {
            Description = "The broker's admin port (env HALFMSG_URL)",
            DefaultValueFactory = _ => environment("HALFMSG_URL") ?? "http://127.0.0.1:8080",
            Recursive = true,
        };
        var accessKey = new Option<string?>("--access-key")
        {
            Description = "Access key from the broker's Broker:Credentials (env HALFMSG_ACCESS_KEY)",
            DefaultValueFactory = _ => environment("HALFMSG_ACCESS_KEY"),
            Recursive = true,
        };
        var secret = new Option<string?>("--secret")
        {
            Description = "Its secret (prefer env HALFMSG_SECRET: a flag shows in the process list)",
            DefaultValueFactory = _ => environment("HALFMSG_SECRET"),
            Recursive = true,
        };
        var json = new Option<bool>("--json") { Description = "Print the API's JSON instead of a table", Recursive = true };
        var adminCa = new Option<string?>("--admin-ca")
        {
            Description = "With an https:// --url: trust this certificate (PEM or DER; or the broker's <data>/tls/self-signed.pfx) as well as the system's (env HALFMSG_ADMIN_CA)",
            DefaultValueFactory = _ => environment("HALFMSG_ADMIN_CA"),
            Recursive = true,
        };
        var insecure = new Option<bool>("--insecure")
        {
            Description = "With an https:// --url: do not verify the broker's certificate (anyone in between can read the credentials; prefer --admin-ca)",
            Recursive = true,
        };

        var clientCertificate = new Option<string?>("--client-certificate")
        {
            Description = "With an https:// --url: present this certificate when the broker asks for one (--tls-client-auth): PKCS#12 without a password, or PEM with its key in the same file (env HALFMSG_CLIENT_CERTIFICATE)",
            DefaultValueFactory = _ => environment("HALFMSG_CLIENT_CERTIFICATE"),
            Recursive = true,
        };

        var root = new RootCommand($"halfmsg: operate a HalfMsgBroker through its admin API.\n{ExitCodes.Help}") { url, accessKey, secret, json, adminCa, insecure, clientCertificate };

        // Runs one command: builds the client from the global options, maps transport failures to exit codes.
        void Handle(Command command, Func<ParseResult, AdminClient, bool, CancellationToken, Task<int>> run)
            => command.SetAction(async (parse, token) =>
            {
                if (!Uri.TryCreate(parse.GetValue(url), UriKind.Absolute, out var baseUri) || baseUri.Scheme is not ("http" or "https"))
                {
                    // "localhost:8080" parses as an absolute URI of scheme "localhost".
                    await error.WriteLineAsync($"halfmsg: --url must be an absolute URL like http://127.0.0.1:8080, not '{parse.GetValue(url)}'");
                    return ExitCodes.Usage;
                }
                if (baseUri.Scheme == "http" && !string.IsNullOrEmpty(parse.GetValue(adminCa)))
                {
                    // A pinned certificate says the operator expects the broker to be verified; plain HTTP verifies nothing
                    // and sends the credentials in clear, so going ahead would give them a protection they do not have.
                    await error.WriteLineAsync($"halfmsg: --admin-ca (or HALFMSG_ADMIN_CA) is for an https:// --url; '{baseUri}' is plain HTTP, "
                        + "where no certificate is verified and the credentials travel in clear: use https:// (the admin port answers it with --admin-tls auto or required), or drop --admin-ca");
                    return ExitCodes.Usage;
                }
                if (baseUri.Scheme == "http" && parse.GetValue(insecure))
                    await error.WriteLineAsync($"halfmsg: warning: --insecure does nothing with an http:// --url: '{baseUri}' is plain HTTP, neither verified nor encrypted");
                HttpMessageHandler? tls = null;
                if (handler is null && baseUri.Scheme == "https"
                    && (parse.GetValue(insecure) || !string.IsNullOrEmpty(parse.GetValue(adminCa)) || !string.IsNullOrEmpty(parse.GetValue(clientCertificate))))
                {
                    try
                    {
                        tls = AdminTls.Handler(parse.GetValue(adminCa), parse.GetValue(insecure), parse.GetValue(clientCertificate));
                    }
                    catch (ArgumentException ex)
                    {
                        await error.WriteLineAsync($"halfmsg: {ex.Message}");
                        return ExitCodes.Usage;
                    }
                    if (parse.GetValue(insecure))
                        await error.WriteLineAsync("halfmsg: warning: --insecure: the broker's certificate is not verified; anyone between you and it can read the credentials");
                }
                using var owned = tls;
                var client = AdminClient.Create(baseUri, parse.GetValue(accessKey), parse.GetValue(secret), handler ?? tls);
                try
                {
                    return await run(parse, client, parse.GetValue(json), token);
                }
                catch (HttpRequestException ex) when (ex.InnerException is System.Security.Authentication.AuthenticationException auth)
                {
                    await error.WriteLineAsync($"halfmsg: the broker at {baseUri} presented a certificate that is not trusted ({auth.Message}); "
                        + "give it with --admin-ca <file> (a self-signed one: the broker's <data>/tls/self-signed.pfx), or --insecure; "
                        + "or the broker asks for a client certificate (--tls-client-auth) and refused yours or found none: --client-certificate <file>");
                    return ExitCodes.Unreachable;
                }
                catch (HttpRequestException ex)
                {
                    await error.WriteLineAsync($"halfmsg: cannot reach the broker at {baseUri}: {ex.Message}");
                    return ExitCodes.Unreachable;
                }
                catch (TaskCanceledException) when (!token.IsCancellationRequested)
                {
                    await error.WriteLineAsync($"halfmsg: the broker at {baseUri} did not answer in time (a change asked for may still have been made: look before repeating it)");
                    return ExitCodes.Unreachable;
                }
            });

        async Task<int> Print(AdminClient.Answer answer, bool asJson, Action<JsonElement> table)
        {
            if (!answer.Ok)
            {
                await error.WriteLineAsync($"halfmsg: {answer.Error}");
                return answer.ExitCode;
            }
            if (asJson) await output.WriteLineAsync(JsonSerializer.Serialize(answer.Body, Indented));
            else table(answer.Body);
            return ExitCodes.Ok;
        }

        // ---------------------------------------------------------------- topics
        var topics = new Command("topics", "List topics with their queues, message counts and consumer groups");
        Handle(topics, async (_, client, asJson, token) => await Print(await client.GetAsync("/api/topics", token), asJson, body =>
        {
            var t = new Table("topic", "queues", "messages", "kept", "consumer groups");
            foreach (var topic in body.EnumerateArray())
            {
                var queues = topic.GetProperty("queues").EnumerateArray().ToList();
                t.Row(topic.GetProperty("name").GetString(), queues.Count, queues.Sum(q => q.GetProperty("maxOffset").GetInt64()),
                    queues.Sum(q => q.GetProperty("maxOffset").GetInt64() - q.GetProperty("minOffset").GetInt64()),
                    string.Join(",", topic.GetProperty("consumerGroups").EnumerateArray().Select(g => g.GetString())));
            }
            t.Write(output);
        }));
        root.Add(topics);
        var topicCmd = new Command("topic", "Manage one topic");
        var topicName = new Argument<string>("name") { Description = "Topic name" };
        var createQueues = new Option<int?>("--queues")
        {
            Description = "Queues (1-1024; default: the broker's --queues-per-topic). An existing topic with fewer gets the queues it lacks; fewer than it has is refused",
        };
        var create = new Command("create", "Create a topic, or add queues to an existing one (--queues); no change if it exists with as many") { topicName, createQueues };
        Handle(create, async (parse, client, asJson, token) =>
        {
            string path = $"/api/topics/{Uri.EscapeDataString(parse.GetValue(topicName)!)}";
            if (parse.GetValue(createQueues) is { } n) path += $"?queues={n.ToString(System.Globalization.CultureInfo.InvariantCulture)}";
            return await Print(await client.PostAsync(path, token), asJson, body =>
            {
                string what = body.GetProperty("created").GetBoolean() ? "created"
                    : body.TryGetProperty("grownFrom", out var from) && from.ValueKind == JsonValueKind.Number
                        ? $"grown from {from.GetInt32()} to {body.GetProperty("queues").GetInt32()} queues"
                        : "already exists";
                output.WriteLine($"{body.GetProperty("topic").GetString()}: {what}");
            });
        });
        topicCmd.Add(create);
        var deleteTopicName = new Argument<string>("name") { Description = "Topic name" };
        var deleteTopic = new Command("delete", "Delete a topic: its queues, consumer progress and leases (bodies stay until retention cuts them)") { deleteTopicName };
        Handle(deleteTopic, async (parse, client, asJson, token) =>
            await Print(await client.PostAsync($"/api/topics/{Uri.EscapeDataString(parse.GetValue(deleteTopicName)!)}/delete", token), asJson, body =>
                output.WriteLine($"{body.GetProperty("topic").GetString()}: deleted")));
        topicCmd.Add(deleteTopic);
        root.Add(topicCmd);

        // ---------------------------------------------------------------- tx
        var tx = new Command("tx", "Transactions (half messages): list, show, resume, commit, roll back");
        var limit = new Option<int>("--limit") { Description = "Items per page (1-1000)", DefaultValueFactory = _ => 100 };
        var all = new Option<bool>("--all") { Description = "Page through every item (progress on stderr)" };
        var topicFilter = new Option<string?>("--topic") { Description = "Only halves of this topic" };
        foreach (string view in new[] { "pending", "parked" })
        {
            var list = new Command(view, view == "pending" ? "Halves waiting for a decision" : "Halves parked after the maximum check-backs") { limit, all, topicFilter };
            Handle(list, async (parse, client, asJson, token) =>
            {
                int pageSize = parse.GetValue(limit);
                string? only = parse.GetValue(topicFilter);
                bool Matches(JsonElement i) => only is null || i.GetProperty("topic").GetString() == only;
                long? after = null;
                var items = new List<JsonElement>();
                int total;
                while (true)
                {
                    var page = await client.GetAsync($"/api/transactions/{view}?limit={pageSize}" + (after is { } a ? $"&after={a}" : ""), token);
                    if (!page.Ok) return await Print(page, asJson, _ => { });
                    total = page.Body.GetProperty("total").GetInt32();
                    var got = page.Body.GetProperty("items").EnumerateArray().ToList();
                    items.AddRange(got);
                    if (got.Count < pageSize || page.Body.GetProperty("next").ValueKind != JsonValueKind.Number) break;
                    // Without --all one page is shown; with --topic, a page of that topic's halves (the filter is applied
                    // here, so it pages on until it has one: until 2026-12-05 it searched the first page only).
                    if (!parse.GetValue(all) && (only is null || items.Count(Matches) >= pageSize)) break;
                    after = page.Body.GetProperty("next").GetInt64();
                    await error.WriteLineAsync($"halfmsg: fetched {items.Count} of {total} {view}...");
                }
                var shown = items.Where(Matches).ToList();
                if (!parse.GetValue(all)) shown = shown.Take(pageSize).ToList();
                if (asJson)
                {
                    await output.WriteLineAsync(JsonSerializer.Serialize(new { total, items = shown }, Indented));
                    return ExitCodes.Ok;
                }
                var t = new Table("transaction id", "topic", "producer group", "age", "checks", view == "pending" ? "next check" : "parked at");
                var now = DateTimeOffset.UtcNow;
                foreach (var i in shown)
                {
                    var stored = i.GetProperty("storedAt").GetDateTimeOffset();
                    t.Row(i.GetProperty("transactionId").GetString(), i.GetProperty("topic").GetString(), i.GetProperty("producerGroup").GetString(),
                        Age(now - stored), i.GetProperty("checks").GetInt32(),
                        view == "pending"
                            ? (i.TryGetProperty("waitingFor", out var w) && w.ValueKind == JsonValueKind.String ? "waiting: no producer connected" : Time(i.GetProperty("nextCheckAt")))
                            : Time(i.GetProperty("parkedAt")));
                }
                t.Write(output);
                await output.WriteLineAsync($"{shown.Count} shown of {total} {view}");
                return ExitCodes.Ok;
            });
            tx.Add(list);
        }
        var txId = new Argument<string>("id") { Description = "Transaction id" };
        var show = new Command("show", "One pending or parked half") { txId };
        Handle(show, async (parse, client, asJson, token) =>
            await Print(await client.GetAsync($"/api/transactions/{Uri.EscapeDataString(parse.GetValue(txId)!)}", token), asJson, body =>
            {
                var t = new Table("field", "value");
                foreach (var p in body.EnumerateObject()) t.Row(p.Name, p.Value.ValueKind == JsonValueKind.Null ? "-" : p.Value.ToString());
                t.Write(output);
            }));
        tx.Add(show);
        foreach (string action in new[] { "resume", "commit", "rollback" })
        {
            var id = new Argument<string>("id") { Description = "Transaction id" };
            var command = new Command(action, action switch
            {
                "resume" => "Check a parked half again from zero",
                "commit" => "Commit: the message becomes visible to consumers (idempotent)",
                _ => "Roll back: the message is discarded (idempotent)",
            }) { id };
            Handle(command, async (parse, client, asJson, token) =>
                await Print(await client.PostAsync($"/api/transactions/{Uri.EscapeDataString(parse.GetValue(id)!)}/{action}", token), asJson, body =>
                {
                    string txid = body.GetProperty("transactionId").GetString()!;
                    output.WriteLine(action == "resume"
                        ? $"{txid}: {body.GetProperty("message").GetString()}"
                        : $"{txid}: {body.GetProperty("outcome").GetString()!.ToLowerInvariant()}{(body.GetProperty("duplicate").GetBoolean() ? " (already decided so; nothing changed)" : "")}");
                }));
            tx.Add(command);
        }
        root.Add(tx);

        // ---------------------------------------------------------------- group
        var group = new Command("group", "Consumer groups");
        var groupName = new Argument<string>("group") { Description = "Consumer group" };
        var lag = new Command("lag", "Order mode, and lag, in flight and dead-lettered per topic and queue") { groupName };
        Handle(lag, async (parse, client, asJson, token) =>
            await Print(await client.GetAsync($"/api/groups/{Uri.EscapeDataString(parse.GetValue(groupName)!)}", token), asJson, body =>
            {
                // The group's order mode, as the dashboard shows it: a group not configured follows --default-group-order.
                if (body.TryGetProperty("order", out var mode) && mode.GetString() is { } orderName)
                    output.WriteLine(orderName == "default" && body.TryGetProperty("effectiveOrder", out var effective) && effective.GetString() is { } effectiveName
                        ? $"order: default ({effectiveName})"
                        : $"order: {orderName}");
                var t = new Table("topic", "queue", "consumed", "acked", "max", "lag", "in flight");
                foreach (var topic in body.GetProperty("topics").EnumerateArray())
                    foreach (var q in topic.GetProperty("queues").EnumerateArray())
                        t.Row(topic.GetProperty("topic").GetString(), q.GetProperty("queueId").GetInt32(), q.GetProperty("consumedOffset").GetInt64(),
                            q.GetProperty("ackedOffset").GetInt64(), q.GetProperty("maxOffset").GetInt64(), q.GetProperty("lag").GetInt64(), q.GetProperty("inFlight").GetInt32());
                t.Write(output);
                long total = body.GetProperty("topics").EnumerateArray().Sum(x => x.GetProperty("lag").GetInt64());
                output.WriteLine(body.TryGetProperty("deadLettered", out var dead)
                    ? $"total lag {total}; dead-lettered {dead.GetInt64()} in {body.GetProperty("deadLetterTopic").GetString()}"
                    : $"total lag {total}");
            }));
        group.Add(lag);
        var deleteGroupName = new Argument<string>("group") { Description = "Consumer group" };
        var deleteGroup = new Command("delete", "Forget a consumer group: its progress and leases on every topic (messages stay for other groups)") { deleteGroupName };
        Handle(deleteGroup, async (parse, client, asJson, token) =>
            await Print(await client.PostAsync($"/api/groups/{Uri.EscapeDataString(parse.GetValue(deleteGroupName)!)}/delete", token), asJson, body =>
                output.WriteLine($"{body.GetProperty("group").GetString()}: deleted")));
        group.Add(deleteGroup);
        var orderGroupName = new Argument<string>("group") { Description = "Consumer group (it need not have received yet)" };
        var orderMode = new Argument<string>("mode") { Description = "orderly (each queue held while a message of it is in flight, as RocketMQ's consumeMessageOrderly), concurrent (nothing held), or default (the broker's --default-group-order)" };
        var order = new Command("order", "Set how a consumer group is served with respect to order") { orderGroupName, orderMode };
        Handle(order, async (parse, client, asJson, token) =>
            await Print(await client.PostAsync($"/api/groups/{Uri.EscapeDataString(parse.GetValue(orderGroupName)!)}/order?mode={Uri.EscapeDataString(parse.GetValue(orderMode)!)}", token), asJson, body =>
                output.WriteLine($"{body.GetProperty("group").GetString()}: {body.GetProperty("order").GetString()}")));
        group.Add(order);
        var resetGroupName = new Argument<string>("group") { Description = "Consumer group: a pull group (RocketMQ 4 Remoting) or a lease group (gRPC) that receives from this topic only" };
        var resetTopic = new Option<string>("--topic") { Description = "Topic whose queues to reset", Required = true };
        var resetTo = new Option<string>("--to") { Description = "earliest, latest, a time (2026-01-31T12:00:00Z) or Unix milliseconds", DefaultValueFactory = _ => "earliest" };
        var reset = new Command("reset-offset", "Move a group's position on every queue of a topic: a pull group's committed offsets, or a lease group's progress (its in-flight leases end). Stop its consumers first: a running pull consumer commits its own") { resetGroupName, resetTopic, resetTo };
        Handle(reset, async (parse, client, asJson, token) =>
            await Print(await client.PostAsync($"/api/groups/{Uri.EscapeDataString(parse.GetValue(resetGroupName)!)}/reset-offset?topic={Uri.EscapeDataString(parse.GetValue(resetTopic)!)}&to={Uri.EscapeDataString(parse.GetValue(resetTo)!)}", token), asJson, body =>
            {
                var t = new Table("queue", "previous", "offset");
                foreach (var q in body.GetProperty("queues").EnumerateArray())
                    t.Row(q.GetProperty("queueId").GetInt32(), q.GetProperty("previous").ValueKind == JsonValueKind.Number ? q.GetProperty("previous").GetInt64() : null, q.GetProperty("offset").GetInt64());
                t.Write(output);
                if (body.TryGetProperty("kind", out var kind) && kind.GetString() == "lease")
                    output.WriteLine($"lease group: {body.GetProperty("leasesDropped").GetInt32()} in-flight lease(s) ended");
            }));
        group.Add(reset);
        root.Add(group);

        // ---------------------------------------------------------------- dlq
        var dlq = new Command("dlq", "Dead-letter topics (%DLQ%<group>)");
        var dlqGroup = new Argument<string>("group") { Description = "Consumer group whose dead letters to move" };
        var dlqTopic = new Option<string?>("--topic") { Description = "Only dead letters that came from this topic" };
        var dlqMax = new Option<int?>("--max") { Description = "Move at most this many (default: all)" };
        var redrive = new Command("redrive", "Move dead letters back to the group, and no other, to receive again: onto their topic for it alone, or into its %RETRY% topic for a Remoting consumer's (progress on stderr)") { dlqGroup, dlqTopic, dlqMax };
        Handle(redrive, async (parse, client, asJson, token) =>
        {
            string g = parse.GetValue(dlqGroup)!;
            string? only = parse.GetValue(dlqTopic);
            if (parse.GetValue(dlqMax) is < 1)
            {
                await error.WriteLineAsync("halfmsg: --max must be at least 1");
                return ExitCodes.Usage;
            }
            long remaining = parse.GetValue(dlqMax) ?? long.MaxValue;
            int moved = 0, skipped = 0, notRedriven = 0;
            long? continuation = null;
            var ids = new List<string>();
            var left = new List<JsonElement>();
            string deadLetterTopic = "%DLQ%" + g;
            while (remaining > 0)
            {
                // In chunks, so a long re-drive shows progress and each request stays short.
                int chunk = (int)Math.Min(100, remaining);
                string path = $"/api/dlq/{Uri.EscapeDataString(g)}/redrive?max={chunk}" + (only is null ? "" : $"&topic={Uri.EscapeDataString(only)}")
                    + (continuation is null ? "" : $"&continuation={continuation}");
                var answer = await client.PostAsync(path, token);
                if (answer.Body.ValueKind == JsonValueKind.Object && answer.Body.TryGetProperty("redriven", out var r))
                {
                    moved += r.GetInt32();
                    skipped += answer.Body.GetProperty("skipped").GetInt32();
                    ids.AddRange(answer.Body.GetProperty("messageIds").EnumerateArray().Select(i => i.GetString()!));
                    deadLetterTopic = answer.Body.GetProperty("deadLetterTopic").GetString()!;
                    // The chunks after the first pass on its continuation: each goes on past the dead letters the ones
                    // before it left instead of trying them again, so the counts add up (until 2026-12-06 each chunk
                    // tried them all again and the last one's count, which could see only part of them, replaced the
                    // total; found by review).
                    if (answer.Body.TryGetProperty("notRedriven", out var n))
                    {
                        notRedriven += n.GetInt32();
                        left.AddRange(answer.Body.GetProperty("notRedrivenLetters").EnumerateArray().Take(100 - left.Count).Select(l => l.Clone()));
                    }
                    if (answer.Body.TryGetProperty("continuation", out var c) && c.ValueKind == JsonValueKind.Number) continuation = c.GetInt64();
                }
                if (!answer.Ok)
                {
                    if (moved > 0) await error.WriteLineAsync($"halfmsg: {moved} moved before the broker stopped");
                    if (notRedriven > 0) await error.WriteLineAsync($"halfmsg: {notRedriven} could not be put back and stay in {deadLetterTopic}");
                    await error.WriteLineAsync($"halfmsg: {answer.Error}");
                    return answer.ExitCode;
                }
                int got = answer.Body.GetProperty("redriven").GetInt32();
                remaining -= got;
                // Fewer than asked: nothing more, unless the chunk stopped at its limit of letters left (more may be
                // behind them).
                if (got < chunk && !(answer.Body.TryGetProperty("more", out var more) && more.ValueKind == JsonValueKind.True)) break;
                await error.WriteLineAsync($"halfmsg: moved {moved} from {deadLetterTopic}...");
            }
            if (asJson)
                await output.WriteLineAsync(JsonSerializer.Serialize(new
                {
                    group = g, deadLetterTopic, topic = only, redriven = moved, skipped, messageIds = ids, notRedriven, notRedrivenLetters = left,
                }, Indented));
            else
            {
                await output.WriteLineAsync($"{deadLetterTopic}: {moved} moved back to their topics" + (skipped > 0 ? $", {skipped} from other topics passed over" : "")
                    + (notRedriven > 0 ? $", {notRedriven} could not be put back (they stay there; re-drive again once the cause is fixed)" : ""));
                foreach (var l in left)
                    await output.WriteLineAsync($"  {l.GetProperty("messageId").GetString() ?? $"offset {l.GetProperty("deadLetterOffset").GetInt64()}"} -> {l.GetProperty("target").GetString() ?? "?"}: {l.GetProperty("reason").GetString()}");
                if (notRedriven > left.Count) await output.WriteLineAsync($"  ... and {notRedriven - left.Count} more");
            }
            return ExitCodes.Ok;
        });
        dlq.Add(redrive);
        root.Add(dlq);

        // ---------------------------------------------------------------- message
        var message = new Command("message", "Find a message by id or key and say where it is");
        var messageId = new Argument<string>("id") { Description = "Message id (for a transactional message: its transaction id)" };
        var showMessage = new Command("show", "Where one message is (pending, committed on queue/offset, acked by which groups, expired), its headers, body and delivery history") { messageId };
        void WriteLocations(IEnumerable<JsonElement> items)
        {
            var t = new Table("message id", "topic", "keys", "state", "queue", "offset", "groups");
            foreach (var m in items)
                t.Row(m.GetProperty("messageId").GetString(), m.GetProperty("topic").GetString(),
                    string.Join(",", m.GetProperty("keys").EnumerateArray().Select(k => k.GetString())), m.GetProperty("state").GetString(),
                    m.GetProperty("queueId").ValueKind == JsonValueKind.Number ? m.GetProperty("queueId").GetInt32() : null,
                    m.GetProperty("queueOffset").ValueKind == JsonValueKind.Number ? m.GetProperty("queueOffset").GetInt64() : null,
                    string.Join(", ", m.GetProperty("groups").EnumerateArray().Select(g => $"{g.GetProperty("group").GetString()}: {g.GetProperty("state").GetString()}")));
            t.Write(output);
        }
        Handle(showMessage, async (parse, client, asJson, token) =>
            await Print(await client.GetAsync($"/api/messages/{Uri.EscapeDataString(parse.GetValue(messageId)!)}", token), asJson, body =>
            {
                WriteLocations([body]);
                if (body.TryGetProperty("message", out var m) && m.ValueKind == JsonValueKind.Object)
                {
                    var props = m.GetProperty("properties").EnumerateObject().Select(p => $"{p.Name}={p.Value.GetString()}").ToList();
                    if (props.Count > 0) output.WriteLine("properties: " + string.Join(", ", props));
                    output.WriteLine($"body ({m.GetProperty("bodySize").GetInt32()} bytes, {m.GetProperty("bodyEncoding").GetString()}"
                        + (m.GetProperty("bodyTruncated").GetBoolean() ? ", first 4096 shown" : "") + "):");
                    output.WriteLine(m.GetProperty("bodyPreview").GetString());
                }
                if (body.TryGetProperty("history", out var history) && history.ValueKind == JsonValueKind.Array)
                {
                    output.WriteLine("history:");
                    var h = new Table("time", "step", "group", "attempt", "consumer", "detail");
                    foreach (var step in history.EnumerateArray())
                    {
                        string? S(string name) => step.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
                        h.Row(step.GetProperty("at").ValueKind == JsonValueKind.String ? step.GetProperty("at").GetDateTimeOffset().ToString("yyyy-MM-dd HH:mm:ss.fff", System.Globalization.CultureInfo.InvariantCulture) : "-",
                            S("kind")!.Replace('_', ' '), S("group") ?? "-",
                            step.GetProperty("attempt").ValueKind == JsonValueKind.Number ? step.GetProperty("attempt").GetInt32() : null,
                            S("clientId") ?? "-", S("detail") ?? "");
                    }
                    h.Write(output);
                    if (body.TryGetProperty("historyDropped", out var dropped) && dropped.GetInt32() > 0)
                        output.WriteLine($"({dropped.GetInt32()} earlier steps not kept)");
                }
            }));
        message.Add(showMessage);
        var key = new Option<string>("--key") { Description = "Message key", Required = true };
        var keyTopic = new Option<string?>("--topic") { Description = "Only messages of this topic" };
        var find = new Command("find", "Messages with this key (newest last)") { key, keyTopic };
        Handle(find, async (parse, client, asJson, token) =>
        {
            string path = $"/api/messages?key={Uri.EscapeDataString(parse.GetValue(key)!)}"
                + (parse.GetValue(keyTopic) is { } t ? $"&topic={Uri.EscapeDataString(t)}" : "");
            var answer = await client.GetAsync(path, token);
            if (answer.Ok && answer.Body.GetArrayLength() == 0)
            {
                // The same exit code with --json (its "[]" printed), so a script can tell "none" apart.
                if (asJson) await output.WriteLineAsync("[]");
                await error.WriteLineAsync($"halfmsg: no message with key '{parse.GetValue(key)}' in the index");
                return ExitCodes.NotFound;
            }
            // Nothing found during the broker's index warm-up is its 404 IndexWarming, printed by Print with its reason.
            if (answer.Ok && answer.IndexWarming)
                await error.WriteLineAsync($"halfmsg: the broker's message index is still being rebuilt after its start: messages with key '{parse.GetValue(key)}' it has not reached yet are not listed; try again shortly");
            return await Print(answer, asJson, body => WriteLocations(body.EnumerateArray()));
        });
        message.Add(find);
        root.Add(message);

        // ---------------------------------------------------------------- stats, health
        var stats = new Command("stats", "Broker counters");
        Handle(stats, async (_, client, asJson, token) => await Print(await client.GetAsync("/api/stats", token), asJson, body =>
        {
            var t = new Table("counter", "value");
            foreach (var p in body.EnumerateObject().Where(p => p.Value.ValueKind == JsonValueKind.Number)) t.Row(p.Name, p.Value.GetInt64());
            t.Write(output);
        }));
        root.Add(stats);
        var health = new Command("health", "Is the broker ready (exit 0) or not (1)");
        Handle(health, async (_, client, asJson, token) =>
        {
            var answer = await client.GetAsync("/health", token);
            if (asJson) await output.WriteLineAsync(JsonSerializer.Serialize(answer.Body, Indented));
            else await output.WriteLineAsync(answer.Body.ValueKind == JsonValueKind.Object && answer.Body.TryGetProperty("status", out var s) ? s.GetString() : $"HTTP {(int)answer.Status}");
            return answer.Ok ? ExitCodes.Ok : answer.ExitCode;
        });
        root.Add(health);

        var parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (var e in parsed.Errors) await error.WriteLineAsync($"halfmsg: {e.Message}");
            await error.WriteLineAsync("halfmsg: see halfmsg --help");
            return ExitCodes.Usage;
        }
        return await parsed.InvokeAsync(new InvocationConfiguration { Output = output, Error = error }, ct);
    }

    private static readonly JsonSerializerOptions Indented = new() { WriteIndented = true };

    private static string Age(TimeSpan age) => age.TotalSeconds < 60 ? $"{Math.Max(0, age.TotalSeconds):0}s"
        : age.TotalMinutes < 60 ? $"{(int)age.TotalMinutes}m" : age.TotalHours < 48 ? $"{(int)age.TotalHours}h" : $"{(int)age.TotalDays}d";

    private static string Time(JsonElement e) => e.ValueKind == JsonValueKind.String
        ? e.GetDateTimeOffset().ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture) : "-";
}
