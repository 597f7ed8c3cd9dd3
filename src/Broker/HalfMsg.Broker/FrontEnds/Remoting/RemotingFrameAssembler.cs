using System.Buffers;
using System.Buffers.Binary;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// Collects one Remoting frame larger than <see cref="Threshold"/> as it arrives, so that what a peer can make the broker
/// hold is bounded. A frame left in the transport's pipe until complete could hold up to 16 MiB per connection for as
/// long as the peer liked (one byte every two minutes kept it open), with a connection cap of 10,000 and no
/// authentication before the frame is whole. A large frame is consumed from the pipe instead, into a buffer that grows
/// with what has arrived, charged against one budget for all connections; it must keep arriving, at a minimum rate.
/// </summary>
internal sealed class RemotingFrameAssembler(PartialFrameBudget budget, RemotingOptions options, TimeProvider time)
{
    /// <summary>Frames up to this size (prefix included) stay in the pipe until complete, as before.</summary>
    public const int Threshold = 256 * 1024;

    private byte[]? _buffer;
    private int _filled;
    private int _total;
    private DateTimeOffset _startedAt;

    /// <summary>Whether a large frame is being collected.</summary>
    public bool Active => _buffer is not null;

    /// <summary>
    /// Starts collecting when <paramref name="buffer"/> begins with a frame of more than <see cref="Threshold"/> bytes
    /// that is not all there (its prefix already checked by <see cref="RemotingFrame.TryReadFrame"/>).
    /// </summary>
    public bool TryStart(ReadOnlySequence<byte> buffer)
    {
        if (buffer.Length < 4) return false;
        Span<byte> prefix = stackalloc byte[4];
        buffer.Slice(0, 4).CopyTo(prefix);
        long total = 4L + BinaryPrimitives.ReadInt32BigEndian(prefix);
        if (total <= Threshold || total > 4L + options.MaxFrameLength) return false;
        _total = (int)total;
        _filled = 0;
        _buffer = [];
        _startedAt = time.GetUtcNow();
        return true;
    }

    /// <summary>Consumes what <paramref name="buffer"/> holds of the frame; true with the whole frame once complete.</summary>
    public bool Append(ref ReadOnlySequence<byte> buffer, out ReadOnlySequence<byte> frame)
    {
        int take = (int)Math.Min(_total - _filled, buffer.Length);
        Grow(_filled + take);
        buffer.Slice(0, take).CopyTo(_buffer.AsSpan(_filled));
        _filled += take;
        buffer = buffer.Slice(take);
        frame = default;
        if (_filled < _total)
        {
            var elapsed = time.GetUtcNow() - _startedAt;
            if (elapsed > options.FrameGracePeriod && _filled < elapsed.TotalSeconds * options.MinFrameDataRate)
                RemotingProtocolException.Throw($"a frame of {_total} bytes arrived at less than {options.MinFrameDataRate} bytes/s ({_filled} bytes in {elapsed.TotalSeconds:0.#} s)");
            return false;
        }
        frame = new ReadOnlySequence<byte>(_buffer!, 0, _total);
        return true;
    }

    /// <summary>Drops the frame (done with it, or the connection closed) and gives its bytes back to the budget.</summary>
    public void Reset()
    {
        if (_buffer is null) return;
        budget.Release(_buffer.Length);
        _buffer = null;
    }

    private void Grow(int needed)
    {
        if (needed <= _buffer!.Length) return;
        // Doubling: memory follows what arrived, not what the prefix declared.
        int size = (int)Math.Min(_total, Math.Max(needed, Math.Max(Threshold, 2L * _buffer.Length)));
        if (!budget.TryCharge(size - _buffer.Length))
            RemotingProtocolException.Throw($"[OVERLOAD]large frames being received on all connections hold {budget.Used} bytes, the limit is {budget.Limit}");
        var grown = GC.AllocateUninitializedArray<byte>(size);
        _buffer.AsSpan(0, _filled).CopyTo(grown);
        _buffer = grown;
    }
}

/// <summary>Bytes held by large frames being received, on all Remoting connections together.</summary>
internal sealed class PartialFrameBudget(long limit)
{
    private long _used;

    public long Limit => limit;
    public long Used => Interlocked.Read(ref _used);

    public bool TryCharge(long bytes)
    {
        if (Interlocked.Add(ref _used, bytes) <= limit) return true;
        Interlocked.Add(ref _used, -bytes);
        return false;
    }

    public void Release(long bytes) => Interlocked.Add(ref _used, -bytes);
}
