using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.V1;
using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;
using ScriptedCalls = HalfMsg.Client.Tests.Infrastructure.ScriptedCalls<HalfMsg.Protocol.V1.EndTransactionsRequest, HalfMsg.Protocol.V1.EndTransactionsResponse>;

namespace HalfMsg.Client.Tests;

/// <summary>The producer's coalescing of concurrent decisions, against a scripted EndTransactions call.</summary>
public sealed class DecisionCoalescerTests
{
    private static readonly Endpoint Broker = new("127.0.0.1", 1);
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    private static EndTransactionRequest Decision(string id, string topic = "t") => new()
    {
        Topic = new Resource { Name = topic },
        MessageId = id,
        TransactionId = "tx-" + id,
        Resolution = Apache.Rocketmq.V2.TransactionResolution.Commit,
        Source = TransactionSource.SourceClient,
    };

    private static IEnumerable<string> Ids(EndTransactionsRequest request) => request.Decisions.Select(d => d.MessageId);

    /// <summary>Every decision carried out: one OK entry each.</summary>
    private static EndTransactionsResponse AllDecided(EndTransactionsRequest request)
    {
        var response = new EndTransactionsResponse { Status = new Status { Code = Code.Ok } };
        response.Entries.AddRange(request.Decisions.Select(_ => new Status { Code = Code.Ok }));
        return response;
    }

    /// <summary>One call in flight at most: "d0" has it (call 0, unanswered), "a" and "b" wait behind it.</summary>
    private static async Task<(ScriptedCalls Calls, DecisionCoalescer Coalescer, Task<Status> First, Task<Status> A, Task<Status> B)> TwoWaitingBehindTheFirstCallAsync()
    {
        var calls = new ScriptedCalls();
        var coalescer = new DecisionCoalescer(maxCallsInFlight: 1, maxDecisions: 128, calls.Call);
        Task<Status> first = coalescer.EndAsync(Broker, Decision("d0"), CancellationToken.None);
        await calls.NextAsync();
        return (calls, coalescer, first, coalescer.EndAsync(Broker, Decision("a"), CancellationToken.None), coalescer.EndAsync(Broker, Decision("b"), CancellationToken.None));
    }

    [Fact]
    public async Task Decisions_made_while_every_call_is_out_go_together_in_the_next_call_and_each_gets_its_own_status()
    {
        var calls = new ScriptedCalls();
        var coalescer = new DecisionCoalescer(maxCallsInFlight: 1, maxDecisions: 128, calls.Call);

        Task<Status> first = coalescer.EndAsync(Broker, Decision("d0"), CancellationToken.None);
        Assert.Equal(["d0"], Ids(await calls.NextAsync()));
        var waiting = Enumerable.Range(1, 5).Select(i => coalescer.EndAsync(Broker, Decision("d" + i), CancellationToken.None)).ToList();
        Assert.Equal(1, calls.Count); // the slot is taken: they wait
        Assert.All(waiting, w => Assert.False(w.IsCompleted));

        calls.Answer(0, AllDecided);
        Assert.Equal(Code.Ok, (await first.WaitAsync(Within)).Code);
        EndTransactionsRequest second = await calls.NextAsync();
        Assert.Equal(["d1", "d2", "d3", "d4", "d5"], Ids(second));
        Assert.Equal(["tx-d1", "tx-d2", "tx-d3", "tx-d4", "tx-d5"], second.Decisions.Select(d => d.TransactionId));

        // One decision the broker no longer knows: only its own entry says so; the call itself is fine.
        calls.Answer(1, request =>
        {
            EndTransactionsResponse response = AllDecided(request);
            response.Entries[2] = new Status { Code = Code.NotFound, Message = "unknown transaction" };
            return response;
        });
        for (int i = 0; i < waiting.Count; i++)
        {
            Assert.Equal(i == 2 ? Code.NotFound : Code.Ok, (await waiting[i].WaitAsync(Within)).Code);
        }

        Assert.Equal(2, calls.Count);
        Assert.Equal(2, coalescer.CallsMade);
    }

    [Fact]
    public async Task Below_the_limit_every_decision_has_a_call_of_its_own()
    {
        var calls = new ScriptedCalls();
        var coalescer = new DecisionCoalescer(maxCallsInFlight: 3, maxDecisions: 128, calls.Call);
        var decisions = Enumerable.Range(0, 3).Select(i => coalescer.EndAsync(Broker, Decision("d" + i), CancellationToken.None)).ToList();
        for (int i = 0; i < 3; i++)
        {
            Assert.Single((await calls.NextAsync()).Decisions);
        }

        for (int i = 0; i < 3; i++)
        {
            calls.Answer(i, AllDecided);
        }

        Assert.All(await Task.WhenAll(decisions).WaitAsync(Within), s => Assert.Equal(Code.Ok, s.Code));
        Assert.Equal(3, calls.Count);
        Assert.Equal(3, coalescer.CallsMade);
    }

