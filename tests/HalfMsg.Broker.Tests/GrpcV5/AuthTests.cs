using Apache.Rocketmq.V2;
using Google.Protobuf;
using Google.Protobuf.WellKnownTypes;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>A child broker with credentials configured through its environment (<c>Broker__Credentials__&lt;ak&gt;</c>).</summary>
public sealed class AuthBrokerFixture : IAsyncLifetime
{
    public const string AccessKey = "test-ak";
    public string Secret { get; } = "sk-" + Guid.NewGuid().ToString("N");
    public BrokerProcess Broker { get; private set; } = null!;

    public async Task InitializeAsync()
        => Broker = await BrokerProcess.StartWithEnvironmentAsync(
            new Dictionary<string, string>
            {
                ["Broker__Credentials__" + AccessKey] = Secret,
                // Rejections are logged at Debug (a bad client must not flood the log); turn that category on here.
                ["Logging__LogLevel__HalfMsg.Broker.FrontEnds.GrpcV5"] = "Debug",
            }, "--transaction-check-interval", "1h");

    public async Task DisposeAsync()
    {
        if (Broker is not null)
        {
            await Broker.DisposeAsync();
        }
    }
}

/// <summary>
/// With credentials configured every call must carry a valid MQv2-HMAC-SHA1 <c>authorization</c> over
/// <c>x-mq-date-time</c>; a rejected call is answered in the body (UNAUTHORIZED, grpc-status 0), and the secret is
/// never written to the broker's output.
/// </summary>
public sealed class AuthTests(AuthBrokerFixture fixture) : IClassFixture<AuthBrokerFixture>, IDisposable
{
    private readonly GrpcTestClient _client = new(fixture.Broker.Endpoint);
    private readonly string _topic = "auth-" + Guid.NewGuid().ToString("N")[..12];

    public void Dispose() => _client.Dispose();

    private static Dictionary<string, string> Signed(string accessKey, string secret, DateTimeOffset? at = null)
    {
        string dateTime = MqSignature.FormatDateTime(at ?? DateTimeOffset.UtcNow);
        return new Dictionary<string, string>
        {
            [RocketMqHeaders.DateTime] = dateTime,
            [RocketMqHeaders.Authorization] = MqSignature.Sign(accessKey, secret, dateTime),
        };
    }

