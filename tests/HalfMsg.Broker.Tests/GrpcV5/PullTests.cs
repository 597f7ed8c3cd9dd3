using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using V2Encoding = Apache.Rocketmq.V2.Encoding;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// The RocketMQ 5 pull and offset RPCs (PullMessage, UpdateOffset, GetOffset, QueryOffset) over real HTTP/2, against a
/// broker that also serves Remoting: a pull group's offsets are one store whichever protocol moves them. Until
/// 2026-12-06 all four answered grpc-status UNIMPLEMENTED. Each test uses its own topic (one queue) and group.
/// </summary>
public sealed class PullTests(RemotingBrokerFixture broker) : IClassFixture<RemotingBrokerFixture>, IDisposable
{
    private readonly GrpcTestClient _client = new($"127.0.0.1:{broker.GrpcPort}");
    private readonly string _topic = "pull-" + Guid.NewGuid().ToString("N")[..12];
    private readonly string _group = "pg-" + Guid.NewGuid().ToString("N")[..12];

    public void Dispose() => _client.Dispose();

    // ---------------------------------------------------------------- helpers

    private async Task CreateTopicAsync(string? topic = null)
        => Assert.True((await broker.Host.Engine.CreateTopicAsync(topic ?? _topic, 1)).Error.IsOk);

    private static Message NewMessage(string topic, string body, string? tag = null)
    {
        var message = new Message
        {
            Topic = new Resource { Name = topic },
            Body = ByteString.CopyFromUtf8(body),
            SystemProperties = new SystemProperties
            {
                MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                MessageType = MessageType.Normal,
                BodyEncoding = V2Encoding.Identity,
                BornTimestamp = Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                BornHost = "test-host",
            },
        };
        if (tag is not null) message.SystemProperties.Tag = tag;
        return message;
    }

