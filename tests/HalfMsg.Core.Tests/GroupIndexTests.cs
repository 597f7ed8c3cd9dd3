using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The consumer groups by name (<c>ConsumerGroups.OfGroup</c>): what the admin API's group page, a group's deletion and
/// reset, and a <c>/metrics</c> scrape read. Until 2026-12-05 each of them walked every group of every topic, so a
/// scrape, which asks for each group, cost the square of the groups (up to 10,000).
/// </summary>
public sealed class GroupIndexTests
{
    [Fact]
    public async Task A_groups_topics_are_found_by_name_through_topic_and_group_deletion_a_restart_and_a_replay()
    {
        await using var h = await EngineHarness.StartAsync();
        foreach (var topic in new[] { "a", "b", "c" }) await h.SendNormalAsync(topic, "x");
        foreach (var topic in new[] { "a", "b", "c" }) Assert.Single(await h.ReceiveWhenVisibleAsync("g", topic));
        Assert.Single(await h.ReceiveWhenVisibleAsync("other", "a"));
        Assert.Equal(["a", "b", "c"], Topics(h, "g"));

        Assert.True((await h.Engine.DeleteTopicAsync("b")).IsOk);
        Assert.Equal(["a", "c"], Topics(h, "g"));
        await h.RestartAsync();
        Assert.Equal(["a", "c"], Topics(h, "g"));
        Assert.Equal(["a"], Topics(h, "other"));

        Assert.True((await h.Engine.DeleteGroupAsync("g")).IsOk);
        Assert.Null(h.Engine.FindGroup("g"));
        Assert.Equal(["a"], Topics(h, "other"));
        // Replayed from the log alone: the group's deletion record rebuilds the same.
        await h.Engine.DisposeAsync();
        Directory.Delete(Path.Combine(h.DataDir, "checkpoints"), recursive: true);
        await h.RestartAfterDeletedCheckpointAsync();
        Assert.Null(h.Engine.FindGroup("g"));
        Assert.Equal(["a"], Topics(h, "other"));

        // Started again after its deletion, on one topic.
        Assert.NotEmpty(await h.ReceiveWhenVisibleAsync("g", "c"));
        Assert.Equal(["c"], Topics(h, "g"));
    }

    private static string[] Topics(EngineHarness h, string group)
        => h.Engine.FindGroup(group)?.Topics.Select(t => t.Topic).Order(StringComparer.Ordinal).ToArray() ?? [];
}
