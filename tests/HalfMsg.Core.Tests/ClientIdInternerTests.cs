using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>Producer client ids have their own bounded table, which starts afresh when full.</summary>
public sealed class ClientIdInternerTests
{
    [Fact]
    public void Client_ids_are_shared_and_the_table_starts_afresh_when_full()
    {
        var interner = new TagInterner();
        string first = interner.InternClientId(new string("c-1".AsSpan()))!;
        Assert.Same(first, interner.InternClientId(new string("c-1".AsSpan())));
        for (int i = 0; i < TagInterner.MaxClientIds + 5; i++) interner.InternClientId($"churn-{i}");
        Assert.True(interner.ClientIdCount <= TagInterner.MaxClientIds);
        string again = interner.InternClientId(new string("again".AsSpan()))!;
        Assert.Same(again, interner.InternClientId(new string("again".AsSpan())));
        Assert.Equal(0, interner.Count); // tags, topics and groups: untouched
        Assert.Null(interner.InternClientId(null));
    }
}
