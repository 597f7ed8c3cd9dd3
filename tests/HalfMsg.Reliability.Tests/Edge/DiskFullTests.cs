using System.Collections.Concurrent;
using System.Text;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using Xunit.Abstractions;

namespace HalfMsg.Reliability.Tests.Edge;

/// <summary>
/// Issue 13 item 3, against the real broker process: its data dir is a 32 MiB tmpfs, 12 MiB of it taken by a ballast
/// file; mixed transactional traffic fills the rest. The broker must refuse new messages with RocketMQ's answer (never
/// acknowledge one it cannot keep), stay up and readable, say "disk-full" on /health and in /metrics, and accept sends
/// again by itself once the ballast is deleted. After a kill -9 and restart every acknowledged commit and send is
/// delivered, and nothing refused or rolled back ever is.
/// </summary>
[Collection("edge")]
public sealed class DiskFullTests(ITestOutputHelper output)
{
    private const string Topic = "diskfull";
    private static readonly byte[] Body = new byte[16 * 1024];

    private sealed class Model
    {
        public readonly ConcurrentDictionary<string, byte> Acked = new();      // send or commit answered OK
        public readonly ConcurrentDictionary<string, byte> RolledBack = new(); // rollback answered OK
        public readonly ConcurrentDictionary<string, byte> Refused = new();    // send answered disk full
        public readonly ConcurrentQueue<string> Unexpected = new();
        public long AckedAfterResume;
        public volatile bool Resumed;
    }

    [TmpfsFact]
    public async Task Filled_under_load_the_broker_refuses_sends_stays_readable_says_disk_full_and_resumes_when_space_returns_losing_nothing()
    {
        using var fs = Tmpfs.Mount(32);
        string ballast = Path.Combine(fs.Path, "ballast");
        await File.WriteAllBytesAsync(ballast, new byte[12 << 20]);
        var broker = await BrokerProcess.StartInDataDirAsync(Path.Combine(fs.Path, "data"), new Dictionary<string, string>(),
            "--disk-min-free", "4MiB", "--disk-max-used-ratio", "1");
        try
        {
            await RunAsync(broker, ballast);
        }
        catch
        {
            output.WriteLine(broker.Output);
            throw;
        }
        finally
        {
            broker.Kill();
            await broker.DisposeAsync();
        }
    }

    private async Task RunAsync(BrokerProcess broker, string ballast)
    {
        var model = new Model();
        var checker = new IntentChecker();
        await using var producer = await Producer.StartAsync(new ProducerOptions
        {
            Endpoints = broker.Endpoint, Topics = [Topic], TransactionChecker = checker, RequestTimeout = TimeSpan.FromSeconds(10),
        });
        using var stop = new CancellationTokenSource();
        int next = 0;
        var load = Enumerable.Range(0, 4).Select(w => Task.Run(() => DriveAsync(producer, checker, model, w == 3, () => Interlocked.Increment(ref next), stop.Token))).ToArray();

        // 1. Fill: sends are refused with the disk-full answer, not failed or falsely acknowledged.
        await Admin.WaitForAsync(() => Task.FromResult(model.Refused.Count >= 20 || !model.Unexpected.IsEmpty), TimeSpan.FromSeconds(180), "20 refused sends");
        Assert.True(model.Unexpected.IsEmpty, "unexpected failures while filling:\n" + string.Join("\n", model.Unexpected.Take(10)));
        int ackedBeforeFull = model.Acked.Count;
        Assert.True(ackedBeforeFull > 50, $"only {ackedBeforeFull} messages fit before the disk was full");

        // 2. While full: /health and /metrics say so; the process is up; stored messages can be received and acked.
        var (status, health) = await Admin.GetJsonAsync(broker.AdminUrl + "/health");
        Assert.Equal(200, status);
        Assert.Equal("disk-full", health.GetProperty("status").GetString());
        Assert.False(health.GetProperty("writable").GetBoolean());
        Assert.Contains("disk is full", health.GetProperty("reason").GetString());
        string metrics = await Admin.GetTextAsync(broker.AdminUrl + "/metrics");
        Assert.Equal(1, Admin.Metric(metrics, "halfmsg_disk_full"));
        Assert.True(Admin.Metric(metrics, "halfmsg_messages_refused_disk_full_total") >= 20, "refusals not counted in /metrics");
        output.WriteLine($"full after {ackedBeforeFull} acknowledged; health: {health}");

        var delivered = new ConcurrentDictionary<string, byte>();
        await using (var consumer = await StartConsumerAsync(broker))
        {
            int drainedWhileFull = await DrainAsync(consumer, delivered, TimeSpan.FromSeconds(2));
            Assert.True(drainedWhileFull > 0, "nothing could be received and acked while the disk was full");
            output.WriteLine($"received and acked {drainedWhileFull} while full");
        }

        // RocketMQ 4 producers get SERVICE_NOT_AVAILABLE (14), which they retry, with the reason.
        await using (var remoting = await RemotingTestClient.ConnectAsync(broker.RemotingPort))
        {
            var r = await remoting.InvokeAsync(RequestCode.SendMessageV2, RemotingBroker.SendHeader("PG", Topic, RemotingBroker.Props(keys: "remoting-refused")),
                Encoding.UTF8.GetBytes("x"));
            Assert.Equal(ResponseCode.ServiceNotAvailable, r.Code);
            Assert.Contains("disk is full", r.Remark);
        }
        Assert.True(model.Unexpected.IsEmpty, "unexpected failures while full:\n" + string.Join("\n", model.Unexpected.Take(10)));

        // 3. Space returns: the broker notices by itself, says ready, and acknowledged sends flow again.
        File.Delete(ballast);
        await Admin.WaitForAsync(async () => (await Admin.GetJsonAsync(broker.AdminUrl + "/health")).Body.GetProperty("status").GetString() == "ready",
            TimeSpan.FromSeconds(30), "/health ready after the ballast was deleted");
        model.Resumed = true;
        await Admin.WaitForAsync(() => Task.FromResult(Interlocked.Read(ref model.AckedAfterResume) >= 50 || !model.Unexpected.IsEmpty),
            TimeSpan.FromSeconds(120), "50 acknowledged messages after space returned");
        stop.Cancel();
        await Task.WhenAll(load);
        Assert.True(model.Unexpected.IsEmpty, "unexpected failures:\n" + string.Join("\n", model.Unexpected.Take(10)));
        Assert.Equal(0, Admin.Metric(await Admin.GetTextAsync(broker.AdminUrl + "/metrics"), "halfmsg_disk_full"));

        // 4. kill -9, restart on the same tmpfs: every acknowledged message is delivered; nothing refused or rolled back is.
        await broker.RestartAsync();
        await using (var consumer = await StartConsumerAsync(broker))
        {
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(120);
            while (model.Acked.Keys.Any(k => !delivered.ContainsKey(k)) && DateTime.UtcNow < deadline)
                await DrainAsync(consumer, delivered, TimeSpan.FromSeconds(3));
            // Leftovers (halves decided by check-back) get a moment to show up if they would.
            await DrainAsync(consumer, delivered, TimeSpan.FromSeconds(2));
        }
        var lost = model.Acked.Keys.Where(k => !delivered.ContainsKey(k)).ToList();
        Assert.True(lost.Count == 0, $"{lost.Count} of {model.Acked.Count} acknowledged messages never delivered, e.g. {string.Join(", ", lost.Take(5))}");
        var falseAcks = model.Refused.Keys.Where(delivered.ContainsKey).ToList();
        Assert.True(falseAcks.Count == 0, $"refused messages delivered: {string.Join(", ", falseAcks.Take(5))}");
        Assert.False(delivered.ContainsKey("remoting-refused"));
        var rolledBackDelivered = model.RolledBack.Keys.Where(delivered.ContainsKey).ToList();
        Assert.True(rolledBackDelivered.Count == 0, $"rolled-back messages delivered: {string.Join(", ", rolledBackDelivered.Take(5))}");
        output.WriteLine($"acknowledged {model.Acked.Count} (after resume {model.AckedAfterResume}), refused {model.Refused.Count}, " +
                         $"rolled back {model.RolledBack.Count}, delivered {delivered.Count}");
    }

