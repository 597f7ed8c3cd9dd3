using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>Memory review (2026-12-05): what the message index keeps of a message's keys is bounded.</summary>
public sealed class MessageIndexKeyLimitTests
{
    private static MessageDraft Draft(string id, params string[] keys) => new() { Topic = "t", MessageId = id, Keys = keys, Body = new byte[] { 1 } };

    [Fact]
    public void A_message_is_found_by_its_first_32_distinct_keys_of_at_most_128_characters_and_the_others_are_counted()
    {
        var index = new MessageIndex();
        string tooLong = new('x', MessageIndex.MaxKeyLength + 1), longest = new('y', MessageIndex.MaxKeyLength);
        var keys = new List<string> { tooLong, longest, longest };
        keys.AddRange(Enumerable.Range(0, 40).Select(i => $"k{i}"));
        index.OnStored(Draft("many", [.. keys]), 0, 0, 1);
        index.OnStored(Draft("few", "k35", "other"), 0, 1, 2);

        Assert.Empty(index.FindByKey(tooLong));
        Assert.Equal(["many"], index.FindByKey(longest).Select(e => e.MessageId));
        for (int i = 0; i < MessageIndex.MaxKeysPerMessage - 1; i++) Assert.Equal(["many"], index.FindByKey($"k{i}").Select(e => e.MessageId));
        Assert.Empty(index.FindByKey($"k{MessageIndex.MaxKeysPerMessage - 1}")); // the 33rd distinct key
        Assert.Equal(["few"], index.FindByKey("k35").Select(e => e.MessageId));   // another message's key is indexed
        Assert.Equal(MessageIndex.MaxKeysPerMessage, index.Find("many")!.Keys.Count);
        Assert.Equal(1 + 40 - (MessageIndex.MaxKeysPerMessage - 1), index.KeysNotIndexed);
        Assert.Equal(1, index.MessagesWithKeysNotIndexed);
    }

    [Fact]
    public void Past_the_key_byte_budget_the_oldest_messages_are_forgotten_first()
    {
        string Key(int m, int k) => $"{m:D4}-{k}-".PadRight(MessageIndex.MaxKeyLength, 'z');
        int perMessage = Enumerable.Range(0, 32).Sum(k => MessageIndex.State.KeyCost(Key(0, k)));
        var index = new MessageIndex(capacity: 1_000, maxKeyBytes: 10L * perMessage);
        for (int m = 0; m < 25; m++) index.OnStored(Draft($"m{m}", [.. Enumerable.Range(0, 32).Select(k => Key(m, k))]), 0, m, m);
        index.OnStored(Draft("plain"), 0, 25, 25);

        Assert.Equal(11, index.Count); // ten messages of keys, and one without
        Assert.Equal(15, index.MessagesForgottenForKeyBytes);
        Assert.True(index.KeyBytes <= index.MaxKeyBytes);
        Assert.Null(index.Find("m14"));
        Assert.Empty(index.FindByKey(Key(14, 0)));
        Assert.Equal(["m15"], index.FindByKey(Key(15, 31)).Select(e => e.MessageId));
        Assert.NotNull(index.Find("plain"));
    }
}
