using System.Runtime.CompilerServices;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ConsumerClient.Idempotency;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace HalfMsg.Client.Tests;

/// <summary>
/// Runs the quick-start code of <c>README.md</c> against a real broker. The code between the
/// <c>// snippet:NAME:begin</c> / <c>end</c> markers below must appear verbatim (after removing the indentation) in
/// the README, which <see cref="The_readme_contains_exactly_the_tested_snippets"/> checks, so the README cannot rot.
/// </summary>
[Trait("Category", "E2E")]
public sealed class ReadmeSnippetTests(BrokerFixture fixture) : IClassFixture<BrokerFixture>
{
    [Fact]
    public async Task The_quick_start_publishes_iff_the_local_transaction_commits_and_consumes_once()
    {
        using var producerDb = new SqliteDatabase();
        using var consumerDb = new SqliteDatabase();
        string endpoint = fixture.Broker.Endpoint;
        {
            string connectionString = producerDb.ConnectionString;
            // snippet:producer:begin
            var builder = Host.CreateApplicationBuilder();
            // Usually in appsettings.json: "HalfMsg": { "Producer": { "Endpoints": "...", "Topics": [ "orders" ] } }
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["HalfMsg:Producer:Endpoints"] = endpoint,
                ["HalfMsg:Producer:Topics:0"] = "orders", // every topic you send transactional messages to
            });
            builder.Services.AddHalfMsgProducer(builder.Configuration.GetSection("HalfMsg:Producer"), (services, options) => options with
            {
                // Answers the broker's check-backs from the barrier table (correct whatever crashed when).
                TransactionChecker = new BarrierChecker(() => new SqliteConnection(connectionString), BarrierDialects.Sqlite),
            });
            using IHost host = builder.Build();
            await host.StartAsync(); // starts the producer (routes, Telemetry); StopAsync disposes it
            Producer producer = host.Services.GetRequiredService<Producer>();

            await using var db = new SqliteConnection(connectionString);
            await db.OpenAsync();
            await using (var ddl = db.CreateCommand())
            {
                ddl.CommandText = "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, amount INTEGER NOT NULL)";
                await ddl.ExecuteNonQueryAsync();
            }