    private Task<GrpcUnaryResult<QueryRouteResponse>> RouteAsync(IReadOnlyDictionary<string, string>? headers)
        => _client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = _topic } }, QueryRouteResponse.Parser, headers);

    private static void AssertUnauthorized<T>(GrpcUnaryResult<T> result, Func<T, Status> status)
        where T : class, IMessage<T>
    {
        Assert.Equal(0, result.GrpcStatus);
        Assert.NotNull(result.Response);
        Assert.Equal(Code.Unauthorized, status(result.Response).Code);
    }

    [Fact]
    public async Task A_call_without_authorization_is_rejected_with_UNAUTHORIZED_in_the_body()
    {
        var route = await RouteAsync(null);
        AssertUnauthorized(route, r => r.Status);
        Assert.Empty(route.Response!.MessageQueues);

        var send = await _client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest
        {
            Messages =
            {
                new Message
                {
                    Topic = new Resource { Name = _topic },
                    Body = ByteString.CopyFromUtf8("x"),
                    SystemProperties = new SystemProperties { MessageId = Guid.NewGuid().ToString("N") },
                },
            },
        }, SendMessageResponse.Parser);
        AssertUnauthorized(send, r => r.Status);
        Assert.Empty(send.Response!.Entries);

        var heartbeat = await _client.UnaryAsync(GrpcMethods.Heartbeat, new HeartbeatRequest(), HeartbeatResponse.Parser);
        AssertUnauthorized(heartbeat, r => r.Status);
    }

    [Fact]
    public async Task A_recall_without_authorization_is_rejected_and_a_signed_one_is_served()
    {
        var signedHeaders = Signed(AuthBrokerFixture.AccessKey, fixture.Secret);
        var message = RecallTests.NewMessage(_topic, "later", DateTimeOffset.UtcNow.AddMinutes(10));
        var sent = await RecallTests.SendAsync(_client, message, signedHeaders);

        var refused = await RecallTests.RecallAsync(_client, _topic, sent.RecallHandle);
        Assert.Equal(Code.Unauthorized, refused.Status.Code);
        Assert.Empty(refused.MessageId);

        var recalled = await RecallTests.RecallAsync(_client, _topic, sent.RecallHandle, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(Code.Ok, recalled.Status.Code);
        Assert.Equal(message.SystemProperties.MessageId, recalled.MessageId);
    }

    [Fact]
    public async Task HalfMsgBrokers_own_EndTransactions_is_under_the_same_authentication()
    {
        string unknown = Guid.NewGuid().ToString("N");
        var request = new HalfMsg.Protocol.V1.EndTransactionsRequest
        {
            Decisions =
            {
                new EndTransactionRequest
                {
                    Topic = new Resource { Name = _topic }, MessageId = unknown, TransactionId = unknown,
                    Resolution = TransactionResolution.Commit, Source = TransactionSource.SourceClient,
                },
            },
        };
        const string path = "/halfmsg.v1.TransactionService/EndTransactions";

        var refused = await _client.UnaryAsync(path, request, HalfMsg.Protocol.V1.EndTransactionsResponse.Parser);
        AssertUnauthorized(refused, r => r.Status);
        Assert.Empty(refused.Response!.Entries);

        var signed = await _client.UnaryAsync(path, request, HalfMsg.Protocol.V1.EndTransactionsResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(0, signed.GrpcStatus);
        Assert.Equal(Code.Ok, signed.Response!.Status.Code);
        Assert.Equal(Code.NotFound, Assert.Single(signed.Response.Entries).Code); // carried out: the id is unknown
    }

    [Fact]
    public async Task A_receive_without_authorization_streams_only_an_UNAUTHORIZED_status()
    {
        var result = await _client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
        {
            Group = new Resource { Name = "g" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = _topic } },
            BatchSize = 1,
            InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
            LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)),
        }, ReceiveMessageResponse.Parser);

        Assert.Equal(0, result.GrpcStatus);
        ReceiveMessageResponse only = Assert.Single(result.Responses);
        Assert.Equal(Code.Unauthorized, only.Status.Code);
    }

    [Fact]
    public async Task The_pull_and_offset_RPCs_without_authorization_are_rejected_and_signed_ones_are_served()
    {
        var queue = new MessageQueue { Topic = new Resource { Name = _topic }, Id = 0 };
        var group = new Resource { Name = "g" };
        var pull = await _client.ServerStreamAsync(GrpcMethods.PullMessage, new PullMessageRequest
        {
            Group = group, MessageQueue = queue, BatchSize = 1, LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromSeconds(5)),
        }, PullMessageResponse.Parser);
        Assert.Equal(0, pull.GrpcStatus);
        Assert.Equal(Code.Unauthorized, Assert.Single(pull.Responses).Status.Code);

        var update = new UpdateOffsetRequest { Group = group, MessageQueue = queue, Offset = 1 };
        var get = new GetOffsetRequest { Group = group, MessageQueue = queue };
        var query = new QueryOffsetRequest { MessageQueue = queue, QueryOffsetPolicy = QueryOffsetPolicy.End };
        AssertUnauthorized(await _client.UnaryAsync(GrpcMethods.UpdateOffset, update, UpdateOffsetResponse.Parser), r => r.Status);
        AssertUnauthorized(await _client.UnaryAsync(GrpcMethods.GetOffset, get, GetOffsetResponse.Parser), r => r.Status);
        AssertUnauthorized(await _client.UnaryAsync(GrpcMethods.QueryOffset, query, QueryOffsetResponse.Parser), r => r.Status);

        // Signed, they are carried out (the topic does not exist).
        var signedPull = await _client.ServerStreamAsync(GrpcMethods.PullMessage, new PullMessageRequest { Group = group, MessageQueue = queue, BatchSize = 1 },
            PullMessageResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(0, signedPull.GrpcStatus);
        Assert.Equal(Code.TopicNotFound, Assert.Single(signedPull.Responses).Status.Code);
        var signedUpdate = await _client.UnaryAsync(GrpcMethods.UpdateOffset, update, UpdateOffsetResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(Code.TopicNotFound, signedUpdate.Response!.Status.Code);
        var signedGet = await _client.UnaryAsync(GrpcMethods.GetOffset, get, GetOffsetResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(Code.TopicNotFound, signedGet.Response!.Status.Code);
        var signedQuery = await _client.UnaryAsync(GrpcMethods.QueryOffset, query, QueryOffsetResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(Code.TopicNotFound, signedQuery.Response!.Status.Code);
    }

    [Fact]
    public async Task A_telemetry_stream_without_authorization_gets_a_status_only_UNAUTHORIZED_command()
    {
        var result = await _client.ServerStreamAsync(GrpcMethods.Telemetry, new TelemetryCommand
        {
            Settings = new Settings { ClientType = ClientType.Producer, Publishing = new Publishing { Topics = { new Resource { Name = _topic } } } },
        }, TelemetryCommand.Parser);

        Assert.Equal(0, result.GrpcStatus);
        TelemetryCommand only = Assert.Single(result.Responses);
        Assert.Equal(Code.Unauthorized, only.Status.Code);
        Assert.Equal(TelemetryCommand.CommandOneofCase.None, only.CommandCase);
    }

    [Fact]
    public async Task A_call_with_a_date_time_but_no_authorization_is_rejected()
    {
        var route = await RouteAsync(new Dictionary<string, string> { [RocketMqHeaders.DateTime] = MqSignature.FormatDateTime(DateTimeOffset.UtcNow) });
        AssertUnauthorized(route, r => r.Status);
    }

    [Fact]
    public async Task A_call_signed_with_the_wrong_secret_is_rejected()
        => AssertUnauthorized(await RouteAsync(Signed(AuthBrokerFixture.AccessKey, "not-the-secret")), r => r.Status);

    [Fact]
    public async Task A_call_signed_with_an_unknown_access_key_is_rejected()
        => AssertUnauthorized(await RouteAsync(Signed("someone-else", fixture.Secret)), r => r.Status);

    [Fact]
    public async Task A_signature_of_another_date_time_is_rejected()
    {
        Dictionary<string, string> headers = Signed(AuthBrokerFixture.AccessKey, fixture.Secret, DateTimeOffset.UtcNow.AddSeconds(-5));
        headers[RocketMqHeaders.DateTime] = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
        AssertUnauthorized(await RouteAsync(headers), r => r.Status);
    }

    /// <summary>The Java 5 and C# clients sign their local time with a literal 'Z' (only Node sends UTC), so the broker
    /// accepts any date-time a time zone can show (UTC−12 to UTC+14, plus the clock skew); a day off is no time zone's
    /// clock, but a replay.</summary>
    [Theory]
    [InlineData(-24 * 60)]
    [InlineData(24 * 60)]
    public async Task A_correct_signature_over_a_date_time_far_from_the_brokers_clock_is_rejected_as_a_replay(int minutes)
        => AssertUnauthorized(await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret, DateTimeOffset.UtcNow.AddMinutes(minutes))), r => r.Status);

    /// <summary>A Java client in Shanghai (UTC+8), a C# client in New York (UTC−5) or Berlin (UTC+1): each signs its local
    /// time, as <c>SimpleDateFormat</c> without a zone and <c>DateTime.Now</c> give it, and is accepted.</summary>
    [Theory]
    [InlineData(8)]
    [InlineData(-5)]
    [InlineData(1)]
    public async Task A_correct_signature_over_the_clients_local_time_succeeds(int utcOffsetHours)
    {
        var route = await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret, DateTimeOffset.UtcNow.AddHours(utcOffsetHours)));
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }

    /// <summary>The official Go client signs <c>Credential=&lt;ak&gt;//rocketmq</c> (golang/client.go, lower-case
    /// hex) and the C++ client <c>Credential=&lt;ak&gt;/&lt;region&gt;/&lt;service&gt;</c> (cpp/source/client/Signature.cpp); the Apache
    /// proxy takes the part before the first '/' as the access key (DefaultAuthenticationContextBuilder).</summary>
    [Theory]
    [InlineData("{0}//rocketmq", true)]
    [InlineData("{0}/cn-hangzhou/RocketMQ", false)]
    public async Task A_credential_with_a_region_and_service_scope_as_the_Go_and_Cpp_clients_send_succeeds(string credentialFormat, bool lowerHex)
    {
        string dateTime = MqSignature.FormatDateTime(DateTimeOffset.UtcNow);
        byte[] mac = System.Security.Cryptography.HMACSHA1.HashData(System.Text.Encoding.UTF8.GetBytes(fixture.Secret), System.Text.Encoding.UTF8.GetBytes(dateTime));
        string hex = Convert.ToHexString(mac);
        if (lowerHex) hex = hex.ToLowerInvariant();
        string credential = string.Format(System.Globalization.CultureInfo.InvariantCulture, credentialFormat, AuthBrokerFixture.AccessKey);
        var route = await RouteAsync(new Dictionary<string, string>
        {
            [RocketMqHeaders.DateTime] = dateTime,
            [RocketMqHeaders.Authorization] = $"MQv2-HMAC-SHA1 Credential={credential}, SignedHeaders=x-mq-date-time, Signature={hex}",
        });
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }

    /// <summary>The official C# client formats <c>DateTime.Now.ToString("yyyyMMddTHHmmssZ")</c> in the current
    /// culture, whose calendar is the Thai Buddhist (th-TH, year 2569), Um al-Qura (ar-SA, 1448) or Persian (fa-IR,
    /// 1405) one; the Java client's <c>SimpleDateFormat</c> gives the Buddhist year under a th_TH default locale. The
    /// Apache proxy checks only the HMAC over the header's text, so those clients work there.</summary>
    [Theory]
    [InlineData("th-TH")]
    [InlineData("ar-SA")]
    [InlineData("fa-IR")]
    public async Task A_correct_signature_over_a_date_time_in_the_clients_culture_calendar_succeeds(string culture)
    {
        // What DateTime.Now.ToString("yyyyMMddTHHmmssZ") gives in that culture (the tests run in invariant-globalization
        // mode, so the culture's calendar is used directly; the broker's clock is the client's, as in UTC).
        System.Globalization.Calendar calendar = culture switch
        {
            "th-TH" => new System.Globalization.ThaiBuddhistCalendar(),
            "ar-SA" => new System.Globalization.UmAlQuraCalendar(),
            _ => new System.Globalization.PersianCalendar(),
        };
        DateTime now = DateTime.UtcNow;
        string dateTime = string.Create(System.Globalization.CultureInfo.InvariantCulture,
            $"{calendar.GetYear(now):D4}{calendar.GetMonth(now):D2}{calendar.GetDayOfMonth(now):D2}T{now:HHmmss}Z");
        Assert.DoesNotMatch("^20", dateTime);
        var route = await RouteAsync(new Dictionary<string, string>
        {
            [RocketMqHeaders.DateTime] = dateTime,
            [RocketMqHeaders.Authorization] = MqSignature.Sign(AuthBrokerFixture.AccessKey, fixture.Secret, dateTime),
        });
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }

    [Fact]
    public async Task A_correct_signature_within_the_clock_skew_window_succeeds()
    {
        var route = await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret, DateTimeOffset.UtcNow.AddMinutes(-5)));
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("MQv2-HMAC-SHA1 Credential=test-ak")]
    [InlineData("MQv2-HMAC-SHA1 Credential=test-ak, SignedHeaders=x-mq-date-time, Signature=ZZ")]
    public async Task A_malformed_authorization_is_rejected(string authorization)
    {
        var route = await RouteAsync(new Dictionary<string, string>
        {
            [RocketMqHeaders.DateTime] = MqSignature.FormatDateTime(DateTimeOffset.UtcNow),
            [RocketMqHeaders.Authorization] = authorization,
        });
        AssertUnauthorized(route, r => r.Status);
    }

    [Fact]
    public async Task A_correctly_signed_call_succeeds_for_unary_and_streaming_rpcs()
    {
        var route = await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(0, route.GrpcStatus);
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
        Assert.NotEmpty(route.Response.MessageQueues);

        var receive = await _client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
        {
            Group = new Resource { Name = "g-auth" },
            MessageQueue = new MessageQueue { Topic = new Resource { Name = _topic } },
            BatchSize = 1,
            InvisibleDuration = Duration.FromTimeSpan(TimeSpan.FromSeconds(10)),
            LongPollingTimeout = Duration.FromTimeSpan(TimeSpan.FromMilliseconds(100)),
        }, ReceiveMessageResponse.Parser, Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(0, receive.GrpcStatus);
        Assert.Equal(Code.MessageNotFound, receive.Responses[0].Status.Code);
    }

    [Fact]
    public async Task The_secret_never_appears_in_the_broker_output_even_after_rejected_calls()
    {
        await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret + "x"));
        await RouteAsync(Signed("someone-else", fixture.Secret));
        // The rejections' log lines, read from the broker's output as it comes (a bound for a busy machine, not a pause).
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!fixture.Broker.Output.Contains("Rejected a gRPC call", StringComparison.Ordinal) && DateTime.UtcNow < deadline)
        {
            await Task.Delay(50);
        }

        string output = fixture.Broker.Output;
        Assert.Contains("ready", output);
        // Rejections are logged (at Debug, which this fixture turns on; rate-limited, so maybe not these very ones)
        // with the access key only.
        Assert.Contains("dbug: HalfMsg.Broker.FrontEnds.GrpcV5.V5Authenticator", output);
        Assert.DoesNotContain(fixture.Secret, output, StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_unauthenticated_caller_cannot_make_the_broker_buffer_a_large_message()
    {
        // The review's attack, one stream of it: a 5 MB length prefix, 1 MB of it sent, then silence. Unauthenticated,
        // the broker stops reading after 64 KiB and ends the call instead of holding the stream and its buffer.
        string? ended = await RawGrpc.StalledUploadAsync(fixture.Broker.Endpoint, GrpcMethods.SendMessage, 5_000_000, 1_000_000,
            new Dictionary<string, string> { [RocketMqHeaders.ClientId] = "stranger" }, TimeSpan.FromSeconds(20));

        Assert.NotNull(ended);
        Assert.DoesNotContain("grpc-status 0", ended, StringComparison.Ordinal);
        var route = await RouteAsync(Signed(AuthBrokerFixture.AccessKey, fixture.Secret));
        Assert.Equal(Code.Ok, route.Response!.Status.Code);
    }
}
