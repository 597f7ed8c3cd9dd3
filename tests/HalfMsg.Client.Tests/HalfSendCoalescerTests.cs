using Apache.Rocketmq.V2;
using Google.Protobuf;
using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;
using ScriptedCalls = HalfMsg.Client.Tests.Infrastructure.ScriptedCalls<Apache.Rocketmq.V2.SendMessageRequest, Apache.Rocketmq.V2.SendMessageResponse>;
using V2Message = Apache.Rocketmq.V2.Message;

namespace HalfMsg.Client.Tests;

/// <summary>The producer's coalescing of concurrent half sends, against a scripted SendMessage call.</summary>
public sealed class HalfSendCoalescerTests
{
    private static readonly Endpoint Broker = new("127.0.0.1", 1);
    private static readonly TimeSpan Within = TimeSpan.FromSeconds(30);

    private static V2Message Half(string id, int bodyBytes = 4) => new()
    {
        Topic = new Resource { Name = "t" },
        SystemProperties = new SystemProperties { MessageId = id, MessageType = MessageType.Transaction },
        Body = ByteString.CopyFrom(new byte[bodyBytes]),
    };

    /// <summary>Every message stored: its entry carries its own id as the transaction id.</summary>
    private static SendMessageResponse AllStored(SendMessageRequest request)
    {
        var response = new SendMessageResponse { Status = new Status { Code = Code.Ok } };
        foreach (V2Message m in request.Messages)
        {
            response.Entries.Add(new SendResultEntry
            {
                Status = new Status { Code = Code.Ok },
                MessageId = m.SystemProperties.MessageId,
                TransactionId = "tx-" + m.SystemProperties.MessageId,
            });
        }

        return response;
    }

    /// <summary>One call in flight at most: "m0" has it (call 0, unanswered), "a" and "b" wait behind it.</summary>
    private static async Task<(ScriptedCalls Calls, HalfSendCoalescer Coalescer, Task<SendResultEntry> First, Task<SendResultEntry> A, Task<SendResultEntry> B)> TwoWaitingBehindTheFirstCallAsync()
    {
        var calls = new ScriptedCalls();
        var coalescer = new HalfSendCoalescer(maxCallsInFlight: 1, maxMessages: 32, maxBytes: 1 << 20, calls.Call);
        Task<SendResultEntry> first = coalescer.SendAsync(Broker, Half("m0"), CancellationToken.None);
        await calls.NextAsync();
        return (calls, coalescer, first, coalescer.SendAsync(Broker, Half("a"), CancellationToken.None), coalescer.SendAsync(Broker, Half("b"), CancellationToken.None));
    }

    [Fact]
    public async Task Halves_sent_while_every_call_is_out_go_together_in_the_next_call_and_each_gets_its_own_entry()
    {
        var calls = new ScriptedCalls();
        var coalescer = new HalfSendCoalescer(maxCallsInFlight: 1, maxMessages: 32, maxBytes: 1 << 20, calls.Call);

        Task<SendResultEntry> first = coalescer.SendAsync(Broker, Half("m0"), CancellationToken.None);
        Assert.Equal(["m0"], (await calls.NextAsync()).Messages.Select(m => m.SystemProperties.MessageId));
        var waiting = Enumerable.Range(1, 5).Select(i => coalescer.SendAsync(Broker, Half("m" + i), CancellationToken.None)).ToList();
        Assert.Equal(1, calls.Count); // the slot is taken: they wait
        Assert.All(waiting, w => Assert.False(w.IsCompleted));

        calls.Answer(0, AllStored);
        Assert.Equal("tx-m0", (await first.WaitAsync(Within)).TransactionId);
        SendMessageRequest second = await calls.NextAsync();
        Assert.Equal(["m1", "m2", "m3", "m4", "m5"], second.Messages.Select(m => m.SystemProperties.MessageId));

        calls.Answer(1, AllStored);
        for (int i = 0; i < waiting.Count; i++)
        {
            Assert.Equal("tx-m" + (i + 1), (await waiting[i].WaitAsync(Within)).TransactionId);
        }

        Assert.Equal(2, calls.Count);
    }

    [Fact]
    public async Task Below_the_limit_every_half_has_a_call_of_its_own()
    {
        var calls = new ScriptedCalls();
        var coalescer = new HalfSendCoalescer(maxCallsInFlight: 3, maxMessages: 32, maxBytes: 1 << 20, calls.Call);
        var sends = Enumerable.Range(0, 3).Select(i => coalescer.SendAsync(Broker, Half("m" + i), CancellationToken.None)).ToList();
        for (int i = 0; i < 3; i++)
        {
            Assert.Single((await calls.NextAsync()).Messages);
        }

        for (int i = 0; i < 3; i++)
        {
            calls.Answer(i, AllStored);
        }

        await Task.WhenAll(sends).WaitAsync(Within);
        Assert.Equal(3, calls.Count);
    }

    [Fact]
    public async Task One_refused_half_fails_alone_and_a_failed_call_fails_only_its_own_halves()
    {
        var (calls, _, first, a, b) = await TwoWaitingBehindTheFirstCallAsync();

        // The first call fails as a whole: only m0 sees it; a and b go in the next call all the same.
        calls.Fail(0, new TransportException(Grpc.Core.StatusCode.Unavailable, "connection reset"));
        await Assert.ThrowsAsync<TransportException>(() => first.WaitAsync(Within));
        Assert.Equal(2, (await calls.NextAsync()).Messages.Count);
        calls.Answer(1, request =>
        {
            SendMessageResponse response = AllStored(request);
            response.Entries[1].Status = new Status { Code = Code.IllegalMessageKey, Message = "bad key" };
            response.Status = response.Entries[1].Status; // the call's status combines its entries
            return response;
        });
        Assert.Equal(Code.Ok, (await a.WaitAsync(Within)).Status.Code);
        Assert.Equal(Code.IllegalMessageKey, (await b.WaitAsync(Within)).Status.Code); // the producer checks its own entry
    }

