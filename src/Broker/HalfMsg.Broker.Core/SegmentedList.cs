namespace HalfMsg.Broker.Core;

/// <summary>
/// A list that grows at its end and shrinks at its front, stored in fixed-size segments, so that neither costs more than
/// one segment: an append never copies what is already there (a <see cref="List{T}"/> copies all of it each time it
/// doubles) and dropping a prefix never moves the rest (<see cref="List{T}.RemoveRange"/> moves every entry behind it).
/// </summary>
/// <remarks>
/// Used for what grows with the retained log and is changed under the engine lock: a topic queue's entries (millions
/// per queue with the default 8 GiB retention; each retention cut drops a prefix) and the decided ids' expiry order
/// (up to a million). With a <see cref="List{T}"/>, a cut moved every entry of every queue under the lock, and the
/// doubling at a million entries copied tens of megabytes in one hold. A segment holds
/// <see cref="SegmentLength"/> items; at 40 bytes an item (a queue entry) that stays below the large object heap's
/// 85,000-byte threshold, so segments are ordinary, compactable allocations. The first segment starts at 16 items and
/// grows (a copy of at most one segment) before a second is added, so a short queue costs what it holds. Not thread-safe.
/// </remarks>
internal sealed class SegmentedList<T>
{
    /// <summary>Items per segment (a power of two).</summary>
    public const int SegmentLength = 1 << SegmentBits;
    private const int SegmentBits = 11;
    private const int SegmentMask = SegmentLength - 1;

    // _segments[0] holds the first item at _front; every segment but the last is full from its start (or from
    // _front for the first). Dropped segments are removed from the front of the list, a few references each.
    private readonly List<T[]> _segments = [];
    private int _front;

    // Segments a cut dropped, cleared, for the next appends: a queue that is cut as fast as it grows allocates nothing
    // (and leaves no dropped segments for the full collections to find). At most 16, and no more than the segments
    // still in use, so a queue that a cut emptied or shrank for good keeps nothing much.
    private const int SpareLimit = 16;
    private readonly Stack<T[]> _spare = new();

    public int Count { get; private set; }

    /// <summary>Segments currently held (for tests: bounded by the count, not by the count's history).</summary>
    internal int SegmentCount => _segments.Count;

    public T this[int index]
    {
        get
        {
            if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index));
            int at = _front + index;
            return _segments[at >> SegmentBits][at & SegmentMask];
        }
        set
        {
            if ((uint)index >= (uint)Count) throw new ArgumentOutOfRangeException(nameof(index));
            int at = _front + index;
            _segments[at >> SegmentBits][at & SegmentMask] = value;
        }
    }

    public void Add(T item)
    {
        int at = _front + Count;
        int segment = at >> SegmentBits;
        if (segment == _segments.Count)
        {
            // The first segment starts small (a broker has a queue per topic and queue id, most of them short) and
            // grows to full length before a second one is added; every other segment is full length.
            _segments.Add(_spare.TryPop(out T[]? spare) ? spare : new T[segment == 0 ? FirstSegmentLength : SegmentLength]);
        }
        else if ((at & SegmentMask) >= _segments[segment].Length)
        {
            // Only a short first segment, the only one (so its items are _front to at).
            var longer = new T[Math.Min(SegmentLength, 2 * _segments[segment].Length)];
            _segments[segment].AsSpan(_front, Count).CopyTo(longer.AsSpan(_front));
            _segments[segment] = longer;
        }

        _segments[segment][at & SegmentMask] = item;
        Count++;
    }

    private const int FirstSegmentLength = 16;

    /// <summary>The items from <paramref name="index"/> to the end of its segment (or of the list): walking a range span
    /// by span reads it as contiguous memory, without an indexer call per item.</summary>
    public ReadOnlySpan<T> SpanFrom(int index)
    {
        if ((uint)index >= (uint)Count) return ReadOnlySpan<T>.Empty;
        int at = _front + index;
        int offset = at & SegmentMask;
        return _segments[at >> SegmentBits].AsSpan(offset, Math.Min(SegmentLength - offset, Count - index));
    }

    /// <summary>Drops the first <paramref name="n"/> items.</summary>
    public void RemoveFront(int n)
    {
        if (n < 0 || n > Count) throw new ArgumentOutOfRangeException(nameof(n));
        if (n == 0) return;
        if (n == Count)
        {
            Clear();
            return;
        }

        // Clear the dropped slots of the segment that stays (references must not be kept alive); whole segments go.
        int end = _front + n;
        int dropSegments = end >> SegmentBits;
        int keepFrom = end & SegmentMask;
        if (keepFrom > 0 && System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>())
        {
            int clearFrom = dropSegments == 0 ? _front : 0;
            Array.Clear(_segments[dropSegments], clearFrom, keepFrom - clearFrom);
        }

        Recycle(0, dropSegments);
        _segments.RemoveRange(0, dropSegments);
        _front = keepFrom;
        Count -= n;
    }

    /// <summary>Drops the last item; a segment left empty goes (kept for reuse, see <see cref="_spare"/>).</summary>
    public void RemoveLast()
    {
        if (Count == 0) throw new InvalidOperationException("the list is empty");
        if (Count == 1)
        {
            Clear();
            return;
        }

        int at = _front + Count - 1;
        int segment = at >> SegmentBits;
        if (System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>()) _segments[segment][at & SegmentMask] = default!;
        Count--;
        if ((at & SegmentMask) == 0) // the last segment held only that item (it is not the first: Count was above 1)
        {
            Recycle(segment, 1);
            _segments.RemoveAt(segment);
        }
    }

    public void Clear()
    {
        _spare.Clear();
        _segments.Clear();
        _front = 0;
        Count = 0;
    }

    /// <summary>Segments kept for reuse (for tests).</summary>
    internal int SpareCount => _spare.Count;

    /// <summary>Keeps some of the segments about to be dropped (see <see cref="_spare"/>), cleared: no reference survives.</summary>
    private void Recycle(int from, int count)
    {
        int keep = Math.Min(SpareLimit, _segments.Count - count);
        for (int i = from; i < from + count && _spare.Count < keep; i++)
        {
            if (_segments[i].Length != SegmentLength) continue; // a short first segment is not worth keeping
            if (System.Runtime.CompilerServices.RuntimeHelpers.IsReferenceOrContainsReferences<T>()) Array.Clear(_segments[i]);
            _spare.Push(_segments[i]);
        }
    }

    /// <summary>Copies the items from index <paramref name="start"/> on, as many as <paramref name="into"/> holds.</summary>
    public void CopyTo(int start, Span<T> into)
    {
        if (into.Length == 0) return;
        if (start < 0 || start + into.Length > Count) throw new ArgumentOutOfRangeException(nameof(start));
        int at = _front + start;
        int done = 0;
        while (done < into.Length)
        {
            int offset = at & SegmentMask;
            int n = Math.Min(SegmentLength - offset, into.Length - done);
            _segments[at >> SegmentBits].AsSpan(offset, n).CopyTo(into[done..]);
            done += n;
            at += n;
        }
    }

    /// <summary>The items in order (the list must not change meanwhile).</summary>
    public IEnumerable<T> Items()
    {
        for (int i = 0; i < Count; i++) yield return this[i];
    }
}
