using System.Net.Http.Json;
using System.Text.Json;
using HalfMsg.Broker.Core.Diagnostics;
using HalfMsg.Broker.Core.Model;
using Xunit.Abstractions;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>Memory review (2026-12-05): the message index's key limits as the admin API reports them.</summary>
public sealed class MessageIndexKeysEndpointTests(ITestOutputHelper output) : InProcessAdminHost("index-keys")
{
    /// <summary>GET /api/message-index says how many keys were not indexed, and what the keys cost.</summary>
    [Fact]
    public async Task The_message_index_endpoint_counts_keys_not_indexed()
    {
        var keys = Enumerable.Range(0, 40).Select(i => $"key-{i}").Append(new string('x', 200)).ToList();
        Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "keyed", MessageId = "k1", Keys = keys, Body = new byte[] { 1 } })).IsOk);
        var index = await _http.GetFromJsonAsync<JsonElement>("/api/message-index");
        output.WriteLine(index.ToString());
        Assert.Equal(32, index.GetProperty("maxKeysPerMessage").GetInt32());
        Assert.Equal(128, index.GetProperty("maxKeyLength").GetInt32());
        Assert.Equal(9, index.GetProperty("keysNotIndexed").GetInt64());
        Assert.Equal(1, index.GetProperty("messagesWithKeysNotIndexed").GetInt64());
        Assert.True(index.GetProperty("keyBytes").GetInt64() > 0);
        Assert.Equal(MessageIndex.MaxKeyBytesTotal, index.GetProperty("keyBytesBudget").GetInt64());
        Assert.Equal(0, index.GetProperty("messagesForgottenForKeyBytes").GetInt64());
        var found = await _http.GetFromJsonAsync<JsonElement>("/api/messages?key=key-31");
        Assert.Equal(1, found.GetArrayLength());
        Assert.Equal(0, (await _http.GetFromJsonAsync<JsonElement>("/api/messages?key=key-32")).GetArrayLength());
    }
}

/// <summary>
/// The keys' budget is a setting (<c>--message-index-key-bytes</c>) since 2026-12-06; before, it was always 128 MiB. Here
/// 1 MiB, the least it takes: 100 messages with 32 keys of 128 characters each (about 13 KB of keys apiece) pass it, so
/// the oldest are forgotten for it, well below the index's capacity.
/// </summary>
public sealed class MessageIndexKeyBudgetSettingTests() : InProcessAdminHost("index-key-budget", "--message-index-key-bytes", "1MiB")
{
    [Fact]
    public async Task The_key_budget_set_at_start_bounds_the_indexed_keys()
    {
        for (int m = 0; m < 100; m++)
        {
            var keys = Enumerable.Range(0, 32).Select(k => $"m{m}-k{k}-".PadRight(128, 'x')).ToList();
            Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "keyed-budget", MessageId = $"b{m}", Keys = keys, Body = new byte[] { 1 } })).IsOk);
        }

        var index = await _http.GetFromJsonAsync<JsonElement>("/api/message-index");
        Assert.Equal(1L << 20, index.GetProperty("keyBytesBudget").GetInt64());
        Assert.InRange(index.GetProperty("keyBytes").GetInt64(), 1, 1L << 20);
        Assert.True(index.GetProperty("messagesForgottenForKeyBytes").GetInt64() > 0, index.ToString());
        // The newest message is still found by its key; the oldest was forgotten.
        Assert.Equal(1, (await _http.GetFromJsonAsync<JsonElement>("/api/messages?key=" + $"m99-k0-".PadRight(128, 'x'))).GetArrayLength());
        Assert.Equal(0, (await _http.GetFromJsonAsync<JsonElement>("/api/messages?key=" + $"m0-k0-".PadRight(128, 'x'))).GetArrayLength());
    }
}