            string orderId = Guid.NewGuid().ToString("N");
            // The event is published if and only if this local transaction commits.
            SendReceipt receipt = await producer.ExecuteAsync(db, new Message("orders", $"order {orderId} created") { Keys = [orderId] },
                async (tx, ct) =>
                {
                    await using var insert = db.CreateCommand();
                    insert.Transaction = (SqliteTransaction)tx;
                    insert.CommandText = "INSERT INTO orders (id, amount) VALUES ($id, 42)";
                    insert.Parameters.AddWithValue("$id", orderId);
                    await insert.ExecuteNonQueryAsync(ct);
                });
            Console.WriteLine($"order {orderId} stored and published as message {receipt.MessageId}");
            await host.StopAsync();
            // snippet:producer:end
        }

        {
            string connectionString = producerDb.ConnectionString;
            // snippet:prune:begin
            await using var connection = new SqliteConnection(connectionString);
            await connection.OpenAsync();
            long deleted = await BarrierSchema.PruneAsync(connection, BarrierDialects.Sqlite, olderThan: TimeSpan.FromDays(7));
            // snippet:prune:end
            Assert.Equal(0, deleted); // the quick start's one row is minutes old
        }

        {
            string connectionString = consumerDb.ConnectionString;
            // snippet:consumer:begin
            await using (var db = new SqliteConnection(connectionString))
            {
                await db.OpenAsync();
                await using var ddl = db.CreateCommand();
                ddl.CommandText = "CREATE TABLE IF NOT EXISTS shipments (order_event TEXT NOT NULL)";
                await ddl.ExecuteNonQueryAsync();
            }

            var builder = Host.CreateApplicationBuilder();
            // Usually in appsettings.json: "HalfMsg": { "Consumer": { "Endpoints": "...", "ConsumerGroup": "shipping", ... } }
            builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
            {
                ["HalfMsg:Consumer:Endpoints"] = endpoint,
                ["HalfMsg:Consumer:ConsumerGroup"] = "shipping",
                ["HalfMsg:Consumer:Subscriptions:orders"] = "*", // topic = tag expression
            });
            builder.Services.AddHalfMsgPushConsumer(builder.Configuration.GetSection("HalfMsg:Consumer"), (services, options) => options with
            {
                // The writes run in one local transaction with a (group, message id) row in halfmsg_consumed: a message
                // the broker delivers again (lost ack, crash, timeout) is acknowledged without running them twice.
                Handler = IdempotentHandler.Create(() => new SqliteConnection(connectionString), "shipping",
                    async (message, tx, ct) =>
                    {
                        await using var insert = tx.Connection!.CreateCommand();
                        insert.Transaction = tx;
                        insert.CommandText = "INSERT INTO shipments (order_event) VALUES ($event)";
                        insert.Parameters.Add(new SqliteParameter("$event", message.BodyAsString()));
                        await insert.ExecuteNonQueryAsync(ct);
                    }),
            });
            using IHost host = builder.Build();
            await host.StartAsync(); // consumes until the host stops
            // snippet:consumer:end

            await E2E.EventuallyAsync(() => Count(consumerDb, "SELECT COUNT(*) FROM shipments") == 1, TimeSpan.FromSeconds(20), "the shipment row");
            // The handler committed its rows; stop once its ack reached the broker (not after a pause).
            await E2E.EventuallyAsync(() => E2E.GroupDoneAsync(fixture.Broker.AdminUrl, "shipping", "orders"), TimeSpan.FromSeconds(20), "the broker to have the ack");
            await host.StopAsync();
        }

        Assert.Equal(1, Count(producerDb, "SELECT COUNT(*) FROM orders"));
        string storedOrderId = (string)Scalar(producerDb, "SELECT id FROM orders")!;
        Assert.Equal(1, Count(consumerDb, "SELECT COUNT(*) FROM shipments"));
        Assert.Equal(1, Count(consumerDb, "SELECT COUNT(*) FROM halfmsg_consumed WHERE consumer_group = 'shipping'"));
        Assert.Equal($"order {storedOrderId} created", Scalar(consumerDb, "SELECT order_event FROM shipments"));
    }

    [Fact]
    public void The_readme_contains_exactly_the_tested_snippets()
    {
        string source = File.ReadAllText(ThisFile());
        string readme = Normalize(File.ReadAllText(Path.Combine(Path.GetDirectoryName(ThisFile())!, "..", "..", "README.md")));
        foreach (string name in new[] { "producer", "prune", "consumer" })
        {
            string snippet = Extract(source, name);
            Assert.True(readme.Contains(snippet, StringComparison.Ordinal),
                $"README.md does not contain the tested '{name}' snippet verbatim. Expected:\n{snippet}");
        }
    }

    private static string ThisFile([CallerFilePath] string path = "") => path;

    private static string Normalize(string text) => text.Replace("\r\n", "\n", StringComparison.Ordinal);

    /// <summary>The lines between the markers, with the common indentation removed.</summary>
    private static string Extract(string source, string name)
    {
        string[] lines = Normalize(source).Split('\n');
        int begin = Array.FindIndex(lines, l => l.Trim() == $"// snippet:{name}:begin");
        int end = Array.FindIndex(lines, l => l.Trim() == $"// snippet:{name}:end");
        Assert.True(begin >= 0 && end > begin, $"markers of snippet '{name}' not found");
        string[] body = lines[(begin + 1)..end];
        int indent = body.Where(l => l.Trim().Length > 0).Min(l => l.Length - l.TrimStart().Length);
        return string.Join('\n', body.Select(l => l.Length >= indent ? l[indent..] : l.TrimStart()));
    }

    private static long Count(SqliteDatabase db, string sql) => Convert.ToInt64(Scalar(db, sql));

    private static object? Scalar(SqliteDatabase db, string sql)
    {
        using var c = new SqliteConnection(db.ConnectionString);
        c.Open();
        using SqliteCommand cmd = c.CreateCommand();
        cmd.CommandText = sql;
        return cmd.ExecuteScalar();
    }
}
