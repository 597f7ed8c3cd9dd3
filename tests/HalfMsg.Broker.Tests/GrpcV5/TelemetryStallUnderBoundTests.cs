using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;
using HalfMsg.Broker.FrontEnds.GrpcV5;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;

namespace HalfMsg.Broker.Tests.GrpcV5;

/// <summary>
/// A Telemetry stream was ended for not reading only when its queue was over its own bound (16 MiB) or a check had been
/// refused for its connection's, and nothing was written for the stall limit. A producer process that stopped reading
/// (a hung application whose HTTP/2 stack still answers pings) with a few small checks queued, far under 16 MiB once its
/// stream window and Kestrel's buffer were full, was never ended: its checks, counted as sent, were never written, and
/// their halves waited the check interval though a live instance of the group could answer. Non-reading streams of one
/// connection, each under its own bound, that together filled the connection's budget were never ended either, and a
/// reading stream of that connection was refused checks for as long as they stayed. Since the late-night session of
/// 2026-12-07 a stream with commands queued and nothing written for the stall limit is ended whatever its queue and its
/// connection hold (found by review).
/// </summary>
public sealed class TelemetryStallUnderBoundTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static readonly TimeSpan CheckInterval = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task A_producer_that_stops_reading_with_small_checks_queued_under_its_bound_is_ended_and_its_checks_go_to_the_live_instance()
    {
        string dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-stallunder-" + Guid.NewGuid().ToString("N")[..12]);
        int grpcPort = FreePorts.Next();
        string topic = "stallunder-" + Guid.NewGuid().ToString("N")[..12];
        // Halves due 1 s after they are stored; the check loop waits two minutes between passes unless asked for one (a
        // producer joins, a check is given back): the test runs the first pass itself. A stream is ended after 2 s with
        // nothing written (a second is short for a reading client's writer on a loaded machine).
        BrokerHost host = await BrokerHost.StartAsync(["--data-dir", dataDir, "--grpc-port", grpcPort.ToString(), "--http-port", FreePorts.Next().ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--transaction-timeout", "1s",
            "--transaction-check-interval", $"{(int)CheckInterval.TotalSeconds}s", "--grpc-telemetry-stall-timeout", "2s"]);
        try
        {
            string endpoint = $"127.0.0.1:{grpcPort}";
            await using TelemetryTestProducer stalled = await TelemetryTestProducer.StartAsync(endpoint, topic, TelemetryTestProducer.Behaviour.StopReading);
            await using TelemetryTestProducer live = await TelemetryTestProducer.StartAsync(endpoint, topic, TelemetryTestProducer.Behaviour.Answer);
            bool Registered(TelemetryTestProducer p) => host.Engine.Producers.Snapshot().TryGetValue(topic, out string[]? ids) && ids.Contains(p.Client.ClientId);
            await Eventually.TrueAsync(() => Registered(stalled) && Registered(live), "both instances are registered", TimeSpan.FromSeconds(30));

            // Sent by the instance that stopped reading, which is asked first: 48 checks of about 16 KiB, 800 KB in all,
            // far under its 16 MiB bound and its connection's 128 MiB, more than its HTTP/2 window (64 KiB) and Kestrel's
            // buffer take.
            const int halves = 48;
            var ids = new List<string>();
            for (int i = 0; i < halves; i++)
            {
                ids.Add(await stalled.SendHalfAsync(topic, 16 * 1024));
            }

            await Eventually.TrueAsync(() => ids.All(id => host.Engine.FindTransaction(id) is { NextCheckAt: { } at } && at <= DateTimeOffset.UtcNow),
                "every half is due", TimeSpan.FromSeconds(30));
            var sincePass = System.Diagnostics.Stopwatch.StartNew();
            await host.Engine.RunCheckPassAsync();
            Assert.Equal(halves, Interlocked.Read(ref host.Engine.Metrics.ChecksSent)); // all of them to the stalled instance

            // Ended once nothing of it has been written for the stall limit (and the write under way's 2 s), well before
            // the check interval; its checks never written are given back.
            await Eventually.TrueAsync(() => !Registered(stalled),
                () => $"the instance that stopped reading, its queue under its bound, was ended ({sincePass.Elapsed.TotalSeconds:F1} s after the pass)",
                TimeSpan.FromSeconds(20));
            output.WriteLine($"the stalled stream was ended {sincePass.Elapsed.TotalSeconds:F1} s after the pass");
            await Eventually.TrueAsync(() => Interlocked.Read(ref host.Engine.Metrics.ChecksReturned) > 0,
                "its unsent checks were given back", TimeSpan.FromSeconds(20));

            // Every half whose check was not written to the stalled stream (those in its window and Kestrel's buffer, and
            // the one in the write under way, reached it and wait the check interval) is decided by the live instance, as
            // its first check, well before the check interval.
            await Eventually.TrueAsync(() => ids.Count(live.Decided.Contains) == Interlocked.Read(ref host.Engine.Metrics.ChecksReturned),
                () => $"the live instance decided every check given back ({ids.Count(live.Decided.Contains)} decided, " +
                    $"{Interlocked.Read(ref host.Engine.Metrics.ChecksReturned)} given back of {halves}; live's errors: {string.Join(" | ", live.Errors)})",
                TimeSpan.FromSeconds(30));
            long returned = Interlocked.Read(ref host.Engine.Metrics.ChecksReturned);
            output.WriteLine($"{returned} of {halves} checks given back and decided by the live instance {sincePass.Elapsed.TotalSeconds:F1} s after the pass");
            Assert.True(returned >= halves / 2, $"most checks waited in the queue, under its bound ({returned} of {halves} given back)");
            Assert.True(sincePass.Elapsed < CheckInterval / 2, $"decided {sincePass.Elapsed.TotalSeconds:F1} s after the pass");
            Assert.Equal(halves - returned, ids.Count(id => host.Engine.FindTransaction(id) is not null));
            var numbers = live.Checks.Where(c => ids.Contains(c.TransactionId))
                .Select(c => c.Message.UserProperties.TryGetValue("TRANSACTION_CHECK_TIMES", out string? n) ? n : null).ToList();
            Assert.Equal(returned, numbers.Count);
            Assert.All(numbers, n => Assert.Equal("1", n));
            Assert.Empty(live.Errors);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dataDir, true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task Non_reading_streams_of_one_connection_each_under_its_bound_are_ended_and_a_reading_stream_of_that_connection_gets_its_checks()
    {
        // Unit level: three sessions sharing one connection's budget, on a clock the test moves (end to end, one HTTP/2
        // connection's streams would need a client that reads one stream and not the others).
        var time = new SteppedTime();
        var stall = TimeSpan.FromSeconds(10);
        var connection = new AnswerBudget(1024 * 1024); // a check does not fit once it holds 2 MiB
        var returned = new Dictionary<string, List<CheckBackRequest>> { ["a"] = [], ["b"] = [] };
        TelemetrySession NotReading(string id) => new(id, 16 * 1024 * 1024, connection, stall, time)
        {
            ReturnUnsent = (client, checks) => { lock (returned) returned[client].AddRange(checks); return Task.CompletedTask; },
        };
        TelemetrySession a = NotReading("a"), b = NotReading("b");
        int roomAgain = 0;
        var c = new TelemetrySession("c", 16 * 1024 * 1024, connection, stall, time) { RoomAgain = () => Interlocked.Increment(ref roomAgain) };
        GatedTelemetryWriter aStream = new(), bStream = new(); // never released
        Task aWriter = a.RunWriterAsync(aStream, CancellationToken.None);
        Task bWriter = b.RunWriterAsync(bStream, CancellationToken.None);
        var reading = new GatedTelemetryWriter();
        reading.Gate.Release(100); // reads whatever comes
        Task cWriter = c.RunWriterAsync(reading, CancellationToken.None);

        // Seven checks of 256 KiB: 1.8 MB of the connection's 2 MiB, each stream far under its own bound, none refused.
        for (int i = 0; i < 4; i++) Assert.True(a.TrySendCheck(Check(i)));
        for (int i = 4; i < 7; i++) Assert.True(b.TrySendCheck(Check(i)));
        Assert.Equal(0, a.ChecksRefusedForRoom + b.ChecksRefusedForRoom);
        // The reading stream's check does not fit the connection.
        Assert.False(c.TrySendCheck(Check(7)));
        Assert.Equal(1, c.ChecksRefusedForRoom);
        Assert.True(c.IsAlive);
        // Each writer of the two that do not read is parked in its first write before the clock moves: one that had not
        // started it (its continuation still waiting for the thread pool of a loaded machine) would write nothing once
        // ended, keep no check, and not be parked (until the late-night session of 2026-12-07 the clock moved at once,
        // and this test failed beside stress-ng; found by review).
        await Eventually.TrueAsync(() => Volatile.Read(ref aStream.Started) == 1 && Volatile.Read(ref bStream.Started) == 1,
            () => $"each writer that is not read is parked in its first write ({aStream.Started}, {bStream.Started})", TimeSpan.FromSeconds(30));

        // The stall limit (and a second for the 256 KiB write under way) passes with nothing written on the two that do
        // not read: both are ended.
        time.Advance(stall + TimeSpan.FromSeconds(2));
        Assert.False(a.IsAlive, "a stream of the connection that does not read, under its own bound, was not ended");
        Assert.False(b.IsAlive, "a stream of the connection that does not read, under its own bound, was not ended");
        Assert.Contains("did not read its Telemetry stream", a.EndReason);
        Assert.Contains("bytes queued; nothing written for 12 s", b.EndReason);
        Assert.True(c.IsAlive, c.EndReason);

        // As the handler does: each writer, parked in its write, is stopped, and gives back what it held.
        a.Close();
        b.Close();
        Assert.False(await a.WhenWriterDoneAsync(TimeSpan.FromMilliseconds(50), TimeProvider.System));
        Assert.False(await b.WhenWriterDoneAsync(TimeSpan.FromMilliseconds(50), TimeProvider.System));
        Assert.True(aWriter.IsCompleted && bWriter.IsCompleted);
        await Eventually.TrueAsync(() => { lock (returned) return returned["a"].Count == 3 && returned["b"].Count == 2; },
            () => $"every check but the one in each parked write was given back ({returned["a"].Count}, {returned["b"].Count})", TimeSpan.FromSeconds(10));
        Assert.Equal(0, connection.Held);

        // The reading stream is told it has room, and its check is written.
        await Eventually.TrueAsync(() => Volatile.Read(ref roomAgain) == 1, "room was announced to the reading stream", TimeSpan.FromSeconds(10));
        Assert.True(c.TrySendCheck(Check(8)));
        await Eventually.TrueAsync(() => Volatile.Read(ref reading.Finished) == 1, "the reading stream's check was written", TimeSpan.FromSeconds(10));
        Assert.True(c.IsAlive, c.EndReason);
        c.Close();
        Assert.True(await c.WhenWriterDoneAsync(TimeSpan.FromSeconds(30), TimeProvider.System));
        Assert.True(cWriter.IsCompleted);
    }

    [Fact]
    public async Task A_client_that_reads_slowly_is_not_ended_and_one_that_stops_is_ended_a_stall_limit_after_its_last_write_with_one_timer()
    {
        var time = new SteppedTime();
        var stall = TimeSpan.FromSeconds(10);
        var session = new TelemetrySession("c1", 16 * 1024 * 1024, new AnswerBudget(64 * 1024 * 1024), stall, time);
        var stream = new GatedTelemetryWriter();
        Task writer = session.RunWriterAsync(stream, CancellationToken.None);

        // One write every 6 s, more checks coming than are written: the queue is never empty, nothing ends it.
        int sent = 0;
        for (int round = 1; round <= 20; round++)
        {
            for (int i = 0; i < 3; i++) Assert.True(session.TrySendCheck(Check(sent++, 1024)), session.EndReason);
            time.Advance(TimeSpan.FromSeconds(6));
            stream.Gate.Release();
            // The next write starts once this one is counted as written (the clock moves only after it).
            await Eventually.TrueAsync(() => Volatile.Read(ref stream.Started) == round + 1, $"write {round} finished", TimeSpan.FromSeconds(10));
            Assert.True(session.IsAlive, session.EndReason);
        }

        // Small commands the client's HTTP/2 stack takes at once, its application reading or not: each is written, and
        // the queue, empty again, is not timed (the clock moves once the writer caught up: this machine's writer may lag).
        stream.Gate.Release(100_000);
        for (int block = 0; block < 20; block++)
        {
            for (int i = 0; i < 100; i++) Assert.True(session.TrySendCheck(Check(sent++, 64)), session.EndReason);
            await Eventually.TrueAsync(() => session.QueuedBytes == 0, "everything queued was written", TimeSpan.FromSeconds(30));
            time.Advance(stall - TimeSpan.FromSeconds(1));
            Assert.True(session.IsAlive, session.EndReason);
        }

        time.Advance(stall * 3);
        Assert.True(session.IsAlive, session.EndReason);

        // The client stops reading: ended a stall limit after its last write, no further send needed.
        int written = Volatile.Read(ref stream.Finished);
        while (stream.Gate.CurrentCount > 0) stream.Gate.Wait(0);
        Assert.True(session.TrySendCheck(Check(sent++, 1024)), session.EndReason);
        Assert.True(session.TrySendCheck(Check(sent++, 1024)), session.EndReason);
        await Eventually.TrueAsync(() => Volatile.Read(ref stream.Started) == written + 1, "the next write started", TimeSpan.FromSeconds(10));
        time.Advance(stall - TimeSpan.FromSeconds(1));
        Assert.True(session.IsAlive, session.EndReason);
        time.Advance(TimeSpan.FromSeconds(2));
        Assert.False(session.IsAlive, "a client that stopped reading, its queue under its bound, was not ended");
        Assert.Contains("did not read its Telemetry stream", session.EndReason);
        // One timer for the session's life, moved as the queue filled and drained.
        Assert.Equal(1, time.TimersCreated);

        session.Close();
        Assert.False(await session.WhenWriterDoneAsync(TimeSpan.FromMilliseconds(50), TimeProvider.System));
        Assert.True(writer.IsCompleted);
    }

    private static CheckBackRequest Check(int i, int bodySize = 256 * 1024) => new()
    {
        TransactionId = "tx" + i,
        ProducerGroup = "T",
        CheckNumber = 1,
        HalfMessage = new StoredMessage { Topic = "T", MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(), Body = new byte[bodySize] },
    };

    /// <summary>A clock moved by the test whose one-shot timers fire, on the moving thread, once it passes their due time.</summary>
    private sealed class SteppedTime : TimeProvider
    {
        private readonly object _gate = new();
        private readonly List<SteppedTimer> _due = [];
        private long _ticks = TimeSpan.TicksPerHour;
        public int TimersCreated;

        public override long TimestampFrequency => TimeSpan.TicksPerSecond;
        public override long GetTimestamp() => Interlocked.Read(ref _ticks);

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            Interlocked.Increment(ref TimersCreated);
            var timer = new SteppedTimer(this, callback, state);
            timer.Change(dueTime, period);
            return timer;
        }

        public void Advance(TimeSpan by)
        {
            Interlocked.Add(ref _ticks, by.Ticks);
            // A callback may arm its timer again: fire until nothing is due (a bound against a callback that re-arms at 0).
            for (int round = 0; round < 100; round++)
            {
                List<SteppedTimer> due;
                lock (_gate)
                {
                    due = _due.Where(t => t.DueAt <= Interlocked.Read(ref _ticks)).ToList();
                    foreach (SteppedTimer t in due) _due.Remove(t);
                }

                if (due.Count == 0) return;
                foreach (SteppedTimer t in due) t.Fire();
            }

            Assert.Fail("a timer kept re-arming itself at once");
        }

        private sealed class SteppedTimer(SteppedTime time, TimerCallback callback, object? state) : ITimer
        {
            public long DueAt;

            public bool Change(TimeSpan dueTime, TimeSpan period)
            {
                Assert.Equal(Timeout.InfiniteTimeSpan, period);
                lock (time._gate)
                {
                    time._due.Remove(this);
                    if (dueTime != Timeout.InfiniteTimeSpan)
                    {
                        DueAt = time.GetTimestamp() + dueTime.Ticks;
                        time._due.Add(this);
                    }
                }

                return true;
            }

            public void Fire() => callback(state);

            public void Dispose()
            {
                lock (time._gate) time._due.Remove(this);
            }

            public ValueTask DisposeAsync()
            {
                Dispose();
                return default;
            }
        }
    }
}
