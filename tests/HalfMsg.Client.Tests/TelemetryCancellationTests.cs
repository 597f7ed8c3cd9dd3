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

    private sealed class SlowTelemetryWrites() : DelegatingHandler(new SocketsHttpHandler { UseProxy = false, EnableMultipleHttp2Connections = true })
    {
        private volatile TaskCompletionSource? _gate;
        private int _streams;
        private long _firstStreamRead;

        public TaskCompletionSource Stalled { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int TelemetryStreams => Volatile.Read(ref _streams);

        /// <summary>Bytes the client has read from the broker on the first Telemetry stream.</summary>
        public long FirstStreamBytesRead => Interlocked.Read(ref _firstStreamRead);

        public void Stall() => _gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Release() => _gate?.TrySetResult();

        private async Task WaitAsync()
        {
            if (_gate is { } gate && !gate.Task.IsCompleted)
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
    private sealed class CountedContent : HttpContent
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

    private sealed class CountedStream(Stream inner, Action<int> read) : Stream
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

    private sealed class GatedContent : HttpContent
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

    private sealed class GatedStream(Stream inner, Func<Task> gate) : Stream
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
}