    private static async Task DriveAsync(Producer producer, IntentChecker checker, Model model, bool normal, Func<int> next, CancellationToken ct)
    {
        while (!ct.IsCancellationRequested)
        {
            int n = next();
            string key = $"k{n}";
            var message = new Message(Topic, Body) { Keys = [key] };
            try
            {
                if (normal)
                {
                    await producer.SendAsync(message, ct);
                    Acked(model, key);
                    continue;
                }
                bool commit = n % 5 != 0;
                checker.CommitIntent[key] = commit;
                var tx = producer.BeginTransaction();
                await tx.SendAsync(message, ct);
                if (commit)
                {
                    await tx.CommitAsync(ct);
                    Acked(model, key);
                }
                else
                {
                    await tx.RollbackAsync(ct);
                    model.RolledBack[key] = 0;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return;
            }
            catch (InternalErrorException ex) when (ex.Message.Contains("disk is full", StringComparison.Ordinal))
            {
                // RocketMQ's answer for a store that is not writable; the producer backs off and tries a new message.
                model.Refused[key] = 0;
                try { await Task.Delay(50, ct); } catch (OperationCanceledException) { return; }
            }
            catch (Exception ex)
            {
                model.Unexpected.Enqueue($"{key}: {ex.GetType().Name}: {ex.Message}");
                return;
            }
        }
    }

    private static void Acked(Model model, string key)
    {
        model.Acked[key] = 0;
        if (model.Resumed) Interlocked.Increment(ref model.AckedAfterResume);
    }

    private static Task<SimpleConsumer> StartConsumerAsync(BrokerProcess broker) => SimpleConsumer.StartAsync(new SimpleConsumerOptions
    {
        Endpoints = broker.Endpoint, ConsumerGroup = "g-diskfull", Subscriptions = new Dictionary<string, string> { [Topic] = "*" },
        AwaitDuration = TimeSpan.FromMilliseconds(500), RequestTimeout = TimeSpan.FromSeconds(10),
    });

    /// <summary>Receives and acks until nothing arrives for <paramref name="quiet"/>; returns how many were received.</summary>
    private static async Task<int> DrainAsync(SimpleConsumer consumer, ConcurrentDictionary<string, byte> delivered, TimeSpan quiet)
    {
        int total = 0;
        var idleSince = DateTime.UtcNow;
        while (DateTime.UtcNow - idleSince < quiet)
        {
            var batch = await consumer.ReceiveAsync(32, TimeSpan.FromSeconds(30));
            if (batch.Count == 0) continue;
            idleSince = DateTime.UtcNow;
            total += batch.Count;
            foreach (var m in batch) foreach (var k in m.Keys) delivered[k] = 0;
            await consumer.AckAsync(batch);
        }
        return total;
    }
}
