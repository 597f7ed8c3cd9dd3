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
}
