using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ConsumerClient;
using HalfMsg.ProducerClient;
using ProducerMessage = HalfMsg.ProducerClient.Message;

namespace HalfMsg.Client.Tests;

/// <summary>One caller's cancellation and the shared Telemetry stream (found by review 2026-12-05).</summary>
[Trait("Category", "E2E")]
public sealed class TelemetryCancellationTests : IAsyncLifetime
{
    private InProcessBroker _broker = null!;

    private string Endpoint => _broker.Endpoint;

    public async Task InitializeAsync() => _broker = await InProcessBroker.StartAsync("cctel");

    public async Task DisposeAsync() => await _broker.DisposeAsync();

    /// <summary>
    /// A send to a topic the producer has not declared re-sends the Settings on the Telemetry stream. Until 2026-12-05
    /// that write had the caller's token; grpc-dotnet registers a write's token to cancel the whole call, so a caller
    /// that cancelled while that write waited (the connection's flow-control window taken by large sends, say) ended the
    /// producer's one Telemetry stream to the broker: check-backs to it failed until it had reconnected.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)] // control: the same stall, no cancellation
    public async Task A_cancelled_send_does_not_end_the_shared_Telemetry_stream(bool cancelIt)
    {
        string first = E2E.Unique("cc-tel");
        using var slow = new SlowTelemetryWrites();
        await using Producer producer = await Producer.StartWithHandlerAsync(ProducerOptions.Default with
        {
            Endpoints = Endpoint, Topics = [first],
        }, slow, CancellationToken.None);
        Assert.Equal(1, slow.TelemetryStreams);

        slow.Stall();                                     // the next Telemetry write waits
        using var cancel = new CancellationTokenSource();
        long readBefore;
        try
        {
            Task send = producer.SendAsync(new ProducerMessage(E2E.Unique("cc-tel-new"), "x"), cancel.Token);
            await slow.Stalled.Task.WaitAsync(TimeSpan.FromSeconds(30)); // the Settings write for the new topic
            if (cancelIt)
            {
                cancel.Cancel(); // a call that took the token is cancelled inside Cancel(), by the token's callbacks
                readBefore = slow.FirstStreamBytesRead;
            }
            else
            {
                await Task.Delay(500);
                readBefore = slow.FirstStreamBytesRead;
                slow.Release();
            }

            // Sent or cancelled, either way: what counts is whether the shared stream survived.
            await Record.ExceptionAsync(() => send.WaitAsync(TimeSpan.FromSeconds(30)));
        }
        finally
        {
            slow.Release();
        }

        // Not a pause: wait until the first stream carried an answer after the cancel (the broker answers the released
        // Settings write, and re-pushes its Settings 1.5 s later), or a second stream was opened. A cancelled stream
        // (the bug) reads nothing more, and its session re-opens one after its 1 s backoff.
        await E2E.EventuallyAsync(() => slow.FirstStreamBytesRead > readBefore || slow.TelemetryStreams > 1, TimeSpan.FromSeconds(30),
            "an answer on the first Telemetry stream, or a second stream");
        Assert.Equal(1, slow.TelemetryStreams);           // before 2026-12-05: 2 (the stream was cancelled and re-opened)
    }
}
