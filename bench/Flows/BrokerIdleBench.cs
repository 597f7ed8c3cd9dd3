using System.Diagnostics;
using HalfMsg.Bench.Infrastructure;
using HalfMsg.Bench.Reporting;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;

namespace HalfMsg.Bench.Flows;

/// <summary>
/// What an idle broker costs: a broker process with a connected <see cref="Producer"/> (heartbeats) and a
/// <see cref="SimpleConsumer"/> long-polling an empty topic, nothing sent. After a settling period (clients connected,
/// code compiled), the broker's CPU (user + system) and context switches over a window, and this process's CPU over
/// the same window (the idle clients). A broker that nobody uses should cost next to nothing; every timer or loop that
/// wakes it shows here.
/// </summary>
public sealed class BrokerIdleBench : IFlowBench
{
    public string Name => "broker idle";

    private const string Topic = "bench-idle";

    public async Task<BenchResult> RunAsync(BenchOptions o, CancellationToken outer)
    {
        TimeSpan settle = TimeSpan.FromSeconds(o.Quick ? 3 : 10), window = TimeSpan.FromSeconds(o.Quick ? 5 : 20);
        var result = new BenchResult
        {
            Name = Name,
            Kind = BenchKind.Flow,
            Description = $"Broker process with one connected Producer and one SimpleConsumer long-polling an empty topic, nothing sent; " +
                          $"after {settle.TotalSeconds:0} s, CPU and context switches over {window.TotalSeconds:0} s (CPU in % of one core).",
        };
        if (BrokerProcess.FindBrokerDll() is null)
            return BenchResult.Skipped(Name, BenchKind.Flow, "HalfMsg.Broker.dll not found");

        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(outer);
        timeout.CancelAfter(o.FlowTimeout);
        var ct = timeout.Token;
        var (broker, error) = await BrokerProcess.TryStartAsync(new BrokerStartOptions(), ct);
        if (broker is null) return BenchResult.Skipped(Name, BenchKind.Flow, error!);
        await using (broker)
        {
            await using var producer = await Producer.StartAsync(new ProducerOptions { Endpoints = broker.Endpoint, Topics = [Topic] }, ct);
            await using var consumer = await SimpleConsumer.StartAsync(new SimpleConsumerOptions
            {
                Endpoints = broker.Endpoint,
                ConsumerGroup = "bench-idle-group",
                Subscriptions = new Dictionary<string, string> { [Topic] = "*" },
                AwaitDuration = TimeSpan.FromSeconds(20),
                RequestTimeout = TimeSpan.FromSeconds(30),
            }, ct);
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
            long receiveErrors = 0;
            Task polling = Task.Run(async () =>
            {
                while (!stop.IsCancellationRequested)
                {
                    try { await consumer.ReceiveAsync(32, TimeSpan.FromSeconds(60), stop.Token); }
                    catch (OperationCanceledException) when (stop.IsCancellationRequested) { return; }
                    catch (Exception)
                    {
                        // Counted and reported: a loop that fails at once would measure itself, not an idle broker.
                        Interlocked.Increment(ref receiveErrors);
                        try { await Task.Delay(100, stop.Token); } catch (OperationCanceledException) { return; }
                    }
                }
            }, CancellationToken.None);

            await Task.Delay(settle, ct);
            double? brokerBefore = broker.CpuSeconds();
            long? switchesBefore = CpuMeter.ContextSwitches(broker.Pid);
            double selfBefore = CpuMeter.SelfSeconds();
            var sw = Stopwatch.StartNew();
            await Task.Delay(window, ct);
            double seconds = sw.Elapsed.TotalSeconds;
            double? brokerAfter = broker.CpuSeconds();
            long? switchesAfter = CpuMeter.ContextSwitches(broker.Pid);
            double selfAfter = CpuMeter.SelfSeconds();
            await stop.CancelAsync();
            try { await polling; } catch (Exception) { /* the loop ends with the token */ }

            if (brokerBefore is not double b0 || brokerAfter is not double b1)
                return BenchResult.Skipped(Name, BenchKind.Flow, "broker CPU time not readable (/proc)");
            result.Metrics["broker_idle_cpu_pct"] = 100 * (b1 - b0) / seconds;
            result.Metrics["client_idle_cpu_pct"] = 100 * (selfAfter - selfBefore) / seconds;
            if (switchesBefore is long s0 && switchesAfter is long s1)
                result.Metrics["broker_idle_context_switches_per_s"] = (s1 - s0) / seconds;
            result.Summary = $"broker {result.Get("broker_idle_cpu_pct"):0.0} % of a core" +
                             (result.Metrics.TryGetValue("broker_idle_context_switches_per_s", out double cs) ? $", {cs:N0} context switches/s" : "") +
                             $"; idle clients (this process) {result.Get("client_idle_cpu_pct"):0.0} %" +
                             (receiveErrors > 0 ? $"; {receiveErrors} failed receives (the figures include their retries)" : "");
            result.Metrics["receive_errors"] = receiveErrors;
        }

        return result;
    }
}
