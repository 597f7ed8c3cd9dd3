using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.TestKit;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>
/// An access point of several addresses (<c>"a:8081;b:8081"</c>, as the official Java client takes it): the route
/// query, the Telemetry stream (Settings, check-backs), sends and receives go to an address that answers, whether the
/// first is down from the start or goes down while the clients run; a clear error only when none answers. Until
/// 2026-12-07 only the first address was used (review of our clients).
/// </summary>
[Trait("Category", "E2E")]
public sealed class AccessPointFailoverTests
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(40);

    /// <summary>A loopback port nothing listens on (bound, then closed: connections to it are refused).</summary>
    private static int ClosedPort()
    {
        using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        return ((IPEndPoint)socket.LocalEndPoint!).Port;
    }

    private static Task<Producer> ProducerAsync(string endpoints, string topic, ITransactionChecker checker) =>
        Producer.StartAsync(ProducerOptions.Default with { Endpoints = endpoints, Topics = [topic], TransactionChecker = checker });

    /// <summary>Receives (and acks) in the background, through receive failures, until disposed.</summary>
    private sealed class Receiver : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stop = new();
        private readonly Task _loop;

        public Receiver(SimpleConsumer consumer)
        {
            _loop = Task.Run(async () =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    try
                    {
                        foreach (ReceivedMessage m in await consumer.ReceiveAsync(16, E2E.Invisible, _stop.Token))
                        {
                            Bodies.Enqueue(m.BodyAsString());
                            await m.AckAsync(_stop.Token);
                        }
                    }
                    catch (ClientException ex)
                    {
                        Errors.Enqueue(ex.Message);
                        await Task.Delay(200, _stop.Token).ContinueWith(_ => { });
                    }
                    catch (OperationCanceledException) when (_stop.IsCancellationRequested)
                    {
                    }
                }
            });
        }

        public ConcurrentQueue<string> Bodies { get; } = new();
        public ConcurrentQueue<string> Errors { get; } = new();

        public async ValueTask DisposeAsync()
        {
            await _stop.CancelAsync();
            await _loop.WaitAsync(TimeSpan.FromSeconds(30));
            _stop.Dispose();
        }
    }

    [Fact]
    public async Task With_the_first_address_down_from_the_start_the_clients_use_the_next_for_routes_sends_receives_and_check_backs()
    {
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        string endpoints = $"127.0.0.1:{ClosedPort()};{broker.Endpoint}";
        string topic = E2E.Unique("fo-start");
        var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Commit));
        await using Producer producer = await ProducerAsync(endpoints, topic, checker);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(endpoints, topic, E2E.Unique("g"));
        await using var receiver = new Receiver(consumer);

        await producer.SendAsync(new ProducerMessage(topic, "plain"));
        ITransaction committed = producer.BeginTransaction();
        await committed.SendAsync(new ProducerMessage(topic, "committed"));
        await committed.CommitAsync();

        // Left undecided: only a check-back over the producer's Telemetry stream (on the live address) commits it.
        SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "checked"));

        await E2E.EventuallyAsync(() => new[] { "plain", "committed", "checked" }.All(receiver.Bodies.Contains), Wait,
            $"every message received (got: {string.Join(", ", receiver.Bodies)}; errors: {string.Join(" | ", receiver.Errors.Take(3))})");
        Assert.Contains(checker.Calls, c => c.TransactionId == undecided.TransactionId && c.Result == TransactionResolution.Commit);
    }

    [Fact]
    public async Task When_the_first_broker_is_killed_sends_receives_and_check_backs_move_to_the_next_address()
    {
        await using BrokerProcess first = await BrokerProcess.StartAsync();
        await using BrokerProcess second = await BrokerProcess.StartAsync();
        string endpoints = $"{first.Endpoint};{second.Endpoint}";
        string topic = E2E.Unique("fo-kill");
        var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Commit));
        await using Producer producer = await ProducerAsync(endpoints, topic, checker);
        await using SimpleConsumer consumer = await E2E.ConsumerAsync(endpoints, topic, E2E.Unique("g"));
        await using var receiver = new Receiver(consumer);

        await producer.SendAsync(new ProducerMessage(topic, "before"));
        await E2E.EventuallyAsync(() => receiver.Bodies.Contains("before"), Wait, "the message sent before the kill");

        first.Kill();

        // A normal send is retried (the attempt on the dead address fails, the next goes to the live one).
        await producer.SendAsync(new ProducerMessage(topic, "after"));
        ITransaction committed = producer.BeginTransaction();
        await committed.SendAsync(new ProducerMessage(topic, "committed-after"));
        await committed.CommitAsync();
        SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "checked-after"));

        await E2E.EventuallyAsync(() => new[] { "after", "committed-after", "checked-after" }.All(receiver.Bodies.Contains), Wait,
            $"every message sent after the kill received (got: {string.Join(", ", receiver.Bodies)})");
        // The second broker asked this producer about the undecided half: its Telemetry stream moved there.
        Assert.Contains(checker.Calls, c => c.TransactionId == undecided.TransactionId && c.Result == TransactionResolution.Commit);
    }

    [Fact]
    public async Task The_failback_probe_is_answered_unimplemented_by_the_broker_which_logs_nothing_for_it()
    {
        // A client away from its first address probes it every FailbackInterval (30 s by default) with a call to a
        // service no broker has: HalfMsgBroker answers UNIMPLEMENTED (the probe's "alive") and stays quiet about it, so
        // many clients failed over do not fill its log with one line per probe.
        await using BrokerProcess broker = await BrokerProcess.StartAsync();
        using var channel = Grpc.Net.Client.GrpcChannel.ForAddress($"http://{broker.Endpoint}");
        var invoker = channel.CreateCallInvoker();
        int before = broker.Output.Length;
        for (int i = 0; i < 3; i++)
        {
            var ex = await Assert.ThrowsAsync<Grpc.Core.RpcException>(async () =>
                await invoker.AsyncUnaryCall(HalfMsg.ClientCore.Transport.RpcChannel.ProbeMethod, null,
                    new Grpc.Core.CallOptions(deadline: DateTime.UtcNow.AddSeconds(10)), []));
            Assert.Equal(Grpc.Core.StatusCode.Unimplemented, ex.StatusCode);
            Assert.False(HalfMsg.ClientCore.Transport.RpcChannel.IsNotGrpcAnswer(ex), ex.ToString()); // a gRPC answer, not a bare 404
        }

        // The broker answers a call after them (its log is written in order), then nothing was logged for the probes.
        await using var session = await E2E.ConsumerAsync(broker.Endpoint, E2E.Unique("probe-quiet"), E2E.Unique("g"));
        string logged = broker.Output[before..];
        Assert.DoesNotContain("AddressProbe", logged);
        Assert.DoesNotContain("warn:", logged);
        Assert.DoesNotContain("fail:", logged);
    }

    [Fact]
    public async Task With_the_first_address_silent_the_clients_pass_it_over_quickly_and_move_back_once_a_broker_answers_there()
    {
        // The first address accepts connections and never answers (a hung broker). Until the midday session of
        // 2026-12-07 every call there waited for its deadline (15 s here) and failed, and none moved to the second;
        // and a client that had moved never came back to the first.
        await using BrokerProcess second = await BrokerProcess.StartAsync();
        await using BrokerProcess first = await BrokerProcess.StartAsync();
        first.Kill();
        var silent = new SilentListener(first.GrpcPort);
        try
        {
            string endpoints = $"{first.Endpoint};{second.Endpoint}";
            string topic = E2E.Unique("fo-silent");
            var checker = new RecordingChecker(new FuncChecker(_ => TransactionResolution.Commit));
            TimeSpan deadline = TimeSpan.FromSeconds(15), connect = TimeSpan.FromMilliseconds(500), failback = TimeSpan.FromSeconds(1);

            var watch = System.Diagnostics.Stopwatch.StartNew();
            await using Producer producer = await Producer.StartAsync(ProducerOptions.Default with
            {
                Endpoints = endpoints, Topics = [topic], TransactionChecker = checker, RequestTimeout = deadline, ConnectTimeout = connect,
                FailbackInterval = failback,
            });
            await producer.SendAsync(new ProducerMessage(topic, "plain"));
            ITransaction committed = producer.BeginTransaction();
            await committed.SendAsync(new ProducerMessage(topic, "committed"));
            await committed.CommitAsync();
            Assert.InRange(watch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(8)); // far below one call's deadline

            watch.Restart();
            await using SimpleConsumer consumer = await SimpleConsumer.StartAsync(SimpleConsumerOptions.Default with
            {
                Endpoints = endpoints, ConsumerGroup = E2E.Unique("g"), Subscriptions = new Dictionary<string, string> { [topic] = "*" },
                AwaitDuration = TimeSpan.FromSeconds(1), RequestTimeout = deadline, ConnectTimeout = connect, FailbackInterval = failback,
            });
            var received = new List<string>();
            while (!(received.Contains("plain") && received.Contains("committed")) && watch.Elapsed < TimeSpan.FromSeconds(8))
            {
                foreach (ReceivedMessage m in await consumer.ReceiveAsync(16, E2E.Invisible))
                {
                    received.Add(m.BodyAsString());
                    await m.AckAsync();
                }
            }

            Assert.True(received.Contains("plain") && received.Contains("committed"),
                $"both received within 8 s of the consumer's start (got: {string.Join(", ", received)}; {watch.Elapsed})");

            // The broker comes back on the first address: sends, and the producer's Telemetry stream (check-backs),
            // move back to it within the failback interval and a probe.
            await silent.DisposeAsync();
            await first.RestartAsync();
            await using SimpleConsumer onFirst = await E2E.ConsumerAsync(first.Endpoint, topic, E2E.Unique("g-first"));
            watch.Restart();
            int sent = 0;
            await E2E.EventuallyAsync(async () =>
            {
                await producer.SendAsync(new ProducerMessage(topic, $"back-{sent++}"));
                foreach (ReceivedMessage m in await onFirst.ReceiveAsync(16, E2E.Invisible))
                {
                    await m.AckAsync();
                    return true;
                }

                return false;
            }, TimeSpan.FromSeconds(30), "a send stored by the broker on the first address");
            Assert.InRange(watch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(20));

            SendReceipt undecided = await producer.BeginTransaction().SendAsync(new ProducerMessage(topic, "checked-on-first"));
            await E2E.EventuallyAsync(() => checker.Calls.Any(c => c.TransactionId == undecided.TransactionId && c.Result == TransactionResolution.Commit),
                Wait, "the first broker's check-back answered over the producer's Telemetry stream, moved back there");
        }
        finally
        {
            await silent.DisposeAsync();
        }
    }

    [Fact]
    public async Task When_no_address_answers_the_error_names_every_address()
    {
        string endpoints = $"127.0.0.1:{ClosedPort()};127.0.0.1:{ClosedPort()}";
        var ex = await Assert.ThrowsAnyAsync<ClientException>(() =>
            Producer.StartAsync(ProducerOptions.Default with { Endpoints = endpoints, Topics = [E2E.Unique("fo-none")], RequestTimeout = TimeSpan.FromSeconds(1) }));
        foreach (string address in endpoints.Split(';'))
        {
            Assert.Contains(address, ex.Message);
        }
    }
}
