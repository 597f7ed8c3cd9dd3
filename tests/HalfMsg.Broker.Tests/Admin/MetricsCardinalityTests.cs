using System.Globalization;
using System.Text.RegularExpressions;
using HalfMsg.Broker.Core.Model;
using Xunit.Abstractions;

namespace HalfMsg.Broker.Tests.Admin;

/// <summary>Memory review (2026-12-05): per-topic series on /metrics under topic churn and below --max-topics.</summary>
public sealed class MetricsCardinalityTests(ITestOutputHelper output) : InProcessAdminHost("metrics-cardinality")
{
    private static MatchCollection Series(string text, string name, string topic)
        => Regex.Matches(text, $"^{name}\\{{[^}}]*topic=\"{Regex.Escape(topic)}\"[^}}]*\\}} ([0-9.eE+]+)", RegexOptions.Multiline);

    /// <summary>A deleted topic has no series any more (the per-topic byte counter kept every topic ever sent to), and
    /// a topic of the same name created again counts its bytes from zero.</summary>
    [Fact]
    public async Task A_deleted_topic_leaves_no_series_and_counts_from_zero_when_created_again()
    {
        Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "gone", MessageId = "g1", Body = new byte[] { 1 } })).IsOk);
        Assert.True((await _host.Engine.DeleteTopicAsync("gone")).IsOk);
        string text = await _http.GetStringAsync("/metrics");
        output.WriteLine($"messages_in series: {Series(text, "rocketmq_messages_in_total", "gone").Count}, throughput_in series: {Series(text, "rocketmq_throughput_in_total", "gone").Count}");
        Assert.Empty(Series(text, "rocketmq_messages_in_total", "gone"));
        Assert.Empty(Series(text, "rocketmq_throughput_in_total", "gone"));

        Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "gone", MessageId = "g2", Body = new byte[3] })).IsOk);
        text = await _http.GetStringAsync("/metrics");
        var bytes = Assert.Single(Series(text, "rocketmq_throughput_in_total", "gone"));
        Assert.Equal(3, double.Parse(bytes.Groups[1].Value, CultureInfo.InvariantCulture));
    }

    /// <summary>Every topic the broker allows (--max-topics, 10,000 by default) gets its own series: 2,100 here, past
    /// OpenTelemetry's default of 2,000 series per metric (beyond which they were folded into otel_metric_overflow).</summary>
    [Fact]
    public async Task Every_topic_below_the_topic_limit_has_its_own_series()
    {
        for (int i = 0; i < 2100; i++)
            Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = $"card-{i}", MessageId = $"c{i}", Body = new byte[] { 1 } })).IsOk);
        string text = await _http.GetStringAsync("/metrics");
        int topics = Regex.Matches(text, "^rocketmq_messages_in_total\\{[^}]*topic=\"card-", RegexOptions.Multiline).Count;
        int bytes = Regex.Matches(text, "^rocketmq_throughput_in_total\\{[^}]*topic=\"card-", RegexOptions.Multiline).Count;
        int overflow = Regex.Matches(text, "^rocketmq_\\w+\\{[^}]*otel_metric_overflow", RegexOptions.Multiline).Count;
        output.WriteLine($"series with their topic: {topics} and {bytes} of 2100; overflow series: {overflow}");
        Assert.Equal(2100, topics);
        Assert.Equal(2100, bytes);
        Assert.Equal(0, overflow);
    }
}
