using System.IO.Pipelines;

namespace HalfMsg.Broker.Tests.Infrastructure;

/// <summary>A connection's two directions as in-memory pipes: a Remoting session driven without a socket or Kestrel.</summary>
public sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
{
    public PipeReader Input { get; } = input;
    public PipeWriter Output { get; } = output;
}