    [Fact]
    public async Task A_reply_with_the_wrong_number_of_entries_fails_every_decision_of_the_call_with_the_calls_status()
    {
        var (calls, coalescer, first, a, b) = await TwoWaitingBehindTheFirstCallAsync();
        calls.Answer(0, AllDecided);
        await first.WaitAsync(Within);
        Assert.Equal(["a", "b"], Ids(await calls.NextAsync()));

        // OK but one entry for two decisions: the shape is wrong.
        calls.Answer(1, request => new EndTransactionsResponse { Status = new Status { Code = Code.Ok }, Entries = { AllDecided(request).Entries[0] } });
        await Assert.ThrowsAsync<UnsupportedException>(() => a.WaitAsync(Within));
        await Assert.ThrowsAsync<UnsupportedException>(() => b.WaitAsync(Within));

        // A whole-call refusal with no entries (too many decisions, not authenticated) reaches each decision as its own error.
        Task<Status> c = coalescer.EndAsync(Broker, Decision("c"), CancellationToken.None);
        Assert.Equal(["c"], Ids(await calls.NextAsync()));
        Task<Status> d = coalescer.EndAsync(Broker, Decision("d"), CancellationToken.None);
        Task<Status> e = coalescer.EndAsync(Broker, Decision("e"), CancellationToken.None);
        calls.Answer(2, _ => new EndTransactionsResponse { Status = new Status { Code = Code.Unauthorized, Message = "who are you" } });
        ClientException refused = await Assert.ThrowsAsync<UnauthorizedException>(() => c.WaitAsync(Within));
        Assert.Equal(Code.Unauthorized, refused.Code);
        Assert.Equal(["d", "e"], Ids(await calls.NextAsync()));
        calls.Answer(3, _ => new EndTransactionsResponse { Status = new Status { Code = Code.BadRequest, Message = "too many" } });
        Assert.Equal(Code.BadRequest, (await Assert.ThrowsAsync<BadRequestException>(() => d.WaitAsync(Within))).Code);
        Assert.Equal(Code.BadRequest, (await Assert.ThrowsAsync<BadRequestException>(() => e.WaitAsync(Within))).Code);
    }

    [Fact]
    public async Task A_failed_call_fails_only_its_own_decisions()
    {
        var (calls, _, first, a, b) = await TwoWaitingBehindTheFirstCallAsync();

        // The first call fails as a whole: only d0 sees it; a and b go in the next call all the same.
        calls.Fail(0, new TransportException(Grpc.Core.StatusCode.Unavailable, "connection reset"));
        Assert.Equal(Grpc.Core.StatusCode.Unavailable, (await Assert.ThrowsAsync<TransportException>(() => first.WaitAsync(Within))).GrpcStatus);
        Assert.Equal(["a", "b"], Ids(await calls.NextAsync()));
        calls.Answer(1, AllDecided);
        Assert.Equal(Code.Ok, (await a.WaitAsync(Within)).Code);
        Assert.Equal(Code.Ok, (await b.WaitAsync(Within)).Code);
    }

    [Fact]
    public async Task Lanes_are_per_endpoint_and_decisions_for_different_topics_share_a_call()
    {
        var calls = new ScriptedCalls();
        var coalescer = new DecisionCoalescer(maxCallsInFlight: 1, maxDecisions: 128, calls.Call);
        var other = new Endpoint("127.0.0.1", 2);

        // Two endpoints: neither waits for the other (a free slot makes its call at once).
        Task<Status> first = coalescer.EndAsync(Broker, Decision("d0"), CancellationToken.None);
        Task<Status> elsewhere = coalescer.EndAsync(other, Decision("o0"), CancellationToken.None);
        await calls.NextAsync();
        await calls.NextAsync();
        Assert.Equal(2, calls.Count);
        Assert.Equal(Broker, calls.EndpointOf(0));
        Assert.Equal(other, calls.EndpointOf(1));

        // Behind the first endpoint's call: decisions of two topics wait, and go together.
        Task<Status> x = coalescer.EndAsync(Broker, Decision("x", topic: "t1"), CancellationToken.None);
        Task<Status> y = coalescer.EndAsync(Broker, Decision("y", topic: "t2"), CancellationToken.None);
        Assert.Equal(2, calls.Count);
        calls.Answer(0, AllDecided);
        EndTransactionsRequest together = await calls.NextAsync();
        Assert.Equal(["x", "y"], Ids(together));
        Assert.Equal(["t1", "t2"], together.Decisions.Select(d => d.Topic.Name));
        Assert.Equal(Broker, calls.EndpointOf(2));
        calls.Answer(1, AllDecided);
        calls.Answer(2, AllDecided);
        await Task.WhenAll(first, elsewhere, x, y).WaitAsync(Within);
        Assert.Equal(3, calls.Count);
    }

    [Fact]
    public async Task More_decisions_waiting_than_maxDecisions_are_split_across_calls_in_order()
    {
        var calls = new ScriptedCalls();
        var coalescer = new DecisionCoalescer(maxCallsInFlight: 1, maxDecisions: 128, calls.Call);
        Task<Status> first = coalescer.EndAsync(Broker, Decision("d0"), CancellationToken.None);
        await calls.NextAsync();
        var waiting = Enumerable.Range(1, 300).Select(i => coalescer.EndAsync(Broker, Decision("d" + i), CancellationToken.None)).ToList();

        calls.Answer(0, AllDecided);
        int next = 1;
        foreach (int expected in new[] { 128, 128, 44 })
        {
            EndTransactionsRequest request = await calls.NextAsync();
            Assert.Equal(Enumerable.Range(next, expected).Select(i => "d" + i), Ids(request));
            next += expected;
            calls.Answer(calls.Count - 1, AllDecided);
        }

        await Task.WhenAll(waiting.Append(first)).WaitAsync(Within);
        Assert.Equal(4, calls.Count);
        Assert.Equal(4, coalescer.CallsMade);
    }
}
