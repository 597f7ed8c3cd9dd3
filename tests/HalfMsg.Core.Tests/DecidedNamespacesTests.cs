using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The remembered decisions' table of namespaces holds the namespaces some remembered decision is of: a namespace is
/// forgotten with its last decision (by the count bound or the time bound), and its number may go to another one, never
/// while a remembered decision still carries it. Until the small-hours session of 2026-12-08 the table grew by one per
/// distinct namespace that ever had a decision, for the life of the process.
/// </summary>
public sealed class DecidedNamespacesTests
{
    private static async Task<BrokerStatus> DecideAsync(EngineHarness h, string transactionId, TransactionResolution resolution, string? prefix = null)
        => (await h.Engine.EndTransactionAsync(new DecisionRequest(transactionId, null, resolution, DecisionSource.Client, TopicPrefix: prefix))).Error.Status;

    private static async Task<string> SendAndDecideAsync(EngineHarness h, string topic, TransactionResolution resolution)
    {
        string tx = await h.SendHalfAsync(topic);
        Assert.Equal(BrokerStatus.Ok, await DecideAsync(h, tx, resolution));
        return tx;
    }

    /// <summary>The decision of <paramref name="tx"/> (<paramref name="resolution"/>, in namespace <paramref name="ns"/>)
    /// is told to its namespace and to no other.</summary>
    private static async Task AssertToldOnlyToAsync(EngineHarness h, string tx, TransactionResolution resolution, string ns, params string[] others)
    {
        var opposite = resolution == TransactionResolution.Commit ? TransactionResolution.Rollback : TransactionResolution.Commit;
        Assert.Equal(BrokerStatus.Ok, await DecideAsync(h, tx, resolution, prefix: ns + "%"));
        Assert.Equal(BrokerStatus.TransactionConflict, await DecideAsync(h, tx, opposite, prefix: ns + "%"));
        foreach (string other in others)
        {
            Assert.Equal(BrokerStatus.TransactionNotFound, await DecideAsync(h, tx, resolution, prefix: other + "%"));
            Assert.Equal(BrokerStatus.TransactionNotFound, await DecideAsync(h, tx, opposite, prefix: other + "%"));
        }
    }

    [Fact]
    public async Task A_namespace_is_forgotten_with_its_last_decision_and_the_remembered_ones_keep_answering_right()
    {
        await using var h = await EngineHarness.StartAsync(o => o with { MaxRememberedDecisions = 40, DecisionRetention = TimeSpan.FromMinutes(10) });

        // 300 namespaces, a decision each: the count bound keeps the newest 40 decisions, so 40 namespaces (and "").
        for (int i = 0; i < 300; i++) await SendAndDecideAsync(h, $"gone-{i}%orders", TransactionResolution.Commit);
        Assert.Equal(41, h.Engine.DecidedNamespacesForTests);

        // Two namespaces that stay, each with decisions of its own, and some without a namespace: the count bound
        // forgets every "gone-" decision, and their namespaces with them.
        var kept = new List<(string Tx, TransactionResolution Resolution, string Ns)>();
        for (int i = 0; i < 40; i++)
        {
            var resolution = i % 3 == 0 ? TransactionResolution.Rollback : TransactionResolution.Commit;
            string ns = i % 2 == 0 ? "keep-a" : "keep-b";
            kept.Add((await SendAndDecideAsync(h, $"{ns}%orders", resolution), resolution, ns));
        }
        Assert.Equal(3, h.Engine.DecidedNamespacesForTests); // "", keep-a, keep-b

        // The time bound forgets too: ten minutes on, a decision in a namespace of its own forgets every one before it.
        h.Clock.Advance(TimeSpan.FromMinutes(11));
        var late = new List<(string Tx, TransactionResolution Resolution, string Ns)>();
        for (int i = 0; i < 20; i++)
        {
            string ns = $"late-{i % 10}";
            late.Add((await SendAndDecideAsync(h, $"{ns}%orders", TransactionResolution.Commit), TransactionResolution.Commit, ns));
        }
        Assert.Equal(11, h.Engine.DecidedNamespacesForTests); // "", late-0..late-9
        foreach (var (tx, resolution, ns) in kept.Take(3))
            Assert.Equal(BrokerStatus.TransactionNotFound, await DecideAsync(h, tx, resolution, prefix: ns + "%"));

        // The late namespaces took the numbers the forgotten ones had: each decision is still told only to its own.
        string plain = await SendAndDecideAsync(h, "orders", TransactionResolution.Rollback);
        async Task AssertAnswersAsync()
        {
            foreach (var (tx, resolution, ns) in late)
                await AssertToldOnlyToAsync(h, tx, resolution, ns, "gone-299", "keep-a", ns == "late-0" ? "late-1" : "late-0");
            Assert.Equal(BrokerStatus.TransactionNotFound, await DecideAsync(h, plain, TransactionResolution.Rollback, prefix: "late-0%"));
            Assert.Equal(BrokerStatus.Ok, await DecideAsync(h, plain, TransactionResolution.Rollback));
        }
        await AssertAnswersAsync();
        Assert.Equal(11, h.Engine.DecidedNamespacesForTests);

        // Across a checkpoint and the replay after it (a crash), and across a clean restart.
        await h.Engine.CheckpointAsync();
        late.Add((await SendAndDecideAsync(h, "late-after%orders", TransactionResolution.Commit), TransactionResolution.Commit, "late-after"));
        await h.Engine.DisposeAsync();
        File.Delete(Directory.GetFiles(Path.Combine(h.DataDir, "checkpoints"), "checkpoint-*.bin").Order().Last());
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Equal(12, h.Engine.DecidedNamespacesForTests);
        Assert.Equal(0, h.Engine.DecidedNamespaceReleasesUnmatchedForTests); // replay over a checkpoint took and let go in step
        await AssertAnswersAsync();
        await h.RestartAsync();
        Assert.Equal(12, h.Engine.DecidedNamespacesForTests);
        await AssertAnswersAsync();

        // After the restart the forgetting goes on as before.
        h.Clock.Advance(TimeSpan.FromMinutes(11));
        await SendAndDecideAsync(h, "last%orders", TransactionResolution.Commit);
        Assert.Equal(2, h.Engine.DecidedNamespacesForTests); // "", last
        Assert.Equal(0, h.Engine.DecidedNamespaceReleasesUnmatchedForTests);
    }
}
