using System.Net;
using Microsoft.Extensions.Configuration;
using System.Net.Http.Json;
using System.Text.Json;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.Hosting;

public sealed class ConfigurationTests
{
    [Theory]
    [InlineData(new[] { "--bogus", "1" }, "unknown flag --bogus")]
    [InlineData(new[] { "--grpc-port", "70000" }, "--grpc-port")]
    [InlineData(new[] { "--flush", "sometimes" }, "--flush must be 'sync' or 'async'")]
    [InlineData(new[] { "--transaction-check-interval", "5x" }, "--transaction-check-interval")]
    [InlineData(new[] { "--max-message-size", "lots" }, "--max-message-size")]
    [InlineData(new[] { "--transaction-check-max", "0" }, "--transaction-check-max")]
    [InlineData(new[] { "--message-index-capacity", "10" }, "--message-index-capacity")]
    [InlineData(new[] { "--message-index-key-bytes", "64KiB" }, "--message-index-key-bytes")]
    [InlineData(new[] { "--grpc-port" }, "--grpc-port needs a value")]
    [InlineData(new[] { "stray" }, "unexpected argument 'stray'")]
    [InlineData(new[] { "--grpc-port", "9000", "--http-port", "9000" }, "must differ")]
    public async Task Invalid_flags_stop_the_start_with_a_message_that_names_the_flag(string[] args, string expected)
    {
        var ex = await Assert.ThrowsAsync<BrokerConfigurationException>(() => BrokerHost.StartAsync(args));
        Assert.Contains(expected, ex.Message);
    }

    [Theory]
    [InlineData("500ms", 500)]
    [InlineData("1s", 1000)]
    [InlineData("6s", 6000)]
    [InlineData("2m", 120_000)]
    [InlineData("1.5h", 5_400_000)]
    [InlineData("00:00:30", 30_000)]
    [InlineData("0", 0)]
    [InlineData(" 0 ", 0)]
    [InlineData("0.0", 0)]
    [InlineData("0s", 0)]
    public void Durations_accept_the_usual_units(string text, double ms)
    {
        Assert.True(BrokerConfiguration.TryParseDuration(text, out var d));
        Assert.Equal(ms, d.TotalMilliseconds);
    }

    [Fact]
    public void Zero_retention_limits_mean_none_and_need_no_unit()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(
            ["--retention-time", "0", "--retention-size", "0"])).Build();
        var options = BrokerConfiguration.Bind(config);
        Assert.Equal(TimeSpan.Zero, options.Core.RetentionTime);
        Assert.Equal(0, options.Core.RetentionBytes);
    }

    [Fact]
    public void Flags_override_defaults_and_sizes_accept_binary_units()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(
            ["--max-message-size", "1MiB", "--flush=async", "--transaction-check-interval", "1s", "--queues-per-topic", "2"])).Build();
        var options = BrokerConfiguration.Bind(config);
        Assert.Equal(1 << 20, options.Core.MaxMessageSize);
        Assert.Equal(Broker.Core.FlushMode.Async, options.Core.Flush);
        Assert.Equal(TimeSpan.FromSeconds(1), options.Core.TransactionCheckInterval);
        Assert.Equal(2, options.Core.QueuesPerTopic);
        Assert.Equal(8081, options.GrpcPort);
    }

    [Fact]
    public void The_Remoting_limits_have_flags()
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(
            ["--remoting-max-connections", "5", "--remoting-max-in-flight-per-connection", "16MiB", "--remoting-max-parked-pulls", "7",
             "--remoting-write-timeout", "5s", "--remoting-consumer-expiry", "1m", "--remoting-max-queue-locks", "9", "--remoting-max-pull-bytes", "1GiB"])).Build();
        var options = BrokerConfiguration.Bind(config);
        Assert.Equal(5, options.RemotingMaxConnections);
        Assert.Equal(16L << 20, options.RemotingMaxInFlightPerConnection);
        Assert.Equal(7, options.RemotingMaxParkedPulls);
        Assert.Equal(TimeSpan.FromSeconds(5), options.RemotingWriteTimeout);
        Assert.Equal(TimeSpan.FromMinutes(1), options.RemotingConsumerExpiry);
        Assert.Equal(9, options.RemotingMaxQueueLocks);
        Assert.Equal(1L << 30, options.RemotingMaxPullBytes);
        var defaults = BrokerConfiguration.Bind(new ConfigurationBuilder().Build());
        var remoting = new HalfMsg.Broker.FrontEnds.Remoting.RemotingOptions();
        Assert.Equal(remoting.MaxConnections, defaults.RemotingMaxConnections);
        Assert.Equal(remoting.MaxInFlightBytesPerConnection, defaults.RemotingMaxInFlightPerConnection);
        Assert.Equal(remoting.MaxParkedPullsPerConnection, defaults.RemotingMaxParkedPulls);
        Assert.Equal(remoting.WriteStallTimeout, defaults.RemotingWriteTimeout);
        Assert.Equal(remoting.ConsumerExpiry, defaults.RemotingConsumerExpiry);
        Assert.Equal(remoting.MaxQueueLocksPerConnection, defaults.RemotingMaxQueueLocks);
        Assert.Equal(remoting.MaxPullBytes, defaults.RemotingMaxPullBytes);
        Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(
            BrokerConfiguration.ParseCommandLine(["--remoting-max-in-flight-per-connection", "64KiB"])).Build()));

        // Never below twice (largest message + 1 MiB), as the gRPC budgets: a lone send over it would be SYSTEM_BUSY for
        // ever (found by review).
        var small = BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(
            ["--remoting-max-in-flight-per-connection", "1MiB", "--max-message-size", "4MiB"])).Build());
        Assert.Equal(10L << 20, small.RemotingMaxInFlightPerConnection);
        var smallPulls = BrokerConfiguration.Bind(new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(
            ["--remoting-max-pull-bytes", "1MiB", "--max-message-size", "4MiB"])).Build());
        Assert.Equal(10L << 20, smallPulls.RemotingMaxPullBytes);
    }
}

