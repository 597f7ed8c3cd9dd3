using Apache.Rocketmq.V2;
using Grpc.Core;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>A Telemetry client that reads when told to: each write waits for a release of <see cref="Gate"/> (never
/// released: a client that stopped reading). Shared by the Telemetry session tests that count writes started and
/// finished.</summary>
public sealed class GatedTelemetryWriter : IServerStreamWriter<TelemetryCommand>
{
    public readonly SemaphoreSlim Gate = new(0);
    public int Started;
    public int Finished;
    public WriteOptions? WriteOptions { get; set; }
    public Task WriteAsync(TelemetryCommand message) => WriteAsync(message, CancellationToken.None);

    public async Task WriteAsync(TelemetryCommand message, CancellationToken ct)
    {
        Interlocked.Increment(ref Started);
        await Gate.WaitAsync(ct);
        Interlocked.Increment(ref Finished);
    }
}
