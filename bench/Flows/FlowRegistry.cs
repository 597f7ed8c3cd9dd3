using HalfMsg.Bench.Peers;

namespace HalfMsg.Bench.Flows;

/// <summary>The flows <c>e2e</c> runs after the raw-log ceiling, in this order.</summary>
public static class FlowRegistry
{
    public static IReadOnlyList<IFlowBench> Create(BenchOptions options) =>
    [
        // ─── EXTENSION POINT ────────────────────────────────────────────────────────────────────────────────
        // Plug the broker end-to-end flows in here, e.g.
        //     new BrokerTransactionalFlowBench(),   // HalfMsg.Broker.dll started via BrokerProcess, driven by our .NET clients
        // BrokerProcess (Flows/BrokerProcess.cs) starts `dotnet <HalfMsg.Broker.dll> --data-dir … --grpc-port …`
        // on a free port and stops it by pid. Each flow returns a BenchResult (Kind = Flow); the table then shows
        // its ratio to the ceiling and to RabbitMQ.
        // ────────────────────────────────────────────────────────────────────────────────────────────────────
        new RabbitMqFlowBench(),
    ];
}
