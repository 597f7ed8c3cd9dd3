namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>An HTTP handler whose Telemetry request writes can be stalled (<see cref="SlowTelemetryWrites.Stall"/>, until
/// <see cref="SlowTelemetryWrites.Release"/>); it counts the Telemetry streams and the bytes read on the first one.</summary>
internal sealed class SlowTelemetryWrites() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
{
    private volatile TaskCompletionSource? _gate;
    private int _streams;
    private long _firstStreamRead;
    private int _oneShot; // 0: Stall() stalls every write; 1: StallOne() armed; 2: its one write taken

    public TaskCompletionSource Stalled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public int TelemetryStreams => Volatile.Read(ref _streams);

    /// <summary>Bytes the client has read from the broker on the first Telemetry stream.</summary>
    public long FirstStreamBytesRead => Interlocked.Read(ref _firstStreamRead);

    public void Stall()
    {
        Volatile.Write(ref _oneShot, 0);
        _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Stalls only the next Telemetry write (of any stream); the writes after it go through.</summary>
    public void StallOne()
    {
        Volatile.Write(ref _oneShot, 1);
        _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public void Release() => _gate?.TrySetResult();

    private async Task WaitAsync()
    {
        if (_gate is { } gate && !gate.Task.IsCompleted && (Volatile.Read(ref _oneShot) == 0 || Interlocked.Exchange(ref _oneShot, 2) == 1))
        {
            Stalled.TrySetResult();
            await gate.Task;
        }
    }

    protected override async Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
    {
        int stream = 0;
        if (request.RequestUri?.AbsolutePath.EndsWith("/Telemetry", StringComparison.Ordinal) == true && request.Content is { } content)
        {
            stream = Interlocked.Increment(ref _streams);
            request.Content = new GatedContent(content, WaitAsync);
        }

        HttpResponseMessage response = await base.SendAsync(request, cancellationToken);
        if (stream == 1)
        {
            response.Content = new CountedContent(response.Content, n => Interlocked.Add(ref _firstStreamRead, n));
        }

        return response;
    }
}

/// <summary>A response body that counts the bytes read from it.</summary>
internal sealed class CountedContent : HttpContent
{
    private readonly HttpContent _inner;
    private readonly Action<int> _read;

    public CountedContent(HttpContent inner, Action<int> read)
    {
        _inner = inner;
        _read = read;
        foreach (var header in inner.Headers)
        {
            Headers.TryAddWithoutValidation(header.Key, header.Value);
        }
    }

    protected override async Task<Stream> CreateContentReadStreamAsync() => new CountedStream(await _inner.ReadAsStreamAsync(), _read);

    protected override async Task<Stream> CreateContentReadStreamAsync(CancellationToken cancellationToken) =>
        new CountedStream(await _inner.ReadAsStreamAsync(cancellationToken), _read);

    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) => _inner.CopyToAsync(stream);

    protected override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            _inner.Dispose();
        }

        base.Dispose(disposing);
    }
}

internal sealed class CountedStream(Stream inner, Action<int> read) : Stream
{
    public override bool CanRead => true;
    public override bool CanSeek => false;
    public override bool CanWrite => false;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() { }
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

    public override int Read(byte[] buffer, int offset, int count) => Counted(inner.Read(buffer, offset, count));

    public override async ValueTask<int> ReadAsync(Memory<byte> buffer, CancellationToken cancellationToken = default) =>
        Counted(await inner.ReadAsync(buffer, cancellationToken));

    public override Task<int> ReadAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        ReadAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    protected override void Dispose(bool disposing)
    {
        if (disposing)
        {
            inner.Dispose();
        }

        base.Dispose(disposing);
    }

    private int Counted(int n)
    {
        if (n > 0)
        {
            read(n);
        }

        return n;
    }
}

internal sealed class GatedContent : HttpContent
{
    private readonly HttpContent _inner;
    private readonly Func<Task> _gate;

    public GatedContent(HttpContent inner, Func<Task> gate)
    {
        _inner = inner;
        _gate = gate;
        foreach (var header in inner.Headers)
        {
            Headers.TryAddWithoutValidation(header.Key, header.Value);
        }
    }

    protected override Task SerializeToStreamAsync(Stream stream, System.Net.TransportContext? context) =>
        _inner.CopyToAsync(new GatedStream(stream, _gate));

    protected override bool TryComputeLength(out long length)
    {
        length = 0;
        return false;
    }
}

internal sealed class GatedStream(Stream inner, Func<Task> gate) : Stream
{
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => throw new NotSupportedException();
    public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
    public override void Write(byte[] buffer, int offset, int count) => inner.Write(buffer, offset, count);

    public override async ValueTask WriteAsync(ReadOnlyMemory<byte> buffer, CancellationToken cancellationToken = default)
    {
        await gate().WaitAsync(cancellationToken);
        await inner.WriteAsync(buffer, cancellationToken);
    }

    public override Task WriteAsync(byte[] buffer, int offset, int count, CancellationToken cancellationToken) =>
        WriteAsync(buffer.AsMemory(offset, count), cancellationToken).AsTask();

    public override Task FlushAsync(CancellationToken cancellationToken) => inner.FlushAsync(cancellationToken);
}
