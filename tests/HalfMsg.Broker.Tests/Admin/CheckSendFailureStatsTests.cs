using System.Text.Json;
using System.Text.RegularExpressions;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>
/// Check-backs a producer's channel threw on (a connection torn down under the write) are in <c>/api/stats</c>
/// (<c>checkSendFailures</c>) as in <c>/metrics</c> (<c>halfmsg_transaction_checks_total{outcome="send_failed"}</c>).
/// Until 2026-12-07 they were a Prometheus metric only.
/// </summary>
public sealed class CheckSendFailureStatsTests() : InProcessAdminHost("check-send-failures", "--transaction-timeout", "0ms")
{
    private sealed class ThrowingChannel : ICheckBackChannel
    {
        public string ClientId => "torn-down";
        public bool IsAlive => true;
        public bool TrySendCheck(CheckBackRequest request) => throw new ObjectDisposedException("producer connection");
    }

    [Fact]
    public async Task Check_send_failures_are_in_api_stats_as_in_metrics()
    {
        var engine = _host.Engine;
        using var registration = engine.Producers.Register("stats-failing-producers", new ThrowingChannel());
        Assert.True((await engine.SendHalfAsync(new MessageDraft { Topic = "stats-failures", MessageId = "sf-1", Body = new byte[] { 1 } },
            "stats-failing-producers", null, null)).IsOk);

        // The half is due at once (--transaction-timeout 0ms); a pass may need the clock to move past its send time.
        using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (Volatile.Read(ref engine.Metrics.CheckSendFailures) == 0)
        {
            await engine.RunCheckPassAsync(deadline.Token);
            if (Volatile.Read(ref engine.Metrics.CheckSendFailures) == 0) await Task.Delay(20, deadline.Token);
        }

        using var stats = JsonDocument.Parse(await _http.GetStringAsync("/api/stats"));
        long inStats = stats.RootElement.GetProperty("checkSendFailures").GetInt64();
        Assert.True(inStats >= 1, $"checkSendFailures {inStats}");
        string metrics = await _http.GetStringAsync("/metrics");
        var sample = Regex.Match(metrics, @"^halfmsg_transaction_checks_total\{[^}]*outcome=""send_failed""[^}]*\} (\S+)", RegexOptions.Multiline);
        Assert.True(sample.Success, metrics);
        // No other pass runs meanwhile (--transaction-check-interval 1h): both read the same count.
        Assert.Equal(inStats, long.Parse(sample.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(Volatile.Read(ref engine.Metrics.CheckSendFailures), inStats);
        // Beside the other check-back counters.
        Assert.Equal(JsonValueKind.Number, stats.RootElement.GetProperty("checksSent").ValueKind);
        Assert.Equal(JsonValueKind.Number, stats.RootElement.GetProperty("checksWithoutProducer").ValueKind);
    }
}
