using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>
/// A Remoting send's bornTimestamp is the peer's clock, stored and shown back (gRPC born_timestamp, check-backs, the
/// admin message page). One no DateTimeOffset can hold was stored as sent, and every later reader threw on it: gRPC
/// ReceiveMessage for the whole queue, the check-back pass, the admin look-up.
/// </summary>
[Collection("remoting")]
public sealed class RemotingBornTimestampTests(RemotingBrokerFixture broker)
{
    // What gRPC accepts as born_timestamp (a protobuf Timestamp, years 1 to 9999), in Unix milliseconds.
    private const long Year1 = -62_135_596_800_000;
    private const long Year9999 = 253_402_300_799_999;

    public static TheoryData<long> OutOfRange => new() { long.MaxValue, long.MinValue, Year9999 + 1, Year1 - 1 };

    private static Dictionary<string, string> BornAt(Dictionary<string, string> header, long born)
    {
        header["g"] = born.ToString(CultureInfo.InvariantCulture);
        return header;
    }

    private static void AssertRefused(RemotingCommand response, long born)
    {
        Assert.Equal(ResponseCode.MessageIllegal, response.Code);
        Assert.Contains("bornTimestamp", response.Remark);
        Assert.Contains(born.ToString(CultureInfo.InvariantCulture), response.Remark);
    }

    private async Task<List<Message>> ReceiveAllAsync(string topic, int expected)
    {
        using var grpc = new GrpcTestClient($"127.0.0.1:{broker.GrpcPort}");
        var got = new List<Message>();
        var deadline = DateTime.UtcNow.AddSeconds(30);
        while (got.Count < expected && DateTime.UtcNow < deadline)
        {
            var r = await grpc.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "born-consumers" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = topic } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 32,
                InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromMinutes(5)),
                LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
            }, ReceiveMessageResponse.Parser);
            // A message the converter throws on ends the call with INTERNAL_SERVER_ERROR after the whole batch was
            // leased: every message of it stays invisible until its lease runs out.
            Assert.Equal(0, r.GrpcStatus);
            Assert.All(r.Responses.Where(x => x.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status),
                x => Assert.Contains(x.Status.Code, new[] { Code.Ok, Code.MessageNotFound }));
            got.AddRange(r.Responses.Where(x => x.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message).Select(x => x.Message));
        }
        return got;
    }

    [Theory]
    [MemberData(nameof(OutOfRange))]
    public async Task A_send_born_outside_years_1_to_9999_is_refused_and_gRPC_consumers_of_the_topic_still_receive_the_others(long born)
    {
        string topic = Unique("Born");
        string group = Unique("PG");
        await using var c = await broker.ConnectAsync();

        // Normal, batch and half sends all take the time from the same header field.
        AssertRefused(await c.InvokeAsync(RequestCode.SendMessageV2, BornAt(SendHeader("PG", topic, Props(), 0, 0), born), "poison"u8.ToArray()), born);
        var batch = BatchMessageCodec.Encode([new BatchMessageCodec.Entry(0, "poison"u8.ToArray(), Props())]);
        AssertRefused(await c.InvokeAsync(RequestCode.SendBatchMessage, BornAt(SendHeader("PG", topic, "", 0, 0), born), batch), born);
        string half = Props(more: [(MessageConst.TransactionPrepared, "true"), (MessageConst.ProducerGroup, group)]);
        AssertRefused(await c.InvokeAsync(RequestCode.SendMessageV2, BornAt(SendHeader(group, topic, half, MessageSysFlag.TransactionPreparedType, 0), born),
            "poison"u8.ToArray()), born);
        Assert.Equal(0, broker.Host.Engine.ListTransactions(parked: false, -1, 1000, out _).Count(t => t.Topic == topic));

        // The same connection goes on: both ends of the range are stored as sent, and so is a message born now.
        foreach (long edge in new[] { Year1, Year9999 })
            Assert.Equal(ResponseCode.Success, (await c.InvokeAsync(RequestCode.SendMessageV2, BornAt(SendHeader("PG", topic, Props(), 0, 0), edge), "edge"u8.ToArray())).Code);
        await SendAsync(c, topic, "now", queueId: 0);

        var got = await ReceiveAllAsync(topic, 3);
        Assert.Equal(["edge", "edge", "now"], got.Select(m => m.Body.ToStringUtf8()).Order());
        Assert.Equal([Year1, Year9999], got.Where(m => m.Body.ToStringUtf8() == "edge")
            .Select(m => m.SystemProperties.BornTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds()).Order());
    }

    [Fact]
    public async Task A_born_time_no_clock_can_show_already_in_the_log_is_delivered_and_shown_at_the_nearest_end_of_the_range()
    {
        // A log written before sends were checked may hold any long: store one through the core, as that broker did.
        string topic = Unique("OldBorn");
        string id = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant();
        var stored = await broker.Host.Engine.SendAsync(new MessageDraft
        {
            Topic = topic, MessageId = id, Body = "old"u8.ToArray(), BornTimestampMs = long.MaxValue, BornHost = "10.0.0.1:1234", QueueId = 0,
        });
        Assert.True(stored.Error.IsOk, stored.Error.ToString());
        await using (var c = await broker.ConnectAsync()) await SendAsync(c, topic, "new", queueId: 0);

        var got = await ReceiveAllAsync(topic, 2);
        Assert.Equal(["new", "old"], got.Select(m => m.Body.ToStringUtf8()).Order());
        Assert.Equal(DateTimeOffset.MaxValue.ToUnixTimeMilliseconds(),
            got.Single(m => m.Body.ToStringUtf8() == "old").SystemProperties.BornTimestamp.ToDateTimeOffset().ToUnixTimeMilliseconds());

        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        var r = await http.GetAsync($"/api/messages/{id}");
        Assert.Equal(HttpStatusCode.OK, r.StatusCode);
        var found = await r.Content.ReadFromJsonAsync<JsonElement>();
        Assert.StartsWith("9999-12-31T23:59:59.999", found.GetProperty("message").GetProperty("bornAt").GetString());
    }
}
