namespace HalfMsg.Broker.Core;

/// <summary>
/// A binary min-heap by a <see cref="long"/> priority (a due time), stored in a <see cref="SegmentedList{T}"/>, so that
/// it never grows by copying all of it: a <see cref="PriorityQueue{TElement, TPriority}"/> doubles its one array, and
/// with millions of entries that copy ran under the engine lock. Items of equal priority come out in no particular
/// order. Not thread-safe.
/// </summary>
internal sealed class SegmentedHeap<T>
{
    private readonly SegmentedList<(T Item, long Priority)> _items = new();

    public int Count => _items.Count;

    /// <summary>Segments held (for tests: they follow the count, not its history).</summary>
    internal int SegmentCount => _items.SegmentCount;

    public void Enqueue(T item, long priority)
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

    public bool TryPeek(out T item, out long priority)
    {
        if (_items.Count == 0)
        {
            (item, priority) = (default!, 0);
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
        int n = _items.Count;
        if (n == 0) return top;
        int i = 0;
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
        return top;
    }

    /// <summary>Every item, in no particular order.</summary>
    public IEnumerable<(T Item, long Priority)> Items() => _items.Items();

    public void Clear() => _items.Clear();
}
