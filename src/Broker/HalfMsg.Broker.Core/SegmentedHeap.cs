using System.Numerics;

namespace HalfMsg.Broker.Core;

/// <summary>
/// A binary min-heap by a <see cref="long"/> priority (a due time), stored in a <see cref="SegmentedList{T}"/>, so that
/// it never grows by copying all of it: a <see cref="PriorityQueue{TElement, TPriority}"/> doubles its one array, and
/// with millions of entries that copy ran under the engine lock. Items of equal priority come out in no particular
/// order. Not thread-safe.
/// </summary>
internal sealed class SegmentedHeap<T> : SegmentedHeap<T, long>;

/// <summary>
/// The heap of <see cref="SegmentedHeap{T}"/> by any priority compared with its operators: a priority that orders the
/// items of one due time too (the delayed messages' <c>DelayIndex.DueKey</c>: due time, then send order) makes equal
/// due times come out in a fixed order. A struct priority is compared inline, as a <see cref="long"/> is.
/// </summary>
internal class SegmentedHeap<T, TPriority> where TPriority : struct, IComparisonOperators<TPriority, TPriority, bool>
{
    private readonly SegmentedList<(T Item, TPriority Priority)> _items = new();

    public int Count => _items.Count;

    /// <summary>Segments held (for tests: they follow the count, not its history).</summary>
    internal int SegmentCount => _items.SegmentCount;

    public void Enqueue(T item, TPriority priority)
    {
        _items.Add((item, priority));
        int i = _items.Count - 1;
        var moving = _items[i];
        while (i > 0)
        {
            int parent = (i - 1) >> 1;
            var above = _items[parent];
            if (above.Priority <= moving.Priority) break;
            _items[i] = above;
            i = parent;
        }
        _items[i] = moving;
    }

    public bool TryPeek(out T item, out TPriority priority)
    {
        if (_items.Count == 0)
        {
            (item, priority) = (default!, default);
            return false;
        }
        (item, priority) = _items[0];
        return true;
    }

    /// <summary>Removes and returns the item with the lowest priority.</summary>
    public T Dequeue()
    {
        if (_items.Count == 0) throw new InvalidOperationException("the heap is empty");
        T top = _items[0].Item;
        var moving = _items[_items.Count - 1];
        _items.RemoveLast();
        if (_items.Count > 0) SiftDown(0, moving);
        return top;
    }

    // Puts `moving` at `i` or below, moving smaller children up: the slot at `i` is free.
    private void SiftDown(int i, (T Item, TPriority Priority) moving)
    {
        int n = _items.Count;
        while (true)
        {
            int child = 2 * i + 1;
            if (child >= n) break;
            var smaller = _items[child];
            if (child + 1 < n)
            {
                var right = _items[child + 1];
                if (right.Priority < smaller.Priority)
                {
                    smaller = right;
                    child++;
                }
            }
            if (moving.Priority <= smaller.Priority) break;
            _items[i] = smaller;
            i = child;
        }
        _items[i] = moving;
    }

    /// <summary>Every item, in no particular order.</summary>
    public IEnumerable<(T Item, TPriority Priority)> Items() => _items.Items();

    /// <summary>Removes every item <paramref name="stale"/> (given the item and its priority) picks, in one pass over all
    /// of them, and orders the rest as a heap again (in place, in linear time). Returns how many went.</summary>
    public int RemoveWhere(Func<T, TPriority, bool> stale)
    {
        int kept = 0, n = _items.Count;
        for (int i = 0; i < n; i++)
        {
            var e = _items[i];
            if (stale(e.Item, e.Priority)) continue;
            if (kept != i) _items[kept] = e;
            kept++;
        }
        while (_items.Count > kept) _items.RemoveLast();
        for (int i = kept / 2 - 1; i >= 0; i--) SiftDown(i, _items[i]);
        return n - kept;
    }

    public void Clear() => _items.Clear();
}

/// <summary>When a due-time queue with lazy deletion drops its stale entries (one rule for all of them).</summary>
internal static class SegmentedHeap
{
    /// <summary>
    /// Entries above this many, and above twice the live items, make a due-time queue with lazy deletion (an entry
    /// left in place when its item goes, skipped when it surfaces) drop its stale ones: see <see cref="MostlyStale"/>.
    /// </summary>
    internal const int StaleSlack = 4096;

    /// <summary>
    /// True when a due-time queue of <paramref name="entries"/> entries for <paramref name="live"/> live items should be
    /// rid of its stale ones (<see cref="SegmentedHeap{T, TPriority}.RemoveWhere"/>): they are more than twice the live ones plus
    /// <see cref="StaleSlack"/>. A stale entry stays until its due time, which a client may set days ahead, and holds
    /// what it names until then; the pass over all entries that drops them is paid for by the removals that made at
    /// least half of them stale since the last one. The pending halves (<c>HalfIndex</c>) and the delayed messages
    /// (<c>DelayIndex</c>) use it.
    /// </summary>
    internal static bool MostlyStale(long entries, long live) => entries > 2L * live + StaleSlack;
}
