using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.TestKit;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The members list is fed by every front end before a request is validated, so what a client names must not stay in
/// memory for good: a name no group can have is not recorded, and members nobody looks up are still forgotten.
/// </summary>
public sealed class ConsumerMembersTests
{
    [Fact]
    public void A_name_no_group_can_have_is_not_recorded()
    {
        var members = new ConsumerMembers(new ManualClock());
        members.Seen(new string('g', 256), "c1", "grpc");
        members.Seen("bad name", "c1", "grpc");
        members.Seen("g", new string('c', 1025), "grpc");
        Assert.Equal((0, 0), members.Size);
        members.Seen(new string('g', 255), "c1", "grpc");
        Assert.Equal((1, 1), members.Size);
    }

    [Fact]
    public void Members_of_groups_nobody_looks_up_are_forgotten_after_the_forget_time()
    {
        var clock = new ManualClock();
        var members = new ConsumerMembers(clock);
        for (int i = 0; i < 1000; i++) members.Seen($"group-{i}", $"client-{i}", "remoting");
        Assert.Equal((1000, 1000), members.Size);

        clock.Advance(ConsumerMembers.ForgetAfter + TimeSpan.FromMinutes(1));
        members.Seen("live", "c", "grpc");
        Assert.Equal((1, 1), members.Size);
        Assert.Equal("c", Assert.Single(members.Of("live")).ClientId);
    }

    [Fact]
    public void A_client_leaving_one_group_is_found_in_that_group_without_looking_at_the_others()
    {
        var members = new ConsumerMembers(new ManualClock());
        for (int i = 0; i < 1000; i++) members.Seen($"group-{i}", "everywhere", "grpc");
        members.Seen("g", "c1", "grpc");
        members.Seen("g", "c2", "grpc");

        Assert.True(members.Left("g", "c1"));
        Assert.Equal(1, members.LastLeftExamined);
        Assert.False(members.Left("g", "c1"));
        Assert.False(members.Left("no-such-group", "c2"));
        Assert.Equal("c2", Assert.Single(members.Of("g")).ClientId);

        Assert.True(members.Left("g", "c2"));
        Assert.Equal((1000, 1000), members.Size);          // the emptied group is gone

        Assert.True(members.Left(null, "everywhere"));      // leaving every group still finds them all
        Assert.Equal((0, 0), members.Size);
        Assert.False(members.Left(null, "everywhere"));
    }

    [Fact]
    public void A_client_naming_a_new_group_on_every_call_is_held_to_the_bound_and_recently_seen_members_stay()
    {
        var clock = new ManualClock();
        var members = new ConsumerMembers(clock, maxMembers: 100);
        int mostExamined = 0;
        for (int i = 0; i < 10_000; i++)
        {
            if (i % 50 == 0) members.Seen("live", "consumer", "grpc");
            members.Seen($"invented-{i}", "stranger", "grpc");
            mostExamined = Math.Max(mostExamined, members.LastSeenExamined);
            clock.Advance(TimeSpan.FromMilliseconds(1)); // all within the forget time: only the bound holds them
        }

        Assert.True(members.Size.Members <= 100 && members.Size.Groups <= 100, $"held {members.Size}");
        Assert.Equal("consumer", Assert.Single(members.Of("live")).ClientId);
        Assert.Empty(members.Of("invented-0"));
        Assert.True(mostExamined <= 3, $"a call looked at {mostExamined} members to forget or evict");
    }

    [Fact]
    public void A_full_group_drops_its_least_recently_seen_member_without_looking_at_the_others()
    {
        var clock = new ManualClock();
        var members = new ConsumerMembers(clock);
        for (int i = 0; i < ConsumerMembers.MaxPerGroup; i++)
        {
            members.Seen("g", $"client-{i}", "remoting");
            clock.Advance(TimeSpan.FromMilliseconds(10));
        }

        members.Seen("g", "client-0", "remoting");        // seen again: client-1 is now the least recently seen
        clock.Advance(TimeSpan.FromMilliseconds(10));
        members.Seen("g", "newcomer", "remoting");

        Assert.True(members.LastSeenExamined <= 3, $"looked at {members.LastSeenExamined} members");
        List<string> ids = [.. members.Of("g").Select(m => m.ClientId)];
        Assert.Equal(ConsumerMembers.MaxPerGroup, ids.Count);
        Assert.Contains("client-0", ids);
        Assert.Contains("newcomer", ids);
        Assert.DoesNotContain("client-1", ids);
        Assert.Equal(["newcomer", "client-0"], ids.Take(2));  // most recently seen first
    }
}
