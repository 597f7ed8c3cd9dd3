namespace HalfMsg.ProducerClient;

/// <summary>
/// Coalesces concurrent requests of one kind into shared calls: per lane (<typeparamref name="TKey"/>), at most
/// <c>maxCallsInFlight</c> calls are outstanding; an item that arrives while they all are waits, and goes with the
/// others that waited meanwhile in the next call (up to <c>maxItems</c> items and <c>maxBytes</c> by
/// <c>size</c>; a larger item goes alone). Below that many concurrent items nothing waits and every item has a call of
/// its own. Used for half sends (<see cref="HalfSendCoalescer"/>) and decisions (<see cref="DecisionCoalescer"/>).
/// <para>Cancellation: a caller's token ends only its wait for a call, never a call. "Cancelled" means "not sent" (the
/// caller may reuse what it handed over); an item a call has taken, its own or a shared one, gets that call's answer
/// (the request timeout bounds every call), since the server may already have acted on it.</para>
/// </summary>
/// <param name="maxCallsInFlight">Calls outstanding per lane before items wait.</param>
/// <param name="maxItems">Most items in one call.</param>
/// <param name="maxBytes">Most bytes (by <paramref name="size"/>) in one call of waiting items.</param>
/// <param name="size">An item's size in bytes, for <paramref name="maxBytes"/>.</param>
/// <param name="call">Makes one call carrying the items, in order.</param>
/// <param name="pick">Item <c>index</c>'s result of a response to <c>count</c> items; may throw for that item alone.</param>
internal sealed class CallCoalescer<TKey, TItem, TResponse, TResult>(int maxCallsInFlight, int maxItems, long maxBytes,
    Func<TItem, long> size,
    Func<TKey, IReadOnlyList<TItem>, CancellationToken, Task<TResponse>> call,
    Func<TResponse, int, int, TResult> pick)
    where TKey : notnull
{
    private readonly object _gate = new();
    private readonly Dictionary<TKey, Lane> _lanes = [];
    private long _calls;
    private long _shared;

    /// <summary>Calls made so far (for tests and diagnostics: fewer than the items sent when some went together).</summary>
    public long CallsMade => Interlocked.Read(ref _calls);

    /// <summary>Items that went in a call with at least one other (for tests and diagnostics).</summary>
    public long ItemsInSharedCalls => Interlocked.Read(ref _shared);

    /// <summary>Calls outstanding and items waiting, per lane.</summary>
    private sealed class Lane
    {
        public int InFlight;
        public readonly Queue<Pending> Waiting = new();
    }

    private sealed class Pending(TItem item)
    {
        public const int Waiting = 0, Taken = 1, Cancelled = 2;
        public readonly TItem Item = item;
        public readonly TaskCompletionSource<TResult> Result = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Cancellation;
        /// <summary>Either a call takes the item or its caller's cancellation ends the wait, never both: a caller
        /// told "cancelled" knows the item was not sent, and may reuse what it handed over (the producer does not copy
        /// a message body).</summary>
        public int State;

        public bool TryCancel(CancellationToken token) =>
            Interlocked.CompareExchange(ref State, Cancelled, Waiting) == Waiting && Result.TrySetCanceled(token);

        public bool TryTake() => Interlocked.CompareExchange(ref State, Taken, Waiting) == Waiting;
    }

    /// <summary>Sends one item, in a call of its own or with others, and returns its result. <paramref name="ct"/>
    /// cancels only while the item waits for a call (see the class remarks).</summary>
    public Task<TResult> SendAsync(TKey key, TItem item, CancellationToken ct)
    {
        if (ct.IsCancellationRequested)
        {
            return Task.FromCanceled<TResult>(ct); // not sent
        }

        Lane lane;
        lock (_gate)
        {
            if (!_lanes.TryGetValue(key, out lane!))
            {
                _lanes[key] = lane = new Lane();
            }

            if (lane.InFlight >= maxCallsInFlight)
            {
                var pending = new Pending(item);
                lane.Waiting.Enqueue(pending);
                if (ct.CanBeCanceled)
                {
                    // A cancelled wait ends now; the item is skipped when its call is made (it was never sent). Once a
                    // call has taken it, the caller waits for that call's answer (bounded by the request timeout).
                    pending.Cancellation = ct.UnsafeRegister(static (s, t) => ((Pending)s!).TryCancel(t), pending);
                }

                return pending.Result.Task;
            }

            lane.InFlight++;
        }

        return SendOwnAsync(key, lane, item);
    }

    /// <summary>A call of its own for an item that found a free slot; then the slot serves whoever waited meanwhile.</summary>
    private async Task<TResult> SendOwnAsync(TKey key, Lane lane, TItem item)
    {
        try
        {
            // Not cancelled by its caller either: once on the wire the server may act on it, and a caller told
            // "cancelled" takes it for "not sent". Until 2026-12-05 this call had the caller's token, so a commit the
            // broker carried out (or a half it stored) could be reported cancelled (found by review).
            Interlocked.Increment(ref _calls);
            TResponse response = await call(key, [item], CancellationToken.None).ConfigureAwait(false);
            return pick(response, 0, 1);
        }
        finally
        {
            Next(key, lane);
        }
    }

    /// <summary>Hands the finished call's slot to the items that waited, as one call, or frees it.</summary>
    private void Next(TKey key, Lane lane)
    {
        List<Pending> batch = [];
        lock (_gate)
        {
            long bytes = 0;
            while (batch.Count < maxItems && lane.Waiting.TryPeek(out Pending? p))
            {
                long itemBytes = size(p.Item);
                if (batch.Count > 0 && bytes + itemBytes > maxBytes)
                {
                    break;
                }

                lane.Waiting.Dequeue();
                if (!p.TryTake())
                {
                    continue; // cancelled while it waited
                }

                batch.Add(p);
                bytes += itemBytes;
            }

            if (batch.Count == 0)
            {
                lane.InFlight--;
                if (lane.InFlight == 0 && lane.Waiting.Count == 0)
                {
                    _lanes.Remove(key);
                }

                return;
            }
        }

        _ = SendBatchAsync(key, lane, batch);
    }

    private async Task SendBatchAsync(TKey key, Lane lane, List<Pending> batch)
    {
        try
        {
            var items = new TItem[batch.Count];
            for (int i = 0; i < batch.Count; i++)
            {
                batch[i].Cancellation.Dispose(); // sent now: its outcome is the call's
                items[i] = batch[i].Item;
            }

            // Not cancelled by any one caller: the others' items ride on it (the request timeout still bounds it).
            Interlocked.Increment(ref _calls);
            if (items.Length > 1) Interlocked.Add(ref _shared, items.Length);
            TResponse response = await call(key, items, CancellationToken.None).ConfigureAwait(false);
            for (int i = 0; i < batch.Count; i++)
            {
                try
                {
                    batch[i].Result.TrySetResult(pick(response, i, batch.Count));
                }
                catch (Exception ex)
                {
                    batch[i].Result.TrySetException(ex);
                }
            }
        }
        catch (Exception ex)
        {
            foreach (Pending p in batch)
            {
                p.Result.TrySetException(ex);
            }
        }
        finally
        {
            Next(key, lane);
        }
    }
}

/// <summary>The one check both coalesced calls make of a reply: one entry per item sent.</summary>
internal static class CoalescedReply
{
    /// <summary>Item <paramref name="index"/>'s entry of a reply to <paramref name="count"/> items (its status is the
    /// caller's to check); a reply without one entry per item throws the call's error, else UNSUPPORTED.</summary>
    public static T EntryAt<T>(IReadOnlyList<T> entries, Apache.Rocketmq.V2.Status? callStatus, int index, int count, string call, string items)
    {
        if (entries.Count != count)
        {
            // No per-item answer to go by: the call's own status says why, else the shape is wrong.
            HalfMsg.ClientCore.Transport.StatusChecker.Check(callStatus, null);
            throw new HalfMsg.ClientCore.UnsupportedException(Apache.Rocketmq.V2.Code.InternalServerError,
                $"{call} returned {entries.Count} entries for {count} {items}.");
        }

        return entries[index];
    }
}
