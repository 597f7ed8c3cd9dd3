using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using Xunit.Abstractions;

namespace HalfMsg.Core.Tests;

/// <summary>Memory review (2026-12-05): what the message index keeps per message stays near its metadata, not a multiple.</summary>
[Collection("memory")]
public sealed class MessageIndexMemoryTests(ITestOutputHelper output)
{
    private static MessageDraft Draft(string id, params string[] keys) => new() { Topic = "t", MessageId = id, Keys = keys, Body = new byte[] { 1 } };

    /// <summary>A message may carry 64 KiB of metadata, nearly all of it keys (4,900 eight-character keys): the index
    /// kept every one (788 KB per message, 146 GiB at its 200,000 messages). It keeps a bounded few per message.</summary>
    [Fact]
    public void A_message_with_thousands_of_keys_costs_the_index_a_few_kilobytes()
    {
        var index = new MessageIndex(capacity: 200_000);
        const int Messages = 200, KeysPerMessage = 4_900; // 4,900 × (5 + 8) B = 63,700 B of keys: within 64 KiB
        long before = GC.GetTotalMemory(forceFullCollection: true);
        for (int m = 0; m < Messages; m++)
        {
            var keys = new string[KeysPerMessage];
            for (int k = 0; k < KeysPerMessage; k++) keys[k] = (m * KeysPerMessage + k).ToString("x8");
            index.OnStored(Draft($"m{m}", keys), 0, m, m);
        }
        Assert.Equal(Messages, index.Count); // applies what is queued
        long perMessage = (GC.GetTotalMemory(forceFullCollection: true) - before) / Messages;
        output.WriteLine($"retained per message: {perMessage:N0} B");
        Assert.True(perMessage < 16 * 1024, $"the index keeps {perMessage:N0} B per message");
        GC.KeepAlive(index);
    }
}
