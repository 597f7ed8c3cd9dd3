using Apache.Rocketmq.V2;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using V2Message = Apache.Rocketmq.V2.Message;

namespace HalfMsg.ProducerClient;

/// <summary>
/// Coalesces the half sends of concurrent transactions: per broker endpoint and topic, at most
/// <c>maxCallsInFlight</c> SendMessage calls are outstanding; a half sent while they all are waits, and goes with the
/// others that waited meanwhile in the next call (up to <c>maxMessages</c> messages and <c>maxBytes</c> of bodies).
/// Below that many transactions in flight nothing waits and every half has a call of its own, as before.
/// </summary>
/// <remarks>
/// Every unary call costs both processes the same fixed work (an HTTP/2 stream, headers, a thread-pool hop or two at
/// each end) whatever it carries, and a transaction is two calls (half, decision). Sixty-four concurrent transactions
/// in one producer made 64 half calls per round; coalesced, about <c>maxCallsInFlight</c>. HalfMsgBroker stores each
/// message of such a call as if it had been sent alone, all at once, so they share its group commits. The Apache
/// RocketMQ broker refuses several transactional messages in one call (its store answers MESSAGE_ILLEGAL to a batch
/// with a transaction flag), so the producer coalesces only when the broker's Settings reply names a HalfMsgBroker
/// (<see cref="HalfMsg.Protocol.Grpc.BrokerAgent"/>).
/// </remarks>
internal sealed class HalfSendCoalescer(int maxCallsInFlight, int maxMessages, long maxBytes,
    Func<Endpoint, SendMessageRequest, CancellationToken, Task<SendMessageResponse>> call)
{
    private readonly object _gate = new();
    private readonly Dictionary<(Endpoint Endpoint, string Topic), Lane> _lanes = [];

    /// <summary>Calls outstanding and halves waiting, per endpoint and topic.</summary>
    private sealed class Lane
    {
        public int InFlight;
        public readonly Queue<Pending> Waiting = new();
    }

    private sealed class Pending(V2Message message)
    {
        public readonly V2Message Message = message;
        public readonly TaskCompletionSource<SendResultEntry> Result = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public CancellationTokenRegistration Cancellation;
    }

    /// <summary>Sends one half and returns its own entry of the response (its status is the caller's to check).</summary>
    public Task<SendResultEntry> SendAsync(Endpoint endpoint, V2Message message, CancellationToken ct)
    {
        var key = (endpoint, message.Topic.Name);
        Lane lane;
        lock (_gate)
        {
            if (!_lanes.TryGetValue(key, out lane!))
            {
                _lanes[key] = lane = new Lane();
            }

            if (lane.InFlight >= maxCallsInFlight)
            {
                var pending = new Pending(message);
                lane.Waiting.Enqueue(pending);
                if (ct.CanBeCanceled)
                {
                    // A cancelled wait ends now; the half is skipped when its call is made (it was never sent).
                    pending.Cancellation = ct.UnsafeRegister(static (s, t) => ((Pending)s!).Result.TrySetCanceled(t), pending);
                }

                return pending.Result.Task;
            }

            lane.InFlight++;
        }

        return SendOwnAsync(key, lane, message, ct);
    }

    /// <summary>A call of its own for a half that found a free slot; then the slot serves whoever waited meanwhile.</summary>
    private async Task<SendResultEntry> SendOwnAsync((Endpoint Endpoint, string Topic) key, Lane lane, V2Message message, CancellationToken ct)
    {
        try
        {
            SendMessageResponse response = await call(key.Endpoint, new SendMessageRequest { Messages = { message } }, ct).ConfigureAwait(false);
            return EntryAt(response, 0, 1);
        }
        finally
        {
            Next(key, lane);
        }
    }

    /// <summary>Hands the finished call's slot to the halves that waited, as one call, or frees it.</summary>
    private void Next((Endpoint Endpoint, string Topic) key, Lane lane)
    {
        List<Pending> batch = [];
        lock (_gate)
        {
            long bytes = 0;
            while (batch.Count < maxMessages && lane.Waiting.TryPeek(out Pending? p) && (batch.Count == 0 || bytes + p.Message.Body.Length <= maxBytes))
            {
                lane.Waiting.Dequeue();
                if (p.Result.Task.IsCompleted)
                {
                    continue; // cancelled while it waited
                }

                batch.Add(p);
                bytes += p.Message.Body.Length;
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

    private async Task SendBatchAsync((Endpoint Endpoint, string Topic) key, Lane lane, List<Pending> batch)
    {
        try
        {
            var request = new SendMessageRequest();
            foreach (Pending p in batch)
            {
                p.Cancellation.Dispose(); // sent now: its outcome is the call's
                request.Messages.Add(p.Message);
            }

            // Not cancelled by any one caller: the others' halves ride on it (the request timeout still bounds it).
            SendMessageResponse response = await call(key.Endpoint, request, CancellationToken.None).ConfigureAwait(false);
            for (int i = 0; i < batch.Count; i++)
            {
                try
                {
                    batch[i].Result.TrySetResult(EntryAt(response, i, batch.Count));
                }
                catch (ClientException ex)
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

    /// <summary>Message <paramref name="index"/>'s entry of a reply to <paramref name="count"/> messages (its status is
    /// the caller's to check); a reply without one entry per message throws the call's error, else UNSUPPORTED.</summary>
    internal static SendResultEntry EntryAt(SendMessageResponse response, int index, int count)
    {
        if (response.Entries.Count != count)
        {
            // No per-message answer to go by: the call's own status says why, else the shape is wrong.
            StatusChecker.Check(response.Status, null);
            throw new UnsupportedException(Code.InternalServerError, $"SendMessage returned {response.Entries.Count} entries for {count} messages.");
        }

        return response.Entries[index];
    }
}