    private async Task<Message> SendAsync(string body, string? tag = null, IReadOnlyDictionary<string, string>? headers = null)
    {
        Message message = NewMessage(_topic, body, tag);
        var result = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser, headers);
        Assert.Equal(0, result.GrpcStatus);
        Assert.Equal(Code.Ok, result.Response!.Status.Code);
        return message;
    }

    private MessageQueue Queue(int id = 0, string? topic = null) => new() { Topic = new Resource { Name = topic ?? _topic }, Id = id };

    private PullMessageRequest PullRequest(long offset, int batch = 32, string? tags = null, TimeSpan? longPoll = null) => new()
    {
        Group = new Resource { Name = _group },
        MessageQueue = Queue(),
        Offset = offset,
        BatchSize = batch,
        FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = tags ?? "*" },
        LongPollingTimeout = longPoll is { } poll ? Duration.FromTimeSpan(poll) : null,
    };

    private async Task<List<PullMessageResponse>> PullAsync(PullMessageRequest request, IReadOnlyDictionary<string, string>? headers = null)
    {
        var result = await _client.ServerStreamAsync(GrpcMethods.PullMessage, request, PullMessageResponse.Parser, headers, timeout: TimeSpan.FromSeconds(60));
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus}: {result.GrpcMessage}");
        return [.. result.Responses];
    }

    private static Status StatusOf(List<PullMessageResponse> responses)
    {
        Assert.NotEmpty(responses);
        Assert.Equal(PullMessageResponse.ContentOneofCase.Status, responses[0].ContentCase);
        return responses[0].Status;
    }

    private static List<Message> MessagesOf(List<PullMessageResponse> responses)
        => responses.Where(r => r.ContentCase == PullMessageResponse.ContentOneofCase.Message).Select(r => r.Message).ToList();

    /// <summary>The proxy's answer shape: status, the messages, next_offset, end.</summary>
    private static long NextOffsetOf(List<PullMessageResponse> responses)
    {
        Assert.Equal(PullMessageResponse.ContentOneofCase.NextOffset, responses[^1].ContentCase);
        return responses[^1].NextOffset;
    }

    private async Task<T> UnaryAsync<TRequest, T>(string path, TRequest request, MessageParser<T> parser, IReadOnlyDictionary<string, string>? headers = null)
        where TRequest : class, IMessage<TRequest>
        where T : class, IMessage<T>
    {
        var result = await _client.UnaryAsync(path, request, parser, headers);
        Assert.True(result.GrpcStatus == 0, $"grpc-status {result.GrpcStatus}: {result.GrpcMessage}");
        return result.Response!;
    }

    private Task<UpdateOffsetResponse> UpdateOffsetAsync(long offset, string? group = null, int queueId = 0, IReadOnlyDictionary<string, string>? headers = null)
        => UnaryAsync(GrpcMethods.UpdateOffset, new UpdateOffsetRequest { Group = new Resource { Name = group ?? _group }, MessageQueue = Queue(queueId), Offset = offset },
            UpdateOffsetResponse.Parser, headers);

    private Task<GetOffsetResponse> GetOffsetAsync(string? group = null, int queueId = 0, IReadOnlyDictionary<string, string>? headers = null)
        => UnaryAsync(GrpcMethods.GetOffset, new GetOffsetRequest { Group = new Resource { Name = group ?? _group }, MessageQueue = Queue(queueId) },
            GetOffsetResponse.Parser, headers);

    private Task<QueryOffsetResponse> QueryOffsetAsync(QueryOffsetPolicy policy, Timestamp? at = null, int queueId = 0, string? topic = null)
    {
        var request = new QueryOffsetRequest { MessageQueue = Queue(queueId, topic), QueryOffsetPolicy = policy };
        if (at is not null) request.Timestamp = at;
        return UnaryAsync(GrpcMethods.QueryOffset, request, QueryOffsetResponse.Parser);
    }

    // ---------------------------------------------------------------- PullMessage

    [Fact]
    public async Task A_pull_from_offset_0_streams_status_then_the_messages_in_order_then_next_offset()
    {
        await CreateTopicAsync();
        var sent = new List<Message>();
        for (int i = 0; i < 5; i++) sent.Add(await SendAsync("body-" + i));

        var first = await PullAsync(PullRequest(0, batch: 3));
        Assert.Equal(Code.Ok, StatusOf(first).Code);
        Assert.Equal(5, first.Count); // status, 3 messages, next_offset
        List<Message> messages = MessagesOf(first);
        Assert.Equal(["body-0", "body-1", "body-2"], messages.Select(m => m.Body.ToStringUtf8()));
        for (int i = 0; i < 3; i++)
        {
            SystemProperties sp = messages[i].SystemProperties;
            Assert.Equal(sent[i].SystemProperties.MessageId, sp.MessageId);
            Assert.Equal(_topic, messages[i].Topic.Name);
            Assert.Equal(0, sp.QueueId);
            Assert.Equal(i, sp.QueueOffset);
            Assert.Equal(1, sp.DeliveryAttempt);
            Assert.NotNull(sp.BornTimestamp);
            Assert.True(sp.StoreTimestamp.ToDateTimeOffset() > DateTimeOffset.UnixEpoch);
            Assert.Empty(sp.ReceiptHandle); // a pull leases nothing
        }
        Assert.Equal(3, NextOffsetOf(first));

        var rest = await PullAsync(PullRequest(3));
        Assert.Equal(["body-3", "body-4"], MessagesOf(rest).Select(m => m.Body.ToStringUtf8()));
        Assert.Equal(5, NextOffsetOf(rest));

        // Caught up, no long poll: MESSAGE_NOT_FOUND at once, with where to pull next.
        var none = await PullAsync(PullRequest(5));
        Assert.Equal(Code.MessageNotFound, StatusOf(none).Code);
        Assert.Equal(2, none.Count);
        Assert.Equal(5, NextOffsetOf(none));
    }

    [Fact]
    public async Task A_long_poll_is_woken_by_a_send()
    {
        await CreateTopicAsync();
        var started = DateTime.UtcNow;
        Task<List<PullMessageResponse>> pull = PullAsync(PullRequest(0, longPoll: TimeSpan.FromSeconds(25)));
        // The pull has reached the engine once its group is seen (the handler marks it just before pulling).
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(broker.Host.Engine.Consumers.Of(_group).Count), n => n > 0,
            TimeSpan.FromSeconds(20), "the pull to arrive");
        Assert.False(pull.IsCompleted);

        await SendAsync("wake");
        var responses = await pull;
        Assert.Equal(Code.Ok, StatusOf(responses).Code);
        Assert.Equal("wake", Assert.Single(MessagesOf(responses)).Body.ToStringUtf8());
        Assert.Equal(1, NextOffsetOf(responses));
        Assert.True(DateTime.UtcNow - started < TimeSpan.FromSeconds(20), "answered by the send, not at the end of the long poll");
    }

    [Fact]
    public async Task A_tag_filter_skips_the_messages_that_do_not_match_and_next_offset_goes_past_them()
    {
        await CreateTopicAsync();
        await SendAsync("a0", "TagA");
        await SendAsync("b1", "TagB");
        await SendAsync("a2", "TagA");
        await SendAsync("c3", "TagC");

        var tagA = await PullAsync(PullRequest(0, tags: "TagA"));
        Assert.Equal(Code.Ok, StatusOf(tagA).Code);
        Assert.Equal([0L, 2L], MessagesOf(tagA).Select(m => m.SystemProperties.QueueOffset));
        Assert.All(MessagesOf(tagA), m => Assert.Equal("TagA", m.SystemProperties.Tag));
        Assert.Equal(4, NextOffsetOf(tagA));

        var either = await PullAsync(PullRequest(0, tags: "TagB || TagC"));
        Assert.Equal(["b1", "c3"], MessagesOf(either).Select(m => m.Body.ToStringUtf8()));

        // Nothing matches: not found, but the client goes on after what was skipped.
        var none = await PullAsync(PullRequest(0, tags: "TagZ"));
        Assert.Equal(Code.MessageNotFound, StatusOf(none).Code);
        Assert.Equal(4, NextOffsetOf(none));
    }

    /// <summary>An SQL92 filter on a pull goes past the messages whose properties do not match (next_offset after
    /// them), as the Remoting pull does; until it was wired in, the pull answered ILLEGAL_FILTER_EXPRESSION.</summary>
    [Fact]
    public async Task An_sql_filter_skips_the_messages_whose_properties_do_not_match()
    {
        await CreateTopicAsync();
        for (int i = 0; i < 4; i++)
        {
            Message message = NewMessage(_topic, "m" + i, null);
            message.UserProperties["a"] = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
            var sent = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser);
            Assert.Equal(Code.Ok, sent.Response!.Status.Code);
        }
        var request = PullRequest(0);
        request.FilterExpression = new FilterExpression { Type = FilterType.Sql, Expression = "a >= 2" };
        var matching = await PullAsync(request);
        Assert.Equal(Code.Ok, StatusOf(matching).Code);
        Assert.Equal(["m2", "m3"], MessagesOf(matching).Select(m => m.Body.ToStringUtf8()));
        Assert.Equal(4, NextOffsetOf(matching));

        request.FilterExpression.Expression = "a > 10";
        var none = await PullAsync(request);
        Assert.Equal(Code.MessageNotFound, StatusOf(none).Code);
        Assert.Equal(4, NextOffsetOf(none));
    }

    [Fact]
    public async Task An_offset_past_the_queue_is_ILLEGAL_OFFSET_with_the_offset_to_pull_from()
    {
        await CreateTopicAsync();
        await SendAsync("only");

        var past = await PullAsync(PullRequest(7));
        Assert.Equal(Code.IllegalOffset, StatusOf(past).Code);
        Assert.Empty(MessagesOf(past));
        Assert.Equal(1, NextOffsetOf(past));
    }

    [Fact]
    public async Task Bad_pull_requests_get_a_clear_status_and_no_messages()
    {
        await CreateTopicAsync();
        await SendAsync("x");

        async Task<Status> Refused(PullMessageRequest request)
        {
            var responses = await PullAsync(request);
            Assert.Empty(MessagesOf(responses));
            return StatusOf(responses);
        }

        var noGroup = PullRequest(0);
        noGroup.Group = null;
        Assert.Equal(Code.IllegalConsumerGroup, (await Refused(noGroup)).Code);

        var noQueue = PullRequest(0);
        noQueue.MessageQueue = null;
        Assert.Equal(Code.BadRequest, (await Refused(noQueue)).Code);

        var negativeQueue = PullRequest(0);
        negativeQueue.MessageQueue.Id = -1;
        Assert.Equal(Code.BadRequest, (await Refused(negativeQueue)).Code);

        Status negativeOffset = await Refused(PullRequest(-1));
        Assert.Equal(Code.IllegalOffset, negativeOffset.Code);
        Assert.Contains("negative", negativeOffset.Message, StringComparison.Ordinal);

        Assert.Equal(Code.BadRequest, (await Refused(PullRequest(0, batch: 0))).Code);
        Assert.Equal(Code.BadRequest, (await Refused(PullRequest(0, batch: -3))).Code);

        var negativePoll = PullRequest(0, longPoll: TimeSpan.FromSeconds(-1));
        Assert.Equal(Code.IllegalPollingTime, (await Refused(negativePoll)).Code);

        Assert.Equal(Code.IllegalFilterExpression, (await Refused(PullRequest(0, tags: "TagA || "))).Code);
        var sql = PullRequest(0);
        sql.FilterExpression = new FilterExpression { Type = FilterType.Sql, Expression = "a >" };
        Status badSql = await Refused(sql);
        Assert.Equal(Code.IllegalFilterExpression, badSql.Code);
        Assert.Contains("position", badSql.Message, StringComparison.Ordinal);

        var unknownTopic = PullRequest(0);
        unknownTopic.MessageQueue = Queue(0, "no-such-" + Guid.NewGuid().ToString("N")[..8]);
        Assert.Equal(Code.TopicNotFound, (await Refused(unknownTopic)).Code);

        var unknownQueue = PullRequest(0);
        unknownQueue.MessageQueue.Id = 5; // the topic has one queue
        Status noSuchQueue = await Refused(unknownQueue);
        Assert.Equal(Code.BadRequest, noSuchQueue.Code);
        Assert.Contains("queue 5", noSuchQueue.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_batch_larger_than_the_queue_returns_what_there_is()
    {
        await CreateTopicAsync();
        for (int i = 0; i < 3; i++) await SendAsync("m" + i);

        var all = await PullAsync(PullRequest(0, batch: int.MaxValue));
        Assert.Equal(3, MessagesOf(all).Count);
        Assert.Equal(3, NextOffsetOf(all));
    }

    // ---------------------------------------------------------------- offsets

    [Fact]
    public async Task UpdateOffset_then_GetOffset_returns_it_and_Remoting_sees_the_same_offset()
    {
        await CreateTopicAsync();
        for (int i = 0; i < 4; i++) await SendAsync("m" + i);

        Assert.Equal(Code.Ok, (await UpdateOffsetAsync(3)).Status.Code);
        GetOffsetResponse got = await GetOffsetAsync();
        Assert.Equal(Code.Ok, got.Status.Code);
        Assert.Equal(3, got.Offset);

        // One offset store for both protocols: a RocketMQ 4 consumer of the group resumes where the gRPC one left off ...
        await using var remoting = await broker.ConnectAsync();
        var query = await remoting.InvokeAsync(RemotingCommand.Request(RequestCode.QueryConsumerOffset)
            .Set("consumerGroup", _group).Set("topic", _topic).Set("queueId", 0L));
        Assert.Equal(ResponseCode.Success, query.Code);
        Assert.Equal("3", query.Get("offset"));
        Assert.Equal(3, broker.Host.Engine.QueryConsumerOffset(_group, _topic, 0));

        // ... and the other way round.
        var update = await remoting.InvokeAsync(RemotingCommand.Request(RequestCode.UpdateConsumerOffset)
            .Set("consumerGroup", _group).Set("topic", _topic).Set("queueId", 0L).Set("commitOffset", 4L));
        Assert.Equal(ResponseCode.Success, update.Code);
        Assert.Equal(4, (await GetOffsetAsync()).Offset);
    }

    [Fact]
    public async Task Offsets_in_a_namespace_are_the_wrapped_groups_and_pulled_messages_carry_the_namespace()
    {
        const string ns = "tenant1";
        var headers = new Dictionary<string, string> { [RocketMqHeaders.Namespace] = ns };
        string stored = ns + "%" + _topic;
        await CreateTopicAsync(stored);
        await SendAsync("in-ns", headers: headers);

        var pulled = await PullAsync(PullRequest(0), headers);
        Message message = Assert.Single(MessagesOf(pulled));
        Assert.Equal(_topic, message.Topic.Name);
        Assert.Equal(ns, message.Topic.ResourceNamespace);

        Assert.Equal(Code.Ok, (await UpdateOffsetAsync(1, headers: headers)).Status.Code);
        Assert.Equal(1, broker.Host.Engine.QueryConsumerOffset(ns + "%" + _group, stored, 0));
        Assert.Null(broker.Host.Engine.QueryConsumerOffset(_group, _topic, 0));
        Assert.Equal(1, (await GetOffsetAsync(headers: headers)).Offset);
    }

    [Fact]
    public async Task GetOffset_of_a_group_that_never_committed_is_0_on_a_queue_that_starts_at_0()
    {
        await CreateTopicAsync();
        await SendAsync("m");
        GetOffsetResponse fresh = await GetOffsetAsync("fresh-" + Guid.NewGuid().ToString("N")[..8]);
        Assert.Equal(Code.Ok, fresh.Status.Code);
        Assert.Equal(0, fresh.Offset);
    }

    [Fact]
    public async Task Bad_offset_requests_get_a_clear_status()
    {
        await CreateTopicAsync();

        Assert.Equal(Code.IllegalOffset, (await UpdateOffsetAsync(-1)).Status.Code);
        Assert.Equal(Code.IllegalConsumerGroup, (await UpdateOffsetAsync(1, group: "")).Status.Code);
        Assert.Equal(Code.IllegalConsumerGroup, (await GetOffsetAsync(group: "")).Status.Code);
        Assert.Equal(Code.BadRequest, (await UpdateOffsetAsync(1, queueId: 3)).Status.Code);
        Assert.Equal(Code.BadRequest, (await GetOffsetAsync(queueId: -2)).Status.Code);

        var noQueue = await UnaryAsync(GrpcMethods.UpdateOffset, new UpdateOffsetRequest { Group = new Resource { Name = _group }, Offset = 1 },
            UpdateOffsetResponse.Parser);
        Assert.Equal(Code.BadRequest, noQueue.Status.Code);

        string unknown = "no-such-" + Guid.NewGuid().ToString("N")[..8];
        var unknownTopic = await UnaryAsync(GrpcMethods.GetOffset, new GetOffsetRequest { Group = new Resource { Name = _group }, MessageQueue = Queue(0, unknown) },
            GetOffsetResponse.Parser);
        Assert.Equal(Code.TopicNotFound, unknownTopic.Status.Code);
        Assert.Equal(Code.TopicNotFound, (await QueryOffsetAsync(QueryOffsetPolicy.End, topic: unknown)).Status.Code);
        Assert.Equal(Code.BadRequest, (await QueryOffsetAsync(QueryOffsetPolicy.End, queueId: 9)).Status.Code);
        Assert.Equal(Code.BadRequest, (await QueryOffsetAsync(QueryOffsetPolicy.Timestamp)).Status.Code); // no timestamp
        Assert.Equal(Code.BadRequest, (await QueryOffsetAsync((QueryOffsetPolicy)42)).Status.Code);
    }

    [Fact]
    public async Task QueryOffset_answers_BEGINNING_END_and_TIMESTAMP()
    {
        await CreateTopicAsync();
        await SendAsync("m0");
        long firstStored = (await broker.Host.Engine.PullAsync(_topic, 0, 0, 1, Core.Delivery.TagFilter.All, TimeSpan.Zero)).Messages[0].Message.StoreTimestampMs;
        // Wait for the clock to pass the first message's store time (a condition, not a fixed sleep): the next ones are
        // then stored strictly after it, and a search at their time skips the first.
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()), now => now > firstStored + 1,
            TimeSpan.FromSeconds(5), "the clock to move");
        await SendAsync("m1");
        await SendAsync("m2");
        long secondStored = (await broker.Host.Engine.PullAsync(_topic, 0, 1, 1, Core.Delivery.TagFilter.All, TimeSpan.Zero)).Messages[0].Message.StoreTimestampMs;

        Assert.Equal(0, (await QueryOffsetAsync(QueryOffsetPolicy.Beginning)).Offset);
        QueryOffsetResponse end = await QueryOffsetAsync(QueryOffsetPolicy.End);
        Assert.Equal(Code.Ok, end.Status.Code);
        Assert.Equal(3, end.Offset);

        QueryOffsetResponse atSecond = await QueryOffsetAsync(QueryOffsetPolicy.Timestamp, Timestamp.FromDateTimeOffset(DateTimeOffset.FromUnixTimeMilliseconds(secondStored)));
        Assert.Equal(Code.Ok, atSecond.Status.Code);
        Assert.Equal(1, atSecond.Offset);
        Assert.Equal(0, (await QueryOffsetAsync(QueryOffsetPolicy.Timestamp, Timestamp.FromDateTimeOffset(DateTimeOffset.UnixEpoch))).Offset);
        Assert.Equal(3, (await QueryOffsetAsync(QueryOffsetPolicy.Timestamp, Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow.AddDays(1)))).Offset);
    }
}
