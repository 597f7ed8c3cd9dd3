using System.Data.Common;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.ProducerClient.Barrier;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;
using TransactionResolution = HalfMsg.ProducerClient.TransactionResolution;

namespace HalfMsg.Client.Tests;

/// <summary>
/// What <see cref="Producer.ExecuteAsync(DbConnection, ProducerMessage, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// says when its commit reaches a broker that has forgotten the transaction's decision (review 2026-12-02,
/// transactions #10): the check-back decided it, the message may well have been delivered, so not "rejected".
/// </summary>
[Trait("Category", "E2E")]
public sealed class ForgottenDecisionTests : IAsyncLifetime
{
    /// <summary>Decisions the broker remembers (CoreOptions.MaxRememberedDecisions; 1,000,000 by default).</summary>
    private const int Remembered = 10;

    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-forgotten-" + Guid.NewGuid().ToString("N")[..12]);
    private readonly SqliteDatabase _db = new();
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
        _db.Dispose();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    [Fact]
    public async Task A_commit_arriving_after_the_broker_forgot_the_check_backs_decision_is_an_unknown_outcome_not_a_rejection()
    {
        string topic = E2E.Unique("forgot");
        using var stall = new StallClientDecisions();
        // The producer's own decisions one per call (the handler reads EndTransaction), and a deadline the stall fits in.
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = _endpoint, Topics = [topic], TransactionChecker = new BarrierChecker(_db.Factory, BarrierDialects.Sqlite),
            DecisionCallsInFlight = 0, RequestTimeout = TimeSpan.FromMinutes(2),
        }, stall, CancellationToken.None);
        await using Producer others = await E2E.ProducerAsync(_endpoint, E2E.Unique("others"));
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(_endpoint, topic, E2E.Unique("g"));
        await using DbConnection c = _db.Factory();
        await c.OpenAsync();
        await E2E.ExecAsync(c, null, "CREATE TABLE IF NOT EXISTS orders (id VARCHAR(64) PRIMARY KEY)");
        string orderId = Guid.NewGuid().ToString("N");

        // 1. The local transaction commits; the commit of the half stalls on its way (GC pause, partition).
        Task<SendReceipt> execute = producer.ExecuteAsync(c, new ProducerMessage(topic, "order"),
            (tx, ct) => E2E.ExecAsync(c, tx, "INSERT INTO orders (id) VALUES (@id)", ("@id", orderId)), BarrierDialects.Sqlite);
        EndTransactionRequest stalled = await stall.Stalled.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // 2. The check-back asks BarrierChecker, which answers Commit: the message is delivered.
        ReceivedMessage delivered = Assert.Single(await E2E.DrainAsync(consumer, 1, TimeSpan.FromSeconds(30)));
        Assert.Equal(stalled.MessageId, delivered.MessageId);

        // 3. Twice as many later decisions as the broker remembers: this one is forgotten.
        for (int i = 0; i < 2 * Remembered; i++)
        {
            ITransaction other = others.BeginTransaction();
            await other.SendAsync(new ProducerMessage(E2E.Unique("others"), "other"));
            await other.CommitAsync();
        }

        // 4. The stalled commit arrives: the broker cannot know the outcome, and the producer must not claim one.
        stall.Release();
        var ex = await Assert.ThrowsAsync<TransactionOutcomeUnknownException>(() => execute);
        Assert.Equal(stalled.TransactionId, ex.Receipt.TransactionId);
        Assert.Equal(Code.NotFound, ex.Code);
        Assert.Contains("check-back", ex.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("will not be delivered", ex.Message, StringComparison.Ordinal);
        Assert.Equal(1, await E2E.CountAsync(_db.Factory, $"SELECT COUNT(*) FROM orders WHERE id = '{orderId}'"));
    }

    /// <summary>
    /// Holds the producer's own decisions (EndTransaction with SOURCE_CLIENT) until <see cref="Release"/>; check-back
    /// answers and every other call pass at once.
    /// </summary>
    private sealed class StallClientDecisions() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>The first decision held.</summary>
        public TaskCompletionSource<EndTransactionRequest> Stalled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _release.TrySetResult();

        protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            if (request.RequestUri?.AbsolutePath == HalfMsg.Protocol.Grpc.GrpcMethods.EndTransaction && request.Content is { } content)
            {
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
                if (decision.Source == TransactionSource.SourceClient)
                {
                    Stalled.TrySetResult(decision);
                    await _release.Task.WaitAsync(cancellationToken);
                }
            }

            return await base.SendAsync(request, cancellationToken);
        }
    }
}
