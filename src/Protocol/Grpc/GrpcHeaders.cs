namespace HalfMsg.Protocol.Grpc;

/// <summary>HTTP/2 header names and values used by gRPC (grpc/doc/PROTOCOL-HTTP2.md). Names are
/// lower-case because HTTP/2 requires lower-case field names.</summary>
public static class GrpcHeaders
{
    /// <summary>Trailer carrying the decimal <see cref="GrpcStatusCode"/>.</summary>
    public const string Status = "grpc-status";

    /// <summary>Trailer carrying a percent-encoded status message (see <see cref="GrpcMessageEncoding"/>).</summary>
    public const string Message = "grpc-message";

    /// <summary>Request header carrying the deadline (see <see cref="GrpcTimeout"/>).</summary>
    public const string Timeout = "grpc-timeout";

    /// <summary>Message compression algorithm; we only support identity.</summary>
    public const string Encoding = "grpc-encoding";

    /// <summary>Compression algorithms the peer accepts.</summary>
    public const string AcceptEncoding = "grpc-accept-encoding";

    /// <summary>Content-Type header name.</summary>
    public const string ContentType = "content-type";

    /// <summary>Content-Type for protobuf-encoded gRPC; peers may append <c>+proto</c> or <c>;params</c>.</summary>
    public const string ContentTypeValue = "application/grpc";

    /// <summary>TE header name; gRPC clients must send <c>te: trailers</c>.</summary>
    public const string TE = "te";

    /// <summary>Required value of the <see cref="TE"/> header.</summary>
    public const string TEValue = "trailers";

    /// <summary>Returns true when <paramref name="contentType"/> is <c>application/grpc</c>, optionally
    /// followed by <c>+proto</c>/<c>+json</c>-style subtypes or <c>;</c> parameters.</summary>
    public static bool IsGrpcContentType(string? contentType)
    {
        if (contentType is null || !contentType.StartsWith(ContentTypeValue, StringComparison.OrdinalIgnoreCase))
        {
            return false;
        }

        return contentType.Length == ContentTypeValue.Length
            || contentType[ContentTypeValue.Length] is '+' or ';';
    }
}