/// <summary>The admin API against a real in-process host on loopback ports.</summary>
public sealed class AdminApiTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-admin-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost _host = null!;
    private HttpClient _http = null!;

    public async Task InitializeAsync()
    {
        int http = FreePorts.Next();
        _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", FreePorts.Next().ToString(), "--http-port", http.ToString(),
            "--transaction-check-interval", "1h", "--transaction-check-max", "1", "--remoting-port", "0", "--namesrv-port", "0"]);
        _http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{http}") };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private async Task<string> HalfAsync(string topic, string id)
    {
        var r = await _host.Engine.SendHalfAsync(new MessageDraft { Topic = topic, MessageId = id, Body = new byte[] { 1 } }, topic, "p", null);
        Assert.True(r.IsOk);
        return r.TransactionId;
    }

    [Fact]
    public async Task Health_answers_200_when_ready()
    {
        var r = await _http.GetAsync("/health");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        Assert.Contains("ready", await r.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Pending_transactions_are_listed_in_pages_and_an_operator_can_commit_one()
    {
        for (int i = 0; i < 5; i++) await HalfAsync("admin-orders", $"admin-tx-{i}");
        var page1 = await _http.GetFromJsonAsync<JsonElement>("/api/transactions/pending?limit=3");
        Assert.Equal(5, page1.GetProperty("total").GetInt32());
        Assert.Equal(3, page1.GetProperty("items").GetArrayLength());
        long next = page1.GetProperty("next").GetInt64();
        var page2 = await _http.GetFromJsonAsync<JsonElement>($"/api/transactions/pending?limit=3&after={next}");
        Assert.Equal(2, page2.GetProperty("items").GetArrayLength());
        var first = page1.GetProperty("items")[0];
        Assert.Equal("admin-orders", first.GetProperty("topic").GetString());
        Assert.Equal(0, first.GetProperty("checks").GetInt32());

        Assert.Equal(HttpStatusCode.OK, (await _http.PostAsync("/api/transactions/admin-tx-0/commit", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.PostAsync("/api/transactions/admin-tx-0/commit", null)).StatusCode);   // idempotent
        Assert.Equal(HttpStatusCode.Conflict, (await _http.PostAsync("/api/transactions/admin-tx-0/rollback", null)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.PostAsync("/api/transactions/admin-tx-1/rollback", null)).StatusCode);
        var topics = await _http.GetFromJsonAsync<JsonElement>("/api/topics");
        var orders = topics.EnumerateArray().Single(t => t.GetProperty("name").GetString() == "admin-orders");
        Assert.Equal(1, orders.GetProperty("queues").EnumerateArray().Sum(q => q.GetProperty("maxOffset").GetInt64()));
    }

    [Fact]
    public async Task Unknown_ids_and_groups_get_404_with_a_json_error()
    {
        foreach (var (method, path) in new[] { ("POST", "/api/transactions/nope/commit"), ("POST", "/api/transactions/nope/resume"),
                     ("GET", "/api/transactions/nope"), ("GET", "/api/groups/nobody") })
        {
            var r = await _http.SendAsync(new HttpRequestMessage(new HttpMethod(method), path));
            Assert.Equal(HttpStatusCode.NotFound, r.StatusCode);
            var body = await r.Content.ReadFromJsonAsync<JsonElement>();
            Assert.False(string.IsNullOrEmpty(body.GetProperty("error").GetString()));
        }
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync("/api/transactions/pending?limit=0")).StatusCode);
    }

    [Fact]
    public async Task Resume_of_a_half_that_is_not_parked_says_so_and_changes_nothing()
    {
        var tx = await HalfAsync("admin-parked", "admin-parked-1");
        var r = await _http.PostAsync($"/api/transactions/{tx}/resume", null);
        Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
        var body = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Contains("not parked", body.GetProperty("error").GetString());
        var one = await _http.GetFromJsonAsync<JsonElement>($"/api/transactions/{tx}");
        Assert.Equal(0, one.GetProperty("checks").GetInt32());
        Assert.False(one.GetProperty("parked").GetBoolean());
    }

    private sealed class ParkingChannel : Broker.Core.Transactions.ICheckBackChannel
    {
        public List<CheckBackRequest> Checks { get; } = new();
        public string ClientId => "admin-test";
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) { lock (Checks) Checks.Add(request); return true; }
    }
}
