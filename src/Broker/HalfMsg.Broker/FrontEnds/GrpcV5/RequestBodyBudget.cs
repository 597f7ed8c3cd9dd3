using System.Buffers;
using System.IO.Pipelines;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Http.Features;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// Bounds the request-body bytes one HTTP/2 connection can make the broker hold. grpc-dotnet keeps reading a message
/// until its declared length has arrived, and HTTP/2 flow control reopens a stream's window as it reads, so without a
/// bound one connection with 200 streams could park 200 × 5 MiB of partial messages (measured: +500 MiB for 100
/// streams). Every stream's body reader counts what it holds (read, not yet consumed) against its connection's budget;
/// a read that would take the connection past it resets that stream and frees what it held.
/// </summary>
internal sealed class RequestBodyBudget(long limit)
{
    private static readonly object Key = new();
    private long _held;

    public long Limit => limit;
    public long Held => Interlocked.Read(ref _held);

    /// <summary>The budget of the request's connection (one per connection, created on first use).</summary>
    public static RequestBodyBudget Of(HttpContext context, long limit) => PerConnection.GetOrAdd(context, Key, () => new RequestBodyBudget(limit));

    /// <summary>Adds <paramref name="delta"/> bytes; false (and nothing added) when growing would pass the limit.</summary>
    public bool TryChange(long delta)
    {
        if (delta <= 0)
        {
            Interlocked.Add(ref _held, delta);
            return true;
        }
        long now = Interlocked.Add(ref _held, delta);
        if (now <= limit) return true;
        Interlocked.Add(ref _held, -delta);
        return false;
    }

    /// <summary>Puts a counting reader in front of the request body for the rest of the request.</summary>
    public static Reader Install(HttpContext context, RequestBodyBudget budget)
    {
        var reader = new Reader(context.Request.BodyReader, budget, context);
        context.Features.Set<IRequestBodyPipeFeature>(new PipeFeature(reader));
        return reader;
    }

    private sealed class PipeFeature(PipeReader reader) : IRequestBodyPipeFeature
    {
        public PipeReader Reader => reader;
    }

    /// <summary>The request body as grpc-dotnet reads it, with what this stream holds counted on the connection.</summary>
    internal sealed class Reader(PipeReader inner, RequestBodyBudget budget, HttpContext context) : PipeReader
    {
        private long _held;
        private ReadOnlySequence<byte> _last;

        public override async ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
        {
            var result = await inner.ReadAsync(cancellationToken).ConfigureAwait(false);
            Account(result);
            return result;
        }

        public override bool TryRead(out ReadResult result)
        {
            if (!inner.TryRead(out result)) return false;
            Account(result);
            return true;
        }

        private void Account(in ReadResult result)
        {
            _last = result.Buffer;
            long now = result.Buffer.Length;
            if (budget.TryChange(now - _held))
            {
                _held = now;
                return;
            }
            // Over the connection's budget: this stream is reset and holds nothing any more.
            Release();
            context.Abort();
            throw new IOException($"the connection holds more than {budget.Limit} bytes of unfinished requests; this stream was reset");
        }

        public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
        {
            long remaining = _last.Slice(consumed).Length;
            budget.TryChange(remaining - _held); // never grows here: what remains is part of what was read
            _held = remaining;
            _last = default;
            inner.AdvanceTo(consumed, examined);
        }

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null)
        {
            Release();
            inner.Complete(exception);
        }

        /// <summary>Gives back whatever this stream still holds (the request ended).</summary>
        public void Release()
        {
            budget.TryChange(-_held);
            _held = 0;
        }
    }
}

/// <summary>One object per connection, kept in its connection items (without them, as in a test: a new one per call).</summary>
internal static class PerConnection
{
    public static T GetOrAdd<T>(HttpContext? context, object key, Func<T> create) where T : class
    {
        var items = context?.Features.Get<IConnectionItemsFeature>()?.Items;
        if (items is null) return create();
        lock (items)
        {
            if (items.TryGetValue(key, out var existing) && existing is T found) return found;
            T made = create();
            items[key] = made;
            return made;
        }
    }
}
