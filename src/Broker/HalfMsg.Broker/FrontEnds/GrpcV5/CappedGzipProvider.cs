using System.IO.Compression;
using Grpc.Core;
using Grpc.Net.Compression;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// gzip for gRPC messages (<c>grpc-encoding: gzip</c>) that stops inflating at a cap. grpc-dotnet's own provider
/// inflates the whole message before comparing it with the receive limit, so a 5 MiB request of gzip could occupy
/// gigabytes first. A unary request is one message, so the cap is per request. Going over it ends the call with
/// RESOURCE_EXHAUSTED, which grpc-dotnet reports without an error log.
/// </summary>
internal sealed class CappedGzipProvider(int maxInflatedBytes) : ICompressionProvider
{
    public string EncodingName => "gzip";

    public Stream CreateCompressionStream(Stream stream, CompressionLevel? compressionLevel)
        => new GZipStream(stream, compressionLevel ?? CompressionLevel.Fastest, leaveOpen: true);

    public Stream CreateDecompressionStream(Stream stream)
        => new CappedReadStream(new GZipStream(stream, CompressionMode.Decompress), maxInflatedBytes);

    private sealed class CappedReadStream(Stream inner, long cap) : Stream
    {
        private long _read;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => _read; set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count) => Count(inner.Read(buffer, offset, count));

        public override int Read(Span<byte> buffer) => Count(inner.Read(buffer));

        public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default)
            => Count(await inner.ReadAsync(buffer, cancellationToken).ConfigureAwait(false));

        public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken)
            => ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

        private int Count(int n)
        {
            _read += n;
            if (_read > cap)
            {
                throw new RpcException(new Status(StatusCode.ResourceExhausted, $"the request inflates to more than {cap} bytes"));
            }

            return n;
        }

        public override void Flush() => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            if (disposing)
            {
                inner.Dispose();
            }

            base.Dispose(disposing);
        }
    }
}
