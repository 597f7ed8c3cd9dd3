using System.Buffers;
using System.Buffers.Binary;
using System.IO.Pipelines;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Remoting;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Remoting;

/// <summary>A session driven over a pair of in-memory pipes: no socket, no Kestrel.</summary>
public sealed class RemotingSessionTests : IAsyncLifetime
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-session-" + Guid.NewGuid().ToString("N"));
    private BrokerEngine _engine = null!;
    private RemotingServer _server = null!;
    private readonly Pipe _toServer = new();
    private readonly Pipe _toClient = new();
    private Task _run = null!;

    public async Task InitializeAsync()
    {
        _engine = await BrokerEngine.OpenAsync(new CoreOptions { DataDir = _dir, QueuesPerTopic = 2 });
        _server = new RemotingServer(_engine, new RemotingOptions { MaxFrameLength = 1024 * 1024, MaxOutstandingRequestsPerConnection = 2 }, NullLoggerFactory.Instance);
        var session = new RemotingSession(new DuplexPipe(_toServer.Reader, _toClient.Writer), _server, null, null, nameServerOnly: false);
        _run = session.RunAsync(CancellationToken.None);
    }

    public async Task DisposeAsync()
    {
        await _toServer.Writer.CompleteAsync();
        await _run.WaitAsync(TimeSpan.FromSeconds(10));
        await _engine.DisposeAsync();
        try { Directory.Delete(_dir, true); } catch (IOException) { }
    }

    private async Task<RemotingCommand?> ReadFrameAsync()
    {
        while (true)
        {
            var result = await _toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            var buffer = result.Buffer;
            if (RemotingFrame.TryReadFrame(ref buffer, 1 << 24, out var cmd))
            {
                _toClient.Reader.AdvanceTo(buffer.Start);
                return cmd;
            }
            _toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) return null;
        }
    }

    [Fact]
    public async Task Requests_written_in_one_chunk_are_each_answered_with_their_opaque()
    {
        var bytes = new ArrayBufferWriter<byte>();
        RemotingFrame.Write(bytes, new RemotingCommand { Code = 9999, Opaque = 1 });
        RemotingFrame.Write(bytes, new RemotingCommand { Code = RequestCode.GetBrokerClusterInfo, Opaque = 2 });
        await _toServer.Writer.WriteAsync(bytes.WrittenMemory);
        var answers = new[] { await ReadFrameAsync(), await ReadFrameAsync() }.OrderBy(a => a!.Opaque).ToArray();
        Assert.Equal((1, ResponseCode.RequestCodeNotSupported), (answers[0]!.Opaque, answers[0]!.Code));
        Assert.Equal((2, ResponseCode.Success), (answers[1]!.Opaque, answers[1]!.Code));
    }

    [Fact]
    public async Task A_frame_declaring_more_than_the_limit_ends_the_session_without_an_answer()
    {
        var prefix = new byte[8];
        BinaryPrimitives.WriteInt32BigEndian(prefix, 1024 * 1024 + 1);
        await _toServer.Writer.WriteAsync(prefix);
        Assert.Null(await ReadFrameAsync());
        await _run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_connection_over_its_outstanding_request_limit_gets_SYSTEM_BUSY()
    {
        // Two sends held at the send admission gate fill the limit of 2; the third request is refused with [OVERLOAD].
        var admission = new FrontEnds.SendAdmission(1, 10, TimeSpan.FromSeconds(30));
        Assert.True(await admission.TryEnterAsync(CancellationToken.None));
        var server = new RemotingServer(_engine, new RemotingOptions { MaxOutstandingRequestsPerConnection = 2 }, NullLoggerFactory.Instance) { Admission = admission };
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        var bytes = new ArrayBufferWriter<byte>();
        for (int i = 1; i <= 2; i++)
        {
            var send = RemotingCommand.Request(RequestCode.SendMessageV2, new() { ["a"] = "PG", ["b"] = "Busy" }, new byte[] { 1 });
            send.Opaque = i;
            RemotingFrame.Write(bytes, send);
        }
        RemotingFrame.Write(bytes, new RemotingCommand { Code = RequestCode.GetBrokerClusterInfo, Opaque = 3 });
        await toServer.Writer.WriteAsync(bytes.WrittenMemory);
        var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var buffer = result.Buffer;
        Assert.True(RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var busy));
        toClient.Reader.AdvanceTo(buffer.Start);
        Assert.Equal((3, ResponseCode.SystemBusy), (busy.Opaque, busy.Code));
        Assert.StartsWith("[OVERLOAD]", busy.Remark);
        admission.Exit();
        await toServer.Writer.CompleteAsync();
        await toClient.Reader.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_refusal_that_finds_the_outbound_queue_full_waits_for_room_and_is_answered()
    {
        // A send held at the admission gate takes the one request slot, so each of the ten requests after it is refused
        // SYSTEM_BUSY. The client reads nothing yet: the write loop stops at its first flush (the pipe pauses at one
        // byte) and the outbound queue of two fills. Until 2026-12-07 the refusals past it were dropped: the client
        // heard nothing and waited out its timeout.
        var admission = new FrontEnds.SendAdmission(1, 10, TimeSpan.FromSeconds(30));
        Assert.True(await admission.TryEnterAsync(CancellationToken.None));
        var server = new RemotingServer(_engine, new RemotingOptions { MaxOutstandingRequestsPerConnection = 1, OutboundQueueCapacity = 2 },
            NullLoggerFactory.Instance) { Admission = admission };
        var toServer = new Pipe();
        var toClient = new Pipe(new PipeOptions(pauseWriterThreshold: 1, resumeWriterThreshold: 1));
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        var bytes = new ArrayBufferWriter<byte>();
        var send = RemotingCommand.Request(RequestCode.SendMessageV2, new() { ["a"] = "PG", ["b"] = "Busy" }, new byte[] { 1 });
        send.Opaque = 1;
        RemotingFrame.Write(bytes, send);
        for (int i = 2; i <= 11; i++) RemotingFrame.Write(bytes, new RemotingCommand { Code = RequestCode.GetBrokerClusterInfo, Opaque = i });
        await toServer.Writer.WriteAsync(bytes.WrittenMemory);
        await RemotingBroker.EventuallyAsync(() => Task.FromResult(Interlocked.Read(ref server.AnswersThatWaitedForRoom)), n => n >= 1,
            TimeSpan.FromSeconds(30), "a refusal waiting for room in the full outbound queue");

        var busy = new List<int>();
        while (busy.Count < 10)
        {
            var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            var buffer = result.Buffer;
            while (RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var answer))
            {
                Assert.Equal(ResponseCode.SystemBusy, answer.Code);
                busy.Add(answer.Opaque);
            }
            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
            Assert.False(result.IsCompleted, $"the connection closed after {busy.Count} answers");
        }
        Assert.Equal(Enumerable.Range(2, 10), busy.Order());
        admission.Exit();
        await toServer.Writer.CompleteAsync();
        await toClient.Reader.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_long_poll_past_the_parked_pull_cap_is_answered_at_once_busy_and_other_requests_still_run()
    {
        // The test server parks at most 4096 pulls; this one at most 2: the third long poll is served without suspending.
        var server = new RemotingServer(_engine, new RemotingOptions { MaxOutstandingRequestsPerConnection = 1, MaxParkedPullsPerConnection = 2 }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Parked", MessageId = "m1", Body = new byte[] { 1 } });
        var bytes = new ArrayBufferWriter<byte>();
        for (int i = 1; i <= 3; i++)
        {
            var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", "Parked").Set("queueId", 1L)
                .Set("queueOffset", 0L).Set("sysFlag", (long)PullSysFlag.Suspend).Set("suspendTimeoutMillis", 30_000L);
            pull.Opaque = i;
            RemotingFrame.Write(bytes, pull);
        }
        RemotingFrame.Write(bytes, new RemotingCommand { Code = RequestCode.GetBrokerClusterInfo, Opaque = 4 });
        await toServer.Writer.WriteAsync(bytes.WrittenMemory);
        var answers = new List<RemotingCommand>();
        while (answers.Count < 2)
        {
            var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
            var buffer = result.Buffer;
            while (RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var frame)) answers.Add(frame);
            toClient.Reader.AdvanceTo(buffer.Start, buffer.End);
        }
        // Nothing new for it: SYSTEM_BUSY, from which the Java client backs off 3 s (PULL_NOT_FOUND would have it pull
        // again at once, in a loop).
        Assert.Equal([(3, ResponseCode.SystemBusy), (4, ResponseCode.Success)], answers.Select(a => (a.Opaque, a.Code)).Order());
        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_long_poll_past_the_parked_pull_cap_that_passed_over_filtered_entries_is_told_the_offset_after_them()
    {
        // Two long polls fill the cap of 2; the third, past it, finds only messages its tag filter does not take. Until
        // 2026-12-07 it was answered SYSTEM_BUSY without its next offset, so the client scanned them again every 3 s.
        var server = new RemotingServer(_engine, new RemotingOptions { MaxParkedPullsPerConnection = 2 }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        for (int i = 0; i < 3; i++)
            Assert.True((await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "ParkedFiltered", MessageId = "m" + i, Body = new byte[] { 1 }, Tag = "A", QueueId = 1 })).IsOk);
        var bytes = new ArrayBufferWriter<byte>();
        RemotingCommand Pull(int queue, int opaque)
        {
            var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", "ParkedFiltered").Set("queueId", (long)queue)
                .Set("queueOffset", 0L).Set("sysFlag", (long)(PullSysFlag.Suspend | PullSysFlag.Subscription)).Set("subscription", "B")
                .Set("expressionType", "TAG").Set("suspendTimeoutMillis", 30_000L);
            pull.Opaque = opaque;
            return pull;
        }
        RemotingFrame.Write(bytes, Pull(0, 1));
        RemotingFrame.Write(bytes, Pull(0, 2));
        RemotingFrame.Write(bytes, Pull(1, 3));
        await toServer.Writer.WriteAsync(bytes.WrittenMemory);
        var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var buffer = result.Buffer;
        Assert.True(RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var answer));
        toClient.Reader.AdvanceTo(buffer.Start);
        Assert.Equal((3, ResponseCode.PullNotFound), (answer.Opaque, answer.Code));
        Assert.Equal(3, answer.GetLong("nextBeginOffset", -1));
        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>Serving a long poll past the cap without suspending must not touch the request's signed fields: the ACL
    /// signature covers sysFlag.</summary>
    [Fact]
    public async Task A_signed_long_poll_past_the_parked_pull_cap_is_still_authenticated()
    {
        var server = new RemotingServer(_engine, new RemotingOptions
        {
            MaxParkedPullsPerConnection = 0,
            Credentials = new Dictionary<string, string> { ["ak"] = "sk" },
        }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        await _engine.SendAsync(new Core.Model.MessageDraft { Topic = "Signed", MessageId = "m1", Body = new byte[] { 1 } });
        var pull = RemotingCommand.Request(RequestCode.PullMessage).Set("consumerGroup", "G").Set("topic", "Signed").Set("queueId", 1L)
            .Set("queueOffset", 0L).Set("sysFlag", (long)PullSysFlag.Suspend).Set("suspendTimeoutMillis", 30_000L);
        pull.Opaque = 5;
        RemotingAclSignature.Sign(pull, "ak", "sk");
        await toServer.Writer.WriteAsync(RemotingFrame.ToArray(pull));
        var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var buffer = result.Buffer;
        Assert.True(RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var answer));
        toClient.Reader.AdvanceTo(buffer.Start);
        // Authenticated (not "Check signature failed"), served at once, and busy since there is nothing new for it.
        Assert.True(answer.Code == ResponseCode.SystemBusy && answer.Remark!.Contains("PARKED_PULLS"), $"{answer.Code} {answer.Remark}");
        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }

    [Fact]
    public async Task A_connection_silent_for_the_idle_timeout_is_closed()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { IdleTimeout = TimeSpan.FromMilliseconds(300) }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        await session.RunAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.False(session.IsAlive);
    }

    [Fact]
    public async Task Request_bytes_beyond_the_connections_in_flight_budget_get_SYSTEM_BUSY()
    {
        var server = new RemotingServer(_engine, new RemotingOptions { MaxInFlightBytesPerConnection = 16 }, NullLoggerFactory.Instance);
        var toServer = new Pipe();
        var toClient = new Pipe();
        var session = new RemotingSession(new DuplexPipe(toServer.Reader, toClient.Writer), server, null, null, nameServerOnly: false);
        var run = session.RunAsync(CancellationToken.None);
        var send = RemotingCommand.Request(RequestCode.SendMessageV2, new() { ["a"] = "PG", ["b"] = "Budget" }, new byte[17]);
        send.Opaque = 7;
        await toServer.Writer.WriteAsync(RemotingFrame.ToArray(send));
        var result = await toClient.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
        var buffer = result.Buffer;
        Assert.True(RemotingFrame.TryReadFrame(ref buffer, 1 << 20, out var busy));
        Assert.Equal((7, ResponseCode.SystemBusy), (busy.Opaque, busy.Code));
        toClient.Reader.AdvanceTo(buffer.Start);
        await toServer.Writer.CompleteAsync();
        await run.WaitAsync(TimeSpan.FromSeconds(10));
    }
}
