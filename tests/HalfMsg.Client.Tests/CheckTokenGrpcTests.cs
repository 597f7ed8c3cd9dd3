using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using CoreResolution = HalfMsg.Broker.Core.Model.TransactionResolution;
using ProducerResolution = HalfMsg.ProducerClient.TransactionResolution;

namespace HalfMsg.Client.Tests;

/// <summary>
/// A transaction id is taken again once its decision is forgotten. Over gRPC a check-back named the id alone, and a late
/// answer to the check of the EARLIER half of the id decided the new half once that had had its own check. Since the
/// afternoon session of 2026-12-07 the broker puts the half's check token after the id of each check it sends our
/// ProducerClient (which asks for it), the producer gives its checker the id without it and echoes the whole id, and
/// the broker refuses an answer whose token is another half's.
/// </summary>
[Trait("Category", "E2E")]
public sealed class CheckTokenGrpcTests : IAsyncLifetime
{
    /// <summary>Decisions the broker remembers: few, so the first half's is forgotten quickly.</summary>
    private const int Remembered = 10;

    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(30);

    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-grpctoken-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost _host = null!;
    private string _endpoint = null!;

    public async Task InitializeAsync()
    {
        int grpc = FreePorts.Next();
        _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--bind", "127.0.0.1", "--grpc-port", grpc.ToString(),
            "--http-port", FreePorts.Next().ToString(), "--remoting-port", "0", "--namesrv-port", "0",
            "--transaction-timeout", "1s", "--transaction-check-interval", "1s"],
            o => o with { Core = o.Core with { MaxRememberedDecisions = Remembered } });
        _endpoint = $"127.0.0.1:{grpc}";
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    /// <summary>The first check is held until <see cref="ReleaseFirst"/> and then answers Rollback; the others answer
    /// Unknown until <see cref="CommitFromNowOn"/>, then Commit. Records the id each check gave the checker.</summary>
    private sealed class LateFirstChecker : ITransactionChecker
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _calls;
        private volatile bool _commit;
        public TaskCompletionSource FirstStarted { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public ConcurrentQueue<string?> Ids { get; } = new();

        public void ReleaseFirst() => _release.TrySetResult();

        public void CommitFromNowOn() => _commit = true;

        public async ValueTask<ProducerResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
        {
            Ids.Enqueue(message.TransactionId);
            if (Interlocked.Increment(ref _calls) == 1)
            {
                FirstStarted.TrySetResult();
                await _release.Task.WaitAsync(cancellationToken);
                return ProducerResolution.Rollback;
            }

            return _commit ? ProducerResolution.Commit : ProducerResolution.Unknown;
        }
    }

    /// <summary>Records the producer's EndTransaction calls, each once the broker has answered it.</summary>
    private sealed class RecordDecisions() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        public ConcurrentQueue<EndTransactionRequest> Answered { get; } = new();
        public ConcurrentQueue<string> TelemetryOptIns { get; } = new();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri?.AbsolutePath == GrpcMethods.Telemetry)
            {
                TelemetryOptIns.Enqueue(request.Headers.TryGetValues(CheckTokenIds.AcceptHeader, out var v) ? string.Join(",", v) : "");
            }

            if (request.RequestUri?.AbsolutePath != GrpcMethods.EndTransaction || request.Content is not { } content)
            {
                return await base.SendAsync(request, cancellationToken);
            }

            // One gRPC message: a compressed flag (0: none), its length (4 bytes, big-endian), the message.
            byte[] framed = await content.ReadAsByteArrayAsync(cancellationToken);
            Assert.Equal(0, framed[0]);
            EndTransactionRequest decision = EndTransactionRequest.Parser.ParseFrom(framed.AsSpan(5));
            var copy = new ByteArrayContent(framed);
            foreach (KeyValuePair<string, IEnumerable<string>> header in content.Headers)
            {
                copy.Headers.TryAddWithoutValidation(header.Key, header.Value);
            }

            request.Content = copy;
            // A unary call's response starts once the broker's handler has returned: the decision has been judged.
            HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
            Answered.Enqueue(decision);
            return response;
        }
    }

    /// <summary>Decisions of other ids, twice as many as the broker remembers: every earlier decision is forgotten.</summary>
    private async Task ForgetDecisionsAsync(string topic)
    {
        var halves = Enumerable.Range(0, 2 * Remembered).Select(i => new HalfDraft(new MessageDraft
        {
            Topic = topic, MessageId = $"{topic}-other-{i}", Body = new byte[] { 1 },
        }, "other-producers", null, null)).ToList();
        Assert.All(await _host.Engine.SendHalvesAsync(halves), r => Assert.True(r.IsOk, r.Error.ToString()));
        var decisions = halves.Select(h => new DecisionRequest(h.Message.MessageId, null, CoreResolution.Rollback, DecisionSource.Client)).ToList();
        Assert.All(await _host.Engine.EndTransactionsAsync(decisions), r => Assert.True(r.IsOk, r.Error.ToString()));
    }

    private async Task SendHalfAsync(string topic, string id, string body)
    {
        // As a gRPC producer's half is stored: its group is its topic (the group the producer's Telemetry registers).
        SendHalfResult sent = await _host.Engine.SendHalfAsync(new MessageDraft { Topic = topic, MessageId = id, Body = System.Text.Encoding.UTF8.GetBytes(body) },
            topic, null, null);
        Assert.True(sent.IsOk, sent.Error.ToString());
    }

    [Fact]
    public async Task A_late_answer_to_the_check_of_an_earlier_half_of_the_id_is_refused_after_the_new_half_was_checked()
    {
        string topic = E2E.Unique("txtoken");
        string id = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant();
        var checker = new LateFirstChecker();
        using var decisions = new RecordDecisions();
        var logs = new RecordingLoggerFactory();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = _endpoint, Topics = [topic], TransactionChecker = checker, DecisionCallsInFlight = 0, LoggerFactory = logs,
        }, decisions, CancellationToken.None);
        await E2E.EventuallyAsync(() => _host.Engine.Producers.Snapshot().ContainsKey(topic), Wait, "the producer is registered for its topic");

        // The first half of the id is checked; its checker is slow. It is decided meanwhile, and the decision forgotten.
        await SendHalfAsync(topic, id, "FIRST");
        long firstToken = _host.Engine.FindTransaction(id)!.LogAddress;
        await checker.FirstStarted.Task.WaitAsync(Wait);
        Assert.True((await _host.Engine.EndTransactionAsync(new DecisionRequest(id, null, CoreResolution.Commit, DecisionSource.Client))).IsOk);
        await ForgetDecisionsAsync(E2E.Unique("others"));

        // The id is sent again, and the new half has its own check.
        await SendHalfAsync(topic, id, "SECOND");
        long secondToken = _host.Engine.FindTransaction(id)!.LogAddress;
        Assert.NotEqual(firstToken, secondToken);
        await E2E.EventuallyAsync(() => _host.Engine.FindTransaction(id) is { Checks: > 0 }, Wait, "the new half was checked back");

        // The late Rollback for the FIRST half's check: refused, the new half is still pending.
        checker.ReleaseFirst();
        await E2E.EventuallyAsync(() => decisions.Answered.Any(d => d.Resolution == Apache.Rocketmq.V2.TransactionResolution.Rollback), Wait,
            "the late answer was judged");
        EndTransactionRequest late = decisions.Answered.Single(d => d.Resolution == Apache.Rocketmq.V2.TransactionResolution.Rollback);
        Assert.True(_host.Engine.FindTransaction(id) is not null,
            $"the late Rollback to the first half's check (transaction_id '{late.TransactionId}') decided the second half of the id");
        Assert.Equal(TransactionSource.SourceServerCheck, late.Source);
        Assert.Equal(CheckTokenIds.Make(id, firstToken), late.TransactionId);
        Assert.Equal(id, late.MessageId);
        // The refusal is what the token is for, not a failure: logged at Information, with the plain id and the check's.
        await E2E.EventuallyAsync(() => logs.Entries.Any(e => e.Message.Contains("another half", StringComparison.Ordinal)), Wait,
            "the refusal of the late answer was logged");
        var refusal = logs.Entries.First(e => e.Message.Contains("another half", StringComparison.Ordinal));
        Assert.True(refusal.Level == Microsoft.Extensions.Logging.LogLevel.Information, $"the refusal was logged at {refusal.Level}: {refusal.Message}");
        Assert.Contains($"transaction {id} ", refusal.Message, StringComparison.Ordinal);

        // The new half's own check decides it; every check gave the checker the id the send gave, without the token.
        checker.CommitFromNowOn();
        // Recorded once the broker answered it (the half is gone a moment before that).
        await E2E.EventuallyAsync(() => decisions.Answered.Any(d => d.Resolution == Apache.Rocketmq.V2.TransactionResolution.Commit), Wait,
            "the new half's own check was answered Commit");
        Assert.Null(_host.Engine.FindTransaction(id));
        EndTransactionRequest own = decisions.Answered.First(d => d.Resolution == Apache.Rocketmq.V2.TransactionResolution.Commit);
        Assert.Equal(CheckTokenIds.Make(id, secondToken), own.TransactionId);
        Assert.All(checker.Ids, seen => Assert.Equal(id, seen));
        Assert.Contains(CheckTokenIds.AcceptValue, decisions.TelemetryOptIns); // the producer asked for tokens
        Assert.Equal(CoreResolution.Commit, (await _host.Engine.EndTransactionAsync(new DecisionRequest(id, null, CoreResolution.Commit, DecisionSource.Client))).Outcome);
    }
}
