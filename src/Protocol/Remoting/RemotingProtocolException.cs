using System.Diagnostics.CodeAnalysis;

namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// A frame or header that cannot be decoded. The connection that sent it is closed (the stream is no longer in sync);
/// it is never a business error.
/// </summary>
public sealed class RemotingProtocolException(string message) : Exception(message)
{
    [DoesNotReturn]
    public static void Throw(string message) => throw new RemotingProtocolException(message);
}