    [Fact]
    public async Task A_reply_with_the_wrong_number_of_entries_fails_every_half_of_the_call()
    {
        var (calls, coalescer, first, a, b) = await TwoWaitingBehindTheFirstCallAsync();
        calls.Answer(0, AllStored);
        await first.WaitAsync(Within);
        await calls.NextAsync();
        calls.Answer(1, request => new SendMessageResponse { Status = new Status { Code = Code.Ok }, Entries = { AllStored(request).Entries[0] } });
        await Assert.ThrowsAsync<UnsupportedException>(() => a.WaitAsync(Within));
        await Assert.ThrowsAsync<UnsupportedException>(() => b.WaitAsync(Within));

        // A whole-call refusal with no entries (the broker's admission control) reaches each half as its own error.
        Task<SendResultEntry> c = coalescer.SendAsync(Broker, Half("c"), CancellationToken.None);
        await calls.NextAsync();
        calls.Answer(2, _ => new SendMessageResponse { Status = new Status { Code = Code.TooManyRequests, Message = "busy" } });
        await Assert.ThrowsAsync<TooManyRequestsException>(() => c.WaitAsync(Within));
    }

    [Fact]
    public async Task A_half_cancelled_while_it_waits_is_never_sent_and_the_batch_respects_its_limits()
    {
        var calls = new ScriptedCalls();
        var coalescer = new HalfSendCoalescer(maxCallsInFlight: 1, maxMessages: 3, maxBytes: 250, calls.Call);
        Task<SendResultEntry> first = coalescer.SendAsync(Broker, Half("m0"), CancellationToken.None);
        await calls.NextAsync();
        using var cancel = new CancellationTokenSource();
        Task<SendResultEntry> gone = coalescer.SendAsync(Broker, Half("gone"), cancel.Token);
        var rest = Enumerable.Range(1, 5).Select(i => coalescer.SendAsync(Broker, Half("m" + i, bodyBytes: 100), CancellationToken.None)).ToList();
        cancel.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => gone.WaitAsync(Within));

        calls.Answer(0, AllStored);
        // 100-byte bodies, 250 bytes per call: two per call, whatever maxMessages allows.
        Assert.Equal(["m1", "m2"], (await calls.NextAsync()).Messages.Select(m => m.SystemProperties.MessageId));
        calls.Answer(1, AllStored);
        Assert.Equal(["m3", "m4"], (await calls.NextAsync()).Messages.Select(m => m.SystemProperties.MessageId));
        calls.Answer(2, AllStored);
        Assert.Equal(["m5"], (await calls.NextAsync()).Messages.Select(m => m.SystemProperties.MessageId));
        calls.Answer(3, AllStored);
        await Task.WhenAll(rest).WaitAsync(Within);
        Assert.Equal(4, calls.Count);
    }

    [Fact]
    public async Task An_item_cancelled_after_a_call_took_it_gets_that_calls_answer_not_a_cancellation()
    {
        // "Cancelled" must mean "not sent": the producer sends the caller's body without a copy, so a caller told
        // cancelled may reuse the buffer, and an item already in a call would go out with whatever it holds by then.
        // The size function runs for each waiting item as the next call is filled, after the items before it were
        // taken: cancelling p1 there is a cancellation after its call took it.
        using var cancelP1 = new CancellationTokenSource();
        var first = new TaskCompletionSource<string[]>(TaskCreationOptions.RunContinuationsAsynchronously);
        var made = new List<string[]>();
        var coalescer = new CallCoalescer<string, string, string[], string>(maxCallsInFlight: 1, maxItems: 32, maxBytes: 1 << 20,
            size: item => { if (item == "p2") cancelP1.Cancel(); return 1; },
            call: (_, items, _) =>
            {
                lock (made) made.Add([.. items]);
                return made.Count == 1 ? first.Task : Task.FromResult<string[]>([.. items]);
            },
            pick: (response, index, _) => response[index]);

        Task<string> p0 = coalescer.SendAsync("lane", "p0", CancellationToken.None);
        Task<string> p1 = coalescer.SendAsync("lane", "p1", cancelP1.Token);
        Task<string> p2 = coalescer.SendAsync("lane", "p2", CancellationToken.None);
        first.SetResult(["p0"]);

        Assert.Equal("p0", await p0.WaitAsync(Within));
        Assert.Equal("p1", await p1.WaitAsync(Within)); // sent, so answered: not cancelled
        Assert.Equal("p2", await p2.WaitAsync(Within));
        lock (made) Assert.Equal(["p1", "p2"], made[1]);
    }

    [Fact]
    public async Task Lanes_are_per_broker_and_topic()
    {
        var calls = new ScriptedCalls();
        var coalescer = new HalfSendCoalescer(maxCallsInFlight: 1, maxMessages: 32, maxBytes: 1 << 20, calls.Call);
        V2Message other = Half("o");
        other.Topic = new Resource { Name = "other" };
        var sends = new[]
        {
            coalescer.SendAsync(Broker, Half("m0"), CancellationToken.None),
            coalescer.SendAsync(Broker, other, CancellationToken.None),
            coalescer.SendAsync(new Endpoint("127.0.0.1", 2), Half("m1"), CancellationToken.None),
        };
        for (int i = 0; i < 3; i++)
        {
            await calls.NextAsync();
        }

        Assert.Equal(3, calls.Count); // three lanes, none waited for another
        for (int i = 0; i < 3; i++)
        {
            calls.Answer(i, AllStored);
        }

        await Task.WhenAll(sends).WaitAsync(Within);
    }
}
