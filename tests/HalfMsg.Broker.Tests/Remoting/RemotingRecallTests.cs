using System.Buffers.Text;
using System.Globalization;
using System.Text;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// RocketMQ 5.3.1+'s recall of a timer message over Remoting, as DefaultMQProducer.recallMessage sends it: the send of a
/// timer message answers <c>recallHandle</c> (SendMessageResponseHeader), and RECALL_MESSAGE (370) takes it back.
/// </summary>
[Collection("remoting")]
public sealed class RemotingRecallTests(RemotingBrokerFixture broker)
{
    // A delay long enough that the recall is answered before it on a busy machine; the tests wait for a control message
    // due 1 ms later, never for the time itself.
    private const long DelayMs = 8_000;

    private static long NowMs => DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

    private static string Uniq() => Guid.NewGuid().ToString("N").ToUpperInvariant();

    private static string Ms(long value) => value.ToString(CultureInfo.InvariantCulture);

    /// <summary>A timer message (TIMER_DELIVER_MS, what Java's Message.setDeliverTimeMs sets).</summary>
    private static Task<RemotingCommand> SendTimerAsync(RemotingTestClient c, string topic, string body, long deliverAtMs, string? uniq = null)
        => SendAsync(c, topic, body, uniq: uniq ?? Uniq(), more: (MessageConst.TimerDeliverMs, Ms(deliverAtMs)));

    /// <summary>Apache's RecallMessageHandle.decodeHandle: base64url of "v1 topic brokerName timestamp messageId".</summary>
    private static string[] Decode(string handle) => Encoding.UTF8.GetString(Base64Url.DecodeFromChars(handle.TrimEnd('='))).Split(' ');

    [Fact]
    public async Task A_timer_messages_send_answers_a_recall_handle_in_Apaches_form_and_other_sends_none()
    {
        await using var c = await broker.ConnectAsync();
        string topic = Unique("RclSend"), uniq = Uniq();
        long due = NowMs + DelayMs;

        var timer = await SendTimerAsync(c, topic, "later", due, uniq);
        string? handle = timer.Get("recallHandle");
        Assert.False(string.IsNullOrEmpty(handle), "no recallHandle in the send response");
        string[] parts = Decode(handle!);
        Assert.True(parts.Length >= 5, $"{parts.Length} fields");
        Assert.Equal(("v1", topic, Ms(due), uniq), (parts[0], parts[1], parts[3], parts[4]));

        var bySeconds = await SendAsync(c, topic, "in a minute", more: (MessageConst.TimerDelaySec, "60"));
        Assert.False(string.IsNullOrEmpty(bySeconds.Get("recallHandle")));

        // As Apache's broker: none for a message that does not wait, for a DELAY level (never a timer message there),
        // for a timer message whose time has passed, and for one sent to a %RETRY% topic.
        Assert.Null((await SendAsync(c, topic, "now")).Get("recallHandle"));
        Assert.Null((await SendAsync(c, topic, "level", more: (MessageConst.DelayLevel, "3"))).Get("recallHandle"));
        Assert.Null((await SendTimerAsync(c, topic, "past", NowMs - 1_000)).Get("recallHandle"));
        Assert.Null((await SendTimerAsync(c, "%RETRY%" + Unique("RclGroup"), "retry", NowMs + DelayMs)).Get("recallHandle"));
    }
}
