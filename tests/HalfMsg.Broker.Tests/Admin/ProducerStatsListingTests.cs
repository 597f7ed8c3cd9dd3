using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using HalfMsg.Broker.Admin;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// <c>/api/stats</c> lists the first <see cref="AdminApi.MaxListedProducerGroups"/> producer groups by name, each with its
/// first <see cref="AdminApi.MaxListedProducerClientIds"/> client ids, beside the totals (<c>producerGroups</c>,
/// <c>producersConnected</c>) and <c>producersTruncated</c>. Until the late-night session of 2026-12-07 it listed every
/// group with every client id, however many there were.
/// </summary>
public sealed class ProducerStatsListingTests() : InProcessAdminHost("producer-listing")
{
    private sealed class Channel(string clientId) : ICheckBackChannel
    {
        public string ClientId => clientId;
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => true;
    }

    private static string Group(int i) => "pl-" + i.ToString("D4", CultureInfo.InvariantCulture);

    private async Task<JsonElement> StatsAsync()
    {
        using var stats = JsonDocument.Parse(await _http.GetStringAsync("/api/stats"));
        return stats.RootElement.Clone();
    }

    [Fact]
    public async Task Stats_list_the_first_producer_groups_by_name_with_their_first_client_ids_and_count_them_all()
    {
        var registrations = new List<IDisposable>();
        try
        {
            // A few groups: all listed, nothing truncated.
            registrations.Add(_host.Engine.Producers.Register(Group(1), new Channel("one@1")));
            registrations.Add(_host.Engine.Producers.Register(Group(0), new Channel("zero@1")));
            var few = await StatsAsync();
            Assert.Equal(["pl-0000", "pl-0001"], few.GetProperty("producers").EnumerateObject().Select(p => p.Name).Order(StringComparer.Ordinal));
            Assert.Equal(2, few.GetProperty("producerGroups").GetInt32());
            Assert.Equal(2, few.GetProperty("producersConnected").GetInt64());
            Assert.False(few.GetProperty("producersTruncated").GetBoolean());

            // Past the listing's bounds: more groups than it lists, and one group with more channels than it lists.
            int groups = AdminApi.MaxListedProducerGroups + 50;
            for (int i = groups - 1; i >= 2; i--) registrations.Add(_host.Engine.Producers.Register(Group(i), new Channel($"c{i}@1")));
            int crowded = AdminApi.MaxListedProducerClientIds + 10;
            for (int i = 0; i < crowded; i++) registrations.Add(_host.Engine.Producers.Register(Group(0), new Channel($"zero-{i}@2")));

            var many = await StatsAsync();
            var listed = many.GetProperty("producers").EnumerateObject().ToList();
            Assert.Equal(Enumerable.Range(0, AdminApi.MaxListedProducerGroups).Select(Group), listed.Select(p => p.Name).Order(StringComparer.Ordinal));
            var zero = listed.Single(p => p.Name == Group(0)).Value.EnumerateArray().Select(e => e.GetString()).ToList();
            Assert.Equal(AdminApi.MaxListedProducerClientIds, zero.Count);
            Assert.Equal("zero@1", zero[0]);
            Assert.Equal(groups, many.GetProperty("producerGroups").GetInt32());
            Assert.Equal(groups + crowded, many.GetProperty("producersConnected").GetInt64());
            Assert.True(many.GetProperty("producersTruncated").GetBoolean());
        }
        finally
        {
            foreach (var registration in registrations) registration.Dispose();
        }
    }

    /// <summary>The dashboard's "producers connected" card, <c>/metrics</c>' <c>halfmsg_producers_connected</c> and the
    /// index sizes' <c>producers</c> read the registry's kept count (<see cref="ProducerRegistry.ChannelCount"/>, since
    /// the small-hours session of 2026-12-08; each copied the whole registry before): all three say what the listing
    /// says, as producers connect and go.</summary>
    [Fact]
    public async Task The_dashboard_metrics_and_index_sizes_count_the_producers_the_listing_has()
    {
        async Task AssertCountedEverywhereAsync(long expected)
        {
            var stats = await StatsAsync();
            Assert.Equal(expected, stats.GetProperty("producersConnected").GetInt64());
            Assert.Equal(expected, stats.GetProperty("indexes").GetProperty("producers").GetInt64());
            string page = await _http.GetStringAsync("/dashboard");
            Assert.Equal(expected.ToString(CultureInfo.InvariantCulture),
                Regex.Match(page, "data-testid=\"producers\"><div class=\"v\">(.*?)</div>").Groups[1].Value);
            string metrics = await _http.GetStringAsync("/metrics");
            Assert.Matches(new Regex($@"^halfmsg_producers_connected(\{{[^}}]*\}})? {expected}$", RegexOptions.Multiline), metrics);
        }

        var registrations = new List<IDisposable>();
        try
        {
            await AssertCountedEverywhereAsync(0);
            for (int i = 0; i < 7; i++) registrations.Add(_host.Engine.Producers.Register(Group(i % 3), new Channel($"c{i}@1")));
            await AssertCountedEverywhereAsync(7);
            registrations[2].Dispose();
            registrations[5].Dispose();
            await AssertCountedEverywhereAsync(5);
        }
        finally
        {
            foreach (var registration in registrations) registration.Dispose();
        }
        await AssertCountedEverywhereAsync(0);
    }
}
