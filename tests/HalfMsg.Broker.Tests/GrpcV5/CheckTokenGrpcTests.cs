using Apache.Rocketmq.V2;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// Which gRPC clients get the half's check token in a check-back's transaction id (since the afternoon session of
/// 2026-12-07), and how answers carrying it are judged. An older build of our ProducerClient hands the id it is sent to
/// its checker (a BarrierChecker looks it up and would answer Rollback for a committed transaction), and says DOTNET as
/// the official C# client does: DOTNET without the opt-in header gets the plain id, as before. The official Java, Node,
/// Go and Python clients echo the id verbatim and give their checker none: they get the token, as does a client that
/// opts in. The Rust and C++ clients' checkers see the id, and other languages are not known: plain id.
/// </summary>
public sealed class CheckTokenGrpcTests(FastCheckBrokerFixture broker) : IClassFixture<FastCheckBrokerFixture>
{
    private readonly string _topic = "ct-" + Guid.NewGuid().ToString("N")[..12];

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(60);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "timed out waiting until " + what);
            await Task.Delay(50);
        }
    }

    private bool Registered(TelemetryTestProducer p)
        => broker.Host.Engine.Producers.Snapshot().TryGetValue(_topic, out string[]? ids) && ids.Contains(p.Client.ClientId);

    /// <summary>Sends a half through <paramref name="p"/>, waits for its check, and returns its id, its token (the address
    /// it was stored at) and the check.</summary>
    private async Task<(string Id, long Token, RecoverOrphanedTransactionCommand Check)> CheckedHalfAsync(TelemetryTestProducer p)
    {
        await WaitUntilAsync(() => Registered(p), "the producer is registered");
        string tx = await p.SendHalfAsync(_topic);
        long token = broker.Host.Engine.FindTransaction(tx)!.LogAddress;
        RecoverOrphanedTransactionCommand? check = null;
        await WaitUntilAsync(() => (check = p.Checks.FirstOrDefault(c => c.Message.SystemProperties.MessageId == tx)) is not null, "the half was checked back");
        return (tx, token, check!);
    }

    [Fact]
    public async Task A_dotnet_client_that_did_not_opt_in_gets_the_plain_transaction_id_and_its_answer_decides()
    {
        // GrpcTestClient says x-mq-language DOTNET: an older build of our ProducerClient, or the official C# client.
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer);
        var (tx, _, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx, check.TransactionId);
        await WaitUntilAsync(() => p.Decided.Contains(tx), "the answer decided the half");
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
    }

    [Fact]
    public async Task A_client_whose_settings_say_dotnet_gets_the_plain_id_whatever_its_header_says()
    {
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer,
            headers: new Dictionary<string, string> { [RocketMqHeaders.Language] = "JAVA" }, userAgent: new UA { Language = Language.DotNet, Version = "old" });
        var (tx, _, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx, check.TransactionId);
        await WaitUntilAsync(() => p.Decided.Contains(tx), "the answer decided the half");
    }

    [Theory]
    [InlineData("JAVA", null)] // an official client of another language: echoes the id verbatim
    [InlineData("HTTP", null)] // what the official Node client sends as x-mq-language
    [InlineData("DOTNET", CheckTokenIds.AcceptValue)] // our ProducerClient, which opts in
    public async Task A_client_that_echoes_the_id_gets_the_check_token_and_its_echo_decides(string language, string? optIn)
    {
        var headers = new Dictionary<string, string> { [RocketMqHeaders.Language] = language };
        if (optIn is not null) headers[CheckTokenIds.AcceptHeader] = optIn;
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer,
            headers: headers);
        var (tx, token, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx + "~ck" + token, check.TransactionId);
        Assert.Equal(tx, check.Message.SystemProperties.MessageId);
        // The test producer echoes the check's transaction_id, as the official clients do.
        await WaitUntilAsync(() => p.Decided.Contains(check.TransactionId), "the echoed answer decided the half");
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
        Assert.DoesNotContain(p.Errors, e => !e.StartsWith("reader ended", StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("RUST", null)] // the official Rust client gives its checker the transaction id it is sent
    [InlineData("CPP", null)] // the official C++ client puts it in the message's extension, which its checker sees
    [InlineData("PHP", null)] // not an Apache client: not known to echo the id and keep it from its checker
    [InlineData("JAVA", Language.Rust)] // the Settings say Rust, whatever the header says
    [InlineData("GOLANG", Language.Cpp)]
    public async Task A_client_whose_checker_may_see_the_transaction_id_gets_the_plain_id_and_its_answer_decides(string language, Language? settings)
    {
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Answer,
            headers: new Dictionary<string, string> { [RocketMqHeaders.Language] = language },
            userAgent: settings is { } l ? new UA { Language = l, Version = "5.0.0" } : null);
        var (tx, _, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx, check.TransactionId);
        await WaitUntilAsync(() => p.Decided.Contains(tx), "the answer decided the half");
    }

    [Fact]
    public async Task The_official_go_clients_echo_without_a_source_decides_the_half_and_another_halfs_token_is_refused()
    {
        // The official Go client (x-mq-language GOLANG) echoes the check's transaction_id in its EndTransaction but sets
        // no source (TRANSACTION_SOURCE_UNSPECIFIED): producer.go onRecoverOrphanedTransactionCommand / endTransaction.
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Ignore,
            headers: new Dictionary<string, string> { [RocketMqHeaders.Language] = "GOLANG" });
        var (tx, token, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx + "~ck" + token, check.TransactionId);

        // A late answer to an earlier half's check, as the Go client sends it: refused, this half stays pending.
        var other = await AnswerAsync(p, tx, CheckTokenIds.Make(tx, token + 1), Apache.Rocketmq.V2.TransactionResolution.Rollback, TransactionSource.SourceUnspecified);
        Assert.Equal(Code.NotFound, other.Response!.Status.Code);
        Assert.Contains("another half", other.Response.Status.Message, StringComparison.Ordinal);
        Assert.NotNull(broker.Host.Engine.FindTransaction(tx));

        // Its echo of this half's check: decides it.
        var echo = await AnswerAsync(p, tx, check.TransactionId, source: TransactionSource.SourceUnspecified);
        Assert.True(echo.Response!.Status.Code == Code.Ok, $"the echo was refused: {echo.Response.Status.Code} {echo.Response.Status.Message}");
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
    }

    private Task<GrpcUnaryResult<EndTransactionResponse>> AnswerAsync(TelemetryTestProducer p, string tx, string transactionId,
        Apache.Rocketmq.V2.TransactionResolution resolution = Apache.Rocketmq.V2.TransactionResolution.Commit, TransactionSource source = TransactionSource.SourceServerCheck)
        => p.Client.UnaryAsync(GrpcMethods.EndTransaction, new EndTransactionRequest
        {
            Topic = new Resource { Name = _topic },
            MessageId = tx,
            TransactionId = transactionId,
            Resolution = resolution,
            Source = source,
        }, EndTransactionResponse.Parser);

    [Fact]
    public async Task An_answer_with_a_malformed_or_another_halfs_token_is_refused_and_one_without_a_token_is_judged_as_before()
    {
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Ignore,
            headers: new Dictionary<string, string> { [RocketMqHeaders.Language] = "JAVA" });
        var (tx, token, check) = await CheckedHalfAsync(p);
        Assert.Equal(tx + "~ck" + token, check.TransactionId);

        // A malformed token: a clear error, nothing decided.
        foreach (string malformed in new[] { tx + "~ck", tx + "~ckX1", tx + "~ck-5", tx + "~ck99999999999999999999" })
        {
            var bad = await AnswerAsync(p, tx, malformed);
            Assert.Equal(Code.InvalidTransactionId, bad.Response!.Status.Code);
            Assert.Contains("malformed check token", bad.Response.Status.Message, StringComparison.Ordinal);
        }

        // Another half's token (an earlier half of the id): refused as an answer to a half that is gone.
        var other = await AnswerAsync(p, tx, CheckTokenIds.Make(tx, token + 1), Apache.Rocketmq.V2.TransactionResolution.Rollback);
        Assert.Equal(Code.NotFound, other.Response!.Status.Code);
        Assert.Contains("another half", other.Response.Status.Message, StringComparison.Ordinal);
        Assert.NotNull(broker.Host.Engine.FindTransaction(tx));

        // Without a token the answer is judged as before: it decides the checked half.
        var plain = await AnswerAsync(p, tx, tx);
        Assert.Equal(Code.Ok, plain.Response!.Status.Code);
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
        // The echo of the right token, once decided: the same outcome again is no error.
        var again = await AnswerAsync(p, tx, check.TransactionId);
        Assert.Equal(Code.Ok, again.Response!.Status.Code);
    }

    [Fact]
    public async Task In_a_batch_of_decisions_each_answer_is_judged_by_its_own_token()
    {
        await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(broker.Endpoint, _topic, TelemetryTestProducer.Behaviour.Ignore,
            headers: new Dictionary<string, string> { [RocketMqHeaders.Language] = "JAVA" });
        var (tx, token, check) = await CheckedHalfAsync(p);

        EndTransactionRequest Answer(string transactionId, Apache.Rocketmq.V2.TransactionResolution resolution) => new()
        {
            Topic = new Resource { Name = _topic }, MessageId = tx, TransactionId = transactionId, Resolution = resolution,
            Source = TransactionSource.SourceServerCheck,
        };
        var batch = await p.Client.UnaryAsync("/halfmsg.v1.TransactionService/EndTransactions", new HalfMsg.Protocol.V1.EndTransactionsRequest
        {
            Decisions =
            {
                Answer(tx + "~ckX", Apache.Rocketmq.V2.TransactionResolution.Rollback),
                Answer(CheckTokenIds.Make(tx, token + 1), Apache.Rocketmq.V2.TransactionResolution.Rollback),
                Answer(check.TransactionId, Apache.Rocketmq.V2.TransactionResolution.Commit),
            },
        }, HalfMsg.Protocol.V1.EndTransactionsResponse.Parser);
        Assert.Equal(Code.Ok, batch.Response!.Status.Code);
        Assert.Equal([Code.InvalidTransactionId, Code.NotFound, Code.Ok], batch.Response.Entries.Select(e => e.Code));
        Assert.Null(broker.Host.Engine.FindTransaction(tx));
    }

    // The token is the address the half was stored at, never its current one: a check after retention moved the half, and
    // after a restart from a checkpoint or from the log alone, carries the token the first check did (live == recovered).
    [Theory]
    [InlineData("checkpoint", false)]
    [InlineData("checkpoint", true)]
    [InlineData("log", true)]
    public async Task A_half_checked_before_a_restart_is_checked_with_the_same_token_after_it_and_the_echo_decides(string restart, bool moved)
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-ctrestart-" + Guid.NewGuid().ToString("N")[..12]);
        int grpc = HalfMsg.TestKit.FreePorts.Next();
        string[] args = ["--data-dir", dataDir, "--grpc-port", grpc.ToString(), "--http-port", HalfMsg.TestKit.FreePorts.Next().ToString(),
            "--transaction-timeout", "1s", "--transaction-check-interval", "1s", "--remoting-port", "0", "--namesrv-port", "0"];
        string endpoint = $"127.0.0.1:{grpc}";
        var java = new Dictionary<string, string> { [RocketMqHeaders.Language] = "JAVA" };
        try
        {
            string tx;
            string before;
            await using (var host = await HalfMsg.Broker.Hosting.BrokerHost.StartAsync(args))
            {
                await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(endpoint, _topic, TelemetryTestProducer.Behaviour.Ignore, headers: java);
                await WaitUntilAsync(() => host.Engine.Producers.Snapshot().ContainsKey(_topic), "the producer is registered");
                tx = await p.SendHalfAsync(_topic);
                long storedAt = host.Engine.FindTransaction(tx)!.LogAddress;
                await WaitUntilAsync(() => p.Checks.Any(c => c.Message.SystemProperties.MessageId == tx), "the half was checked back");
                before = p.Checks.First(c => c.Message.SystemProperties.MessageId == tx).TransactionId;
                Assert.Equal(CheckTokenIds.Make(tx, storedAt), before);
                if (moved)
                {
                    // Moved twice by retention: a replay of the log alone has only the second move's record.
                    for (int move = 0; move < 2; move++)
                    {
                        long boundary = host.Engine.LogTailAddress;
                        Assert.True((await host.Engine.SendAsync(new HalfMsg.Broker.Core.Model.MessageDraft
                        {
                            Topic = _topic + "-filler", MessageId = Guid.NewGuid().ToString("N"), Body = new byte[] { 1 },
                        })).IsOk);
                        Assert.True(await host.Engine.TruncateBeforeAsync(boundary) >= 1, "the retention cut moved nothing");
                    }

                    Assert.NotEqual(storedAt, host.Engine.FindTransaction(tx)!.LogAddress);
                }

                if (restart == "checkpoint") await host.Engine.CheckpointAsync();
            }

            if (restart == "log")
            {
                foreach (string f in Directory.GetFiles(Path.Combine(dataDir, "checkpoints"), "checkpoint-*.bin")) File.Delete(f);
            }

            await using (var host = await HalfMsg.Broker.Hosting.BrokerHost.StartAsync(args))
            {
                Assert.NotNull(host.Engine.FindTransaction(tx));
                await using TelemetryTestProducer p = await TelemetryTestProducer.StartAsync(endpoint, _topic, TelemetryTestProducer.Behaviour.Answer, headers: java);
                await WaitUntilAsync(() => p.Decided.Contains(before), "the echo of the same token decided the half after the restart");
                Assert.Null(host.Engine.FindTransaction(tx));
            }
        }
        finally
        {
            try { Directory.Delete(dataDir, true); } catch (IOException) { }
        }
    }
}
