using System.Diagnostics;
using System.Globalization;
using System.Net.Sockets;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.TestKit;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// Review 2026-12-05 (hosting): the shutdown bound with clients connected, --grpc-port 0, durations beyond the timers'
/// range, empty values, data-dir files that cannot be written, a storage failure while running, and the name-server
/// port of a gRPC-only broker.
/// </summary>
public sealed class ShutdownAndStartTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    /// <summary>
    /// docker stop waits 10 s before SIGKILL. An official RocketMQ 4 client keeps its Remoting connection open for ever;
    /// the session only ends on ConnectionClosed, not on Kestrel's close request, so the host waits its whole 30 s
    /// shutdown timeout and the documented checkpoint-on-docker-stop never happens.
    /// </summary>
    [Fact]
    public async Task Sigterm_with_an_idle_remoting_connection_open_exits_within_docker_stops_10_seconds()
    {
        string dir = BrokerChild.NewDataDir("stop-remoting");
        int remoting = FreePorts.Next();
        try
        {
            await using var broker = BrokerChild.Start(dir, null, "--remoting-port", P(remoting));
            await broker.WaitHealthyAsync();
            await using var client = await HalfMsg.Broker.Tests.Infrastructure.RemotingTestClient.ConnectAsync(remoting);
            // Not a pause: the connection's session is running once it answers (as a client's first heartbeat would be);
            // from then on the connection is idle.
            var answer = await client.InvokeAsync(HalfMsg.Protocol.Remoting.RequestCode.GetBrokerClusterInfo);
            Assert.Equal(HalfMsg.Protocol.Remoting.ResponseCode.Success, answer.Code);
            var sw = Stopwatch.StartNew();
            broker.Signal(BrokerChild.SIGTERM);
            bool exited = await broker.WaitForExitAsync(TimeSpan.FromSeconds(10));
            Assert.True(exited, $"still running {sw.Elapsed.TotalSeconds:0.0} s after SIGTERM with one idle Remoting connection:\n{broker.Output}");
            // Not the 8 s backstop (HostOptions.ShutdownTimeout): the connection was ended, not waited out.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"SIGTERM took {sw.Elapsed.TotalSeconds:0.0} s with one idle Remoting connection:\n{broker.Output}");
            Assert.Equal(0, broker.ExitCode);
            Assert.Contains("HalfMsgBroker stopped: checkpoint", broker.Output);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>The same with an official-client-like gRPC producer: its Telemetry stream stays open until the broker ends it.</summary>
    [Fact]
    public async Task Sigterm_with_a_telemetry_stream_open_exits_within_docker_stops_10_seconds()
    {
        string dir = BrokerChild.NewDataDir("stop-telemetry");
        try
        {
            await using var broker = BrokerChild.Start(dir);
            await broker.WaitHealthyAsync();
            await using var producer = await TelemetryTestProducer.StartAsync(broker.Endpoint, "stop-topic", TelemetryTestProducer.Behaviour.Answer);
            var sw = Stopwatch.StartNew();
            broker.Signal(BrokerChild.SIGTERM);
            bool exited = await broker.WaitForExitAsync(TimeSpan.FromSeconds(10));
            Assert.True(exited, $"still running {sw.Elapsed.TotalSeconds:0.0} s after SIGTERM with one Telemetry stream open:\n{broker.Output}");
            // Not the 8 s backstop (HostOptions.ShutdownTimeout): the connection was ended, not waited out.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"SIGTERM took {sw.Elapsed.TotalSeconds:0.0} s with one Telemetry stream open:\n{broker.Output}");
            Assert.Equal(0, broker.ExitCode);
            Assert.Contains("HalfMsgBroker stopped: checkpoint", broker.Output);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>
    /// Remoting sends in flight when the host stops: the stop ends the connections within seconds, every send answered
    /// SUCCESS is stored after a restart, and every send gets an answer or sees its connection close (none hangs).
    /// </summary>
    [Fact]
    public async Task Stopping_with_remoting_sends_in_flight_answers_them_closes_the_connections_and_keeps_every_acknowledged_send()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-stopremoting-" + Guid.NewGuid().ToString("N")[..12]);
        int remoting = FreePorts.Next(), http = FreePorts.Next();
        string[] args = ["--data-dir", dir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(http), "--remoting-port", P(remoting), "--namesrv-port", "0"];
        try
        {
            int acked = 0, failed = 0;
            var host = await BrokerHost.StartAsync(args);
            var clients = new List<HalfMsg.Broker.Tests.Infrastructure.RemotingTestClient>();
            for (int i = 0; i < 8; i++) clients.Add(await HalfMsg.Broker.Tests.Infrastructure.RemotingTestClient.ConnectAsync(remoting));
            using var stop = new CancellationTokenSource();
            var senders = clients.Select(c => Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested && !c.Closed.IsCompleted)
                {
                    try
                    {
                        var props = HalfMsg.Protocol.Remoting.MessageProperties.Encode(
                        [
                            new(HalfMsg.Protocol.Remoting.MessageConst.UniqueKey, Guid.NewGuid().ToString("N").ToUpperInvariant()),
                            new(HalfMsg.Protocol.Remoting.MessageConst.WaitStoreMsgOk, "true"),
                        ]);
                        var r = await c.InvokeAsync(HalfMsg.Protocol.Remoting.RequestCode.SendMessageV2,
                            HalfMsg.Broker.Tests.Infrastructure.RemotingBroker.SendHeader("PG", "stop-remoting", props), new byte[256], TimeSpan.FromSeconds(15));
                        if (r.Code == HalfMsg.Protocol.Remoting.ResponseCode.Success) Interlocked.Increment(ref acked);
                        else Interlocked.Increment(ref failed);
                    }
                    catch (Exception ex) when (ex is not TimeoutException)
                    {
                        // The connection closed under the send (its answer never came): not acknowledged.
                        Interlocked.Increment(ref failed);
                    }
                }
            })).ToArray();
            // Not a pause: stop once the senders are under way (every connection's sends flowing, more in flight).
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(Volatile.Read(ref acked)), n => n >= 4 * clients.Count, TimeSpan.FromSeconds(60),
                "sends acknowledged before the stop");
            var sw = Stopwatch.StartNew();
            await host.DisposeAsync();
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"stopping took {sw.Elapsed.TotalSeconds:0.0} s with Remoting senders connected");
            var all = Task.WhenAll(senders);
            Assert.True(await Task.WhenAny(all, Task.Delay(TimeSpan.FromSeconds(10))) == all, "a Remoting send neither answered nor failed 10 s after the stop");
            await all; // a send that timed out (TimeoutException) would fail here: none may hang
            Assert.All(clients, c => Assert.True(c.Closed.IsCompleted, "a Remoting connection stayed open after the stop"));
            foreach (var c in clients) await c.DisposeAsync();
            Assert.True(acked > 0);

            var again = await BrokerHost.StartAsync(args);
            try
            {
                using var httpClient = new HttpClient();
                string topics = await httpClient.GetStringAsync($"http://127.0.0.1:{http}/api/topics");
                long stored = 0;
                foreach (System.Text.RegularExpressions.Match m in System.Text.RegularExpressions.Regex.Matches(topics, "\"maxOffset\":(\\d+)", System.Text.RegularExpressions.RegexOptions.IgnoreCase))
                    stored += long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture);
                Assert.True(stored >= acked, $"acknowledged {acked}, stored {stored} (failed {failed}): {topics}");
            }
            finally
            {
                await again.DisposeAsync();
            }
        }
        finally
        {
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// A gRPC long poll parked when the host stops is answered at once (not left to run its 20 s), and the stop does not
    /// wait for it. The answer is TOO_MANY_REQUESTS, from which the official clients back off (since 2026-12-06; it was
    /// MESSAGE_NOT_FOUND, an empty queue to the client, which asks again at once).
    /// </summary>
    [Fact]
    public async Task A_long_poll_parked_when_the_host_stops_is_answered_too_many_requests_at_once()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-stoppoll-" + Guid.NewGuid().ToString("N")[..12]);
        int grpc = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(grpc), "--http-port", P(FreePorts.Next()),
            "--remoting-port", "0", "--namesrv-port", "0"]);
        bool stopped = false;
        try
        {
            using var client = new GrpcTestClient($"127.0.0.1:{grpc}");
            long looks = Interlocked.Read(ref host.Engine.Metrics.ReceiveLooks);
            var receive = client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "stop-poll-group" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = "stop-poll" } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 4,
                InvisibleDuration = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                LongPollingTimeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(20)),
            }, ReceiveMessageResponse.Parser, timeout: TimeSpan.FromSeconds(40));
            // The receive reached the engine and took its look (counted in the hold of the engine lock in which it would
            // lease; FindTransaction takes that lock after it), and leased nothing. Nothing tells a parked receive from one
            // whose empty answer is still on its way back over gRPC: for that, and only after the look, a bounded window.
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(Interlocked.Read(ref host.Engine.Metrics.ReceiveLooks)), n => n > looks,
                TimeSpan.FromSeconds(30), "the receive's look");
            Assert.Null(host.Engine.FindTransaction("none"));
            Assert.Equal(0, Interlocked.Read(ref host.Engine.Metrics.Delivered));
            await Task.WhenAny(receive, Task.Delay(500));
            Assert.False(receive.IsCompleted, "the receive did not park");
            var sw = Stopwatch.StartNew();
            stopped = true;
            await host.DisposeAsync();
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"stopping took {sw.Elapsed.TotalSeconds:0.0} s with a long poll parked");
            var answer = await receive.WaitAsync(TimeSpan.FromSeconds(5));
            Assert.Equal(0, answer.GrpcStatus);
            Assert.Equal(Code.TooManyRequests, answer.Responses.First(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status).Status.Code);
        }
        finally
        {
            if (!stopped) await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// SIGTERM to a broker process with a gRPC receive parked in its long poll: the receive is answered at once with
    /// TOO_MANY_REQUESTS (RocketMQ's proxy answers a busy broker so; every official client backs off from it and asks
    /// again, a push consumer after a pause, a simple consumer by its retry), not MESSAGE_NOT_FOUND, which tells the
    /// client the queue is empty and makes it ask again at once. Until 2026-12-06 it was MESSAGE_NOT_FOUND.
    /// </summary>
    [Fact]
    public async Task Sigterm_answers_a_parked_grpc_receive_too_many_requests_not_message_not_found()
    {
        string dir = BrokerChild.NewDataDir("stop-receive");
        try
        {
            await using var broker = BrokerChild.Start(dir);
            await broker.WaitHealthyAsync();
            using var client = new GrpcTestClient(broker.Endpoint);
            long looks = await ReceiveLooksAsync(broker);
            var receive = client.ServerStreamAsync(GrpcMethods.ReceiveMessage, new ReceiveMessageRequest
            {
                Group = new Resource { Name = "stop-receive-group" },
                MessageQueue = new MessageQueue { Topic = new Resource { Name = "stop-receive" } },
                FilterExpression = new FilterExpression { Type = FilterType.Tag, Expression = "*" },
                BatchSize = 4,
                InvisibleDuration = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(30)),
                LongPollingTimeout = Google.Protobuf.WellKnownTypes.Duration.FromTimeSpan(TimeSpan.FromSeconds(20)),
            }, ReceiveMessageResponse.Parser, timeout: TimeSpan.FromSeconds(40));
            // The receive took its look and found nothing. Nothing outside the process tells a parked receive from one
            // whose empty answer is on its way back: for that, and only after the look, a bounded window.
            await RemotingBroker.EventuallyAsync(() => ReceiveLooksAsync(broker), n => n > looks, TimeSpan.FromSeconds(30), "the receive's look");
            await Task.WhenAny(receive, Task.Delay(500));
            Assert.False(receive.IsCompleted, "the receive did not park");

            var sw = Stopwatch.StartNew();
            broker.Signal(BrokerChild.SIGTERM);
            var answer = await receive.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"the parked receive was answered {sw.Elapsed.TotalSeconds:0.0} s after SIGTERM");
            Assert.Equal(0, answer.GrpcStatus);
            Assert.DoesNotContain(answer.Responses, r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Message);
            var status = answer.Responses.First(r => r.ContentCase == ReceiveMessageResponse.ContentOneofCase.Status).Status;
            Assert.Equal(Code.TooManyRequests, status.Code);
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(10)), $"still running after SIGTERM:\n{broker.Output}");
            Assert.Equal(0, broker.ExitCode);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>
    /// SIGTERM to a broker process with a Remoting long-poll pull parked: the pull is answered SYSTEM_BUSY before its
    /// connection closes (the Java client backs off from it, 3 s, and pulls again), and the process still exits within
    /// seconds. Until 2026-12-06 a parked pull got no answer: its connection was closed under it, and the client only
    /// saw a connection error.
    /// </summary>
    [Fact]
    public async Task Sigterm_answers_a_parked_remoting_pull_system_busy_before_closing_its_connection()
    {
        string dir = BrokerChild.NewDataDir("stop-pull");
        int remoting = FreePorts.Next();
        try
        {
            await using var broker = BrokerChild.Start(dir, null, "--remoting-port", P(remoting));
            await broker.WaitHealthyAsync();
            await using var client = await RemotingTestClient.ConnectAsync(remoting);
            await RemotingBroker.SendAsync(client, "stop-pull", "one", queueId: 0);
            // Served at once: the message is there. The pull after it, at the queue's end, parks.
            var first = await RemotingBroker.PullAsync(client, "stop-pull-group", "stop-pull", 0, 0);
            Assert.Equal(HalfMsg.Protocol.Remoting.ResponseCode.Success, first.Code);
            long next = long.Parse(first.Get("nextBeginOffset")!, CultureInfo.InvariantCulture);
            var parked = RemotingBroker.PullAsync(client, "stop-pull-group", "stop-pull", 0, next, suspendMs: 20_000);
            // The broker reads a connection's frames in order: once a request sent after the pull is answered, the pull
            // was read and is being processed. Nothing outside the process tells a parked pull from one whose answer is
            // on its way back: for that, and only after the read, a bounded window (a pull at the queue's end with nothing
            // new answers only when its 20 s suspend ends, or a message comes).
            var after = await client.InvokeAsync(HalfMsg.Protocol.Remoting.RequestCode.GetBrokerClusterInfo);
            Assert.Equal(HalfMsg.Protocol.Remoting.ResponseCode.Success, after.Code);
            await Task.WhenAny(parked, Task.Delay(500));
            Assert.False(parked.IsCompleted, "the pull did not park");

            var sw = Stopwatch.StartNew();
            broker.Signal(BrokerChild.SIGTERM);
            var answer = await parked.WaitAsync(TimeSpan.FromSeconds(10));
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"the parked pull was answered {sw.Elapsed.TotalSeconds:0.0} s after SIGTERM");
            Assert.Equal(HalfMsg.Protocol.Remoting.ResponseCode.SystemBusy, answer.Code);
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(10)), $"still running after SIGTERM:\n{broker.Output}");
            Assert.Equal(0, broker.ExitCode);
            await client.Closed.WaitAsync(TimeSpan.FromSeconds(10));
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    private static async Task<long> ReceiveLooksAsync(BrokerChild broker)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(5) };
        using var stats = System.Text.Json.JsonDocument.Parse(await http.GetStringAsync($"http://127.0.0.1:{broker.HttpPort}/api/stats"));
        return stats.RootElement.GetProperty("receiveLooks").GetInt64();
    }

    /// <summary>
    /// --grpc-port 0 is accepted (range [0, 65535]) and Kestrel binds a free port, but MapGrpcV5 branches on
    /// LocalPort == 0, which no request has: every gRPC call falls into the admin pipeline.
    /// </summary>
    [Fact]
    public async Task Grpc_port_zero_serves_grpc_on_the_port_the_kernel_chose()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-port0-" + Guid.NewGuid().ToString("N")[..12]);
        int http = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", "0", "--http-port", P(http), "--remoting-port", "0", "--namesrv-port", "0"]);
        try
        {
            var addresses = host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses;
            string grpc = addresses.Select(a => new Uri(a)).Single(u => u.Port != http).Authority;
            using var client = new GrpcTestClient(grpc);
            var route = await client.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = "port0" } },
                QueryRouteResponse.Parser, timeout: TimeSpan.FromSeconds(10));
            Assert.True(route.GrpcStatus == 0, $"QueryRoute on the chosen gRPC port {grpc}: grpc-status {route.GrpcStatus} {route.GrpcMessage}");
            Assert.Equal(Code.Ok, route.Response!.Status.Code);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// Durations are accepted up to TimeSpan.MaxValue, but the timers that use them take at most ~24.8 days
    /// (SemaphoreSlim.WaitAsync) or ~49.7 days (ITimer): 60d starts, then the check-back loop throws every second
    /// (no half is ever checked) and every ReceiveMessage answer fails to arm its write deadline.
    /// </summary>
    [Theory]
    [InlineData("--transaction-check-interval", "60d")]
    [InlineData("--grpc-write-timeout", "60d")]
    [InlineData("--send-queue-timeout", "30d")]
    public void Durations_beyond_what_the_timers_take_are_refused_at_start(string flag, string value)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine([flag, value])).Build();
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains(flag, ex.Message);
    }

    /// <summary>A typo'd flag names the flag it is nearest, as a typo'd environment variable does (a new user's pass,
    /// the late-night session of 2026-12-07); one near nothing gets no guess.</summary>
    [Theory]
    [InlineData("--max-mesage-size", "--max-message-size")]
    [InlineData("--grpc-prot", "--grpc-port")]
    [InlineData("--no-such-thing-at-all", null)]
    public void An_unknown_flag_names_the_nearest_known_one(string typed, string? expected)
    {
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.ParseCommandLine([typed, "1"]));
        Assert.StartsWith($"unknown flag {typed}", ex.Message);
        if (expected is null) Assert.DoesNotContain("did you mean", ex.Message);
        else Assert.Contains($"(did you mean {expected}?)", ex.Message);
    }

    /// <summary>
    /// Every Telemetry stream with anything queued is timed by --grpc-telemetry-stall-timeout since the late-night session
    /// of 2026-12-07, so a value a reading client can pass without a write completing (a slow link, a GC pause, the
    /// thread pool's injection steps) would end live producers: at least 1 s (100 ms was taken before).
    /// </summary>
    [Theory]
    [InlineData("500ms", false)]
    [InlineData("1s", true)]
    public void A_telemetry_stall_timeout_below_a_second_is_refused_at_start(string value, bool taken)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine(["--grpc-telemetry-stall-timeout", value])).Build();
        if (taken)
        {
            Assert.Equal(TimeSpan.FromSeconds(1), BrokerConfiguration.Bind(config).GrpcTelemetryStallTimeout);
            return;
        }

        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains("--grpc-telemetry-stall-timeout", ex.Message);
    }

    /// <summary>
    /// An empty value (`--data-dir "$DATA_DIR"` with the variable unset, `--data-dir=`) silently becomes the default:
    /// the broker starts on a new, empty ./data under the working directory and the operator sees every message gone.
    /// </summary>
    [Theory]
    [InlineData("--data-dir")]
    [InlineData("--flush")]
    [InlineData("--grpc-port")]
    public void An_empty_flag_value_is_refused_not_replaced_by_the_default(string flag)
    {
        var config = new ConfigurationBuilder().AddInMemoryCollection(BrokerConfiguration.ParseCommandLine([flag + "="])).Build();
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Bind(config));
        Assert.Contains(flag, ex.Message);
    }

    private static async Task<string> PrepareStoppedDataDirAsync(string tag)
    {
        string dir = BrokerChild.NewDataDir(tag);
        await using var first = BrokerChild.Start(dir);
        await first.WaitHealthyAsync();
        first.Signal(BrokerChild.SIGTERM);
        Assert.True(await first.WaitForExitAsync(TimeSpan.FromSeconds(60)), first.Output);
        Assert.Equal(0, first.ExitCode);
        return dir;
    }

    /// <summary>
    /// One file of an otherwise writable data dir that cannot be opened for writing (owned by another user after a run
    /// as root; here a read-only bind mount of the file): the start dies with an unhandled IOException, a stack trace
    /// and exit 134 (SIGABRT), not the documented one line and exit 74 (or 2).
    /// </summary>
    [RootMountTheory]
    [InlineData("log/commit-meta")]
    [InlineData("broker.lock")]
    public async Task A_data_dir_file_that_cannot_be_written_stops_the_start_with_one_line_not_a_stack_trace(string file)
    {
        string dir = await PrepareStoppedDataDirAsync("rofile");
        try
        {
            string path = Path.Combine(dir, file);
            await using var broker = BrokerChild.Start(dir, $"mount --bind '{path}' '{path}'\nmount -o remount,bind,ro '{path}'");
            Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(60)), "kept running:\n" + broker.Output);
            Assert.DoesNotContain("Unhandled exception", broker.Output);
            Assert.Contains(broker.ExitCode, new[] { 2, 74 });
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>
    /// The log segment itself read-only: the broker starts and reports ready. A send must then not be answered OK.
    /// </summary>
    [RootMountFact]
    public async Task A_read_only_log_segment_is_not_reported_ready_and_sends_are_not_acknowledged()
    {
        string dir = await PrepareStoppedDataDirAsync("roseg");
        try
        {
            string path = Path.Combine(dir, "log", "broker.log.0");
            await using var broker = BrokerChild.Start(dir, $"mount --bind '{path}' '{path}'\nmount -o remount,bind,ro '{path}'");
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            bool ready = false;
            while (!broker.HasExited && DateTime.UtcNow < deadline)
            {
                if (await broker.HealthAsync() is { Status: System.Net.HttpStatusCode.OK }) { ready = true; break; }
                await Task.Delay(100);
            }
            if (!ready) return; // refused to start: fine
            using var client = new GrpcTestClient(broker.Endpoint);
            var message = new Message
            {
                Topic = new Resource { Name = "ro-seg" },
                Body = Google.Protobuf.ByteString.CopyFrom(new byte[16]),
                SystemProperties = new SystemProperties
                {
                    MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                    MessageType = MessageType.Normal,
                    BodyEncoding = Apache.Rocketmq.V2.Encoding.Identity,
                    BornTimestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                    BornHost = "test-host",
                },
            };
            var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser,
                timeout: TimeSpan.FromSeconds(60));
            Assert.False(sent.GrpcStatus == 0 && sent.Response!.Status.Code == Code.Ok,
                "a send was acknowledged although the log segment is read-only:\n" + broker.Output);
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>SIGTERM while sends are in flight: every acknowledged send is there after a restart, and no call hangs.</summary>
    [Fact]
    public async Task Sigterm_during_sends_keeps_every_acknowledged_message_and_no_call_hangs()
    {
        string dir = BrokerChild.NewDataDir("stop-sends");
        try
        {
            int acked = 0, failed = 0, exited = 0;
            long maxMs = 0;
            var callsAfterExit = new int[16];
            await using (var broker = BrokerChild.Start(dir))
            {
                await broker.WaitHealthyAsync();
                using var stop = new CancellationTokenSource();
                var senders = Enumerable.Range(0, callsAfterExit.Length).Select(sender => Task.Run(async () =>
                {
                    using var client = new GrpcTestClient(broker.Endpoint);
                    while (!stop.IsCancellationRequested)
                    {
                        var message = new Message
                        {
                            Topic = new Resource { Name = "stop-sends" },
                            Body = Google.Protobuf.ByteString.CopyFrom(new byte[512]),
                            SystemProperties = new SystemProperties
                            {
                                MessageId = "01" + Guid.NewGuid().ToString("N").ToUpperInvariant(),
                                MessageType = MessageType.Normal,
                                BodyEncoding = Apache.Rocketmq.V2.Encoding.Identity,
                                BornTimestamp = Google.Protobuf.WellKnownTypes.Timestamp.FromDateTimeOffset(DateTimeOffset.UtcNow),
                                BornHost = "test-host",
                            },
                        };
                        var sw = Stopwatch.StartNew();
                        bool afterExit = Volatile.Read(ref exited) != 0;
                        var sent = await client.UnaryAsync(GrpcMethods.SendMessage, new SendMessageRequest { Messages = { message } }, SendMessageResponse.Parser,
                            timeout: TimeSpan.FromSeconds(60));
                        if (afterExit) Interlocked.Increment(ref callsAfterExit[sender]);
                        long ms = sw.ElapsedMilliseconds;
                        long seen;
                        while (ms > (seen = Interlocked.Read(ref maxMs)) && Interlocked.CompareExchange(ref maxMs, ms, seen) != seen) { }
                        if (sent.GrpcStatus == 0 && sent.Response!.Status.Code == Code.Ok) Interlocked.Increment(ref acked);
                        else { Interlocked.Increment(ref failed); await Task.Delay(50); }
                    }
                })).ToArray();
                // Not a pause: SIGTERM once the sends are under way (every sender's calls flowing, more in flight).
                await RemotingBroker.EventuallyAsync(() => Task.FromResult(Volatile.Read(ref acked)), n => n >= 4 * callsAfterExit.Length,
                    TimeSpan.FromSeconds(60), "sends acknowledged before SIGTERM");
                broker.Signal(BrokerChild.SIGTERM);
                Assert.True(await broker.WaitForExitAsync(TimeSpan.FromSeconds(60)), broker.Output);
                Volatile.Write(ref exited, 1);
                // Not a pause: every sender has had a call that started after the exit come back (none hangs on a broker
                // that is gone); then they stop.
                await RemotingBroker.EventuallyAsync(() => Task.FromResult(Enumerable.Range(0, callsAfterExit.Length).Min(i => Volatile.Read(ref callsAfterExit[i]))), n => n > 0,
                    TimeSpan.FromSeconds(90), "a call of every sender started after the exit came back");
                stop.Cancel();
                await Task.WhenAll(senders);
                Assert.Equal(0, broker.ExitCode);
            }
            Assert.True(acked > 0);
            await using var again = BrokerChild.Start(dir);
            await again.WaitHealthyAsync();
            using var http = new HttpClient();
            string topics = await http.GetStringAsync($"http://127.0.0.1:{again.HttpPort}/api/topics");
            long stored = 0;
            void Walk(System.Text.Json.JsonElement e)
            {
                if (e.ValueKind == System.Text.Json.JsonValueKind.Object)
                {
                    foreach (var p in e.EnumerateObject())
                    {
                        if (p.Name.Equals("maxOffset", StringComparison.OrdinalIgnoreCase) && p.Value.ValueKind == System.Text.Json.JsonValueKind.Number) stored += p.Value.GetInt64();
                        else Walk(p.Value);
                    }
                }
                else if (e.ValueKind == System.Text.Json.JsonValueKind.Array) foreach (var x in e.EnumerateArray()) Walk(x);
            }
            Walk(System.Text.Json.JsonDocument.Parse(topics).RootElement);
            Assert.True(stored >= acked, $"acknowledged {acked}, stored {stored} (failed {failed}, slowest call {maxMs} ms): {topics}");
            Assert.True(maxMs < 15_000, $"a call took {maxMs} ms around SIGTERM");
        }
        finally
        {
            BrokerChild.DeleteDir(dir);
        }
    }

    /// <summary>
    /// Exit 74 is "the log failed while running: restart it once the disk is fixed", and StorageFailed's doc says "the
    /// host watches it"; nothing does. A broker whose log failed refuses every write until someone stops it by hand: a
    /// supervisor's Restart=on-failure never fires.
    /// </summary>
    [Fact]
    public async Task A_storage_failure_while_running_stops_the_host_so_a_supervisor_restarts_it()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-fail-" + Guid.NewGuid().ToString("N")[..12]);
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
            "--remoting-port", "0", "--namesrv-port", "0"]);
        try
        {
            typeof(Broker.Core.BrokerEngine).GetMethod("FailStorageForTest", System.Reflection.BindingFlags.Instance | System.Reflection.BindingFlags.NonPublic)!
                .Invoke(host.Engine, ["review: disk gone"]);
            await host.Engine.StorageFailed;
            var shutdown = host.WaitForShutdownAsync();
            var first = await Task.WhenAny(shutdown, Task.Delay(TimeSpan.FromSeconds(10)));
            Assert.True(first == shutdown, "the host still runs 10 s after its log failed (every write refused until stopped by hand)");
            Assert.Equal(BrokerHost.ExitStorageFailure, host.ExitCode);
        }
        finally
        {
            await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }

    /// <summary>
    /// --remoting-port 0 turns the name server off too (RemotingEndpoint.Add returns first), yet StartupChecks still
    /// refuses the start when the unused --namesrv-port (default 9876, where a co-located Apache RocketMQ name server
    /// listens) is taken.
    /// </summary>
    [Fact]
    public async Task A_grpc_only_broker_is_not_refused_for_a_name_server_port_it_does_not_open()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-nsrv-" + Guid.NewGuid().ToString("N")[..12]);
        int nsrv = FreePorts.Next();
        var other = new TcpListener(System.Net.IPAddress.Loopback, nsrv);
        other.Start();
        BrokerHost? host = null;
        try
        {
            host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
                "--remoting-port", "0", "--namesrv-port", P(nsrv)]);
        }
        finally
        {
            other.Stop();
            if (host is not null) await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
