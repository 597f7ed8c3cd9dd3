namespace HalfMsg.Core.Tests;

/// <summary>Memory review (2026-12-05): producer client ids churn, so they do not use up the table that shares tags,
/// topics and group names.</summary>
public sealed class TagInternerTests
{
    [Fact]
    public async Task Halves_from_many_client_ids_leave_the_shared_tag_table_alone()
    {
        await using var h = await EngineHarness.StartAsync();
        await h.SendHalfAsync("t", clientId: "first", tag: "a");
        long before = h.Engine.IndexSizes()["tags_interned"];
        for (int i = 0; i < 50; i++) await h.SendHalfAsync("t", clientId: $"client-{i}", tag: "a");
        Assert.Equal(before, h.Engine.IndexSizes()["tags_interned"]);
        Assert.Equal(51, h.Engine.IndexSizes()["client_ids_interned"]);
    }
}
