using System.Threading.Channels;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Transactions;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

/// <summary>
/// One client's Telemetry stream. Everything the broker sends on it (Settings replies, the delayed Settings re-push,
/// check-backs from the core's scheduler) goes through one bounded outbound channel drained by a single writer loop,
/// so writes never overlap and <see cref="TrySendCheck"/> never blocks the core.
/// </summary>
internal sealed class TelemetrySession : ICheckBackChannel
{
    /// <summary>Room for bursts of check-backs; when full, the core tries another producer and asks again later.</summary>
    private const int OutboundCapacity = 1024;

    private readonly Channel<TelemetryCommand> _outbound = Channel.CreateBounded<TelemetryCommand>(
        new BoundedChannelOptions(OutboundCapacity) { SingleReader = true, FullMode = BoundedChannelFullMode.Wait });
    private readonly object _gate = new();
    private readonly Dictionary<string, IDisposable> _producerRegistrations = new(StringComparer.Ordinal);
    private TelemetryCommand? _lastSettings;
    private ITimer? _repushTimer;
    private volatile bool _alive = true;

    public TelemetrySession(string clientId) => ClientId = clientId;

    public string ClientId { get; }

    public bool IsAlive => _alive;

    public bool TrySendCheck(CheckBackRequest request)
    {
        if (!_alive)
        {
            return false;
        }

        // The Node client drops a check whose message lacks topic, message_id or body_digest; the converter sets all.
        var command = new TelemetryCommand
        {
            RecoverOrphanedTransactionCommand = new RecoverOrphanedTransactionCommand
            {
                Message = V5MessageConverter.ToMessage(request.HalfMessage),
                TransactionId = request.TransactionId,
            },
        };
        return _outbound.Writer.TryWrite(command);
    }

    /// <summary>Queues a command; false when the stream is closing or the queue is full.</summary>
    public bool TrySend(TelemetryCommand command) => _alive && _outbound.Writer.TryWrite(command);

    /// <summary>Makes this stream the check-back channel of each topic's producer group (group = topic, as the proxy does).</summary>
    public void RegisterProducer(IEnumerable<string> topics, ProducerRegistry registry)
    {
        lock (_gate)
        {
            if (!_alive)
            {
                return;
            }

            foreach (string topic in topics)
            {
                if (topic.Length > 0 && !_producerRegistrations.ContainsKey(topic))
                {
                    _producerRegistrations[topic] = registry.Register(topic, this);
                }
            }
        }
    }

    /// <summary>Stops receiving check-backs (client termination), keeping the stream itself open.</summary>
    public void UnregisterProducer()
    {
        IDisposable[] registrations;
        lock (_gate)
        {
            registrations = [.. _producerRegistrations.Values];
            _producerRegistrations.Clear();
        }

        foreach (IDisposable registration in registrations)
        {
            registration.Dispose();
        }
    }

    /// <summary>Sends the Settings reply now and once more after <paramref name="repushDelay"/>.</summary>
    public void ReplySettings(TelemetryCommand reply, TimeSpan repushDelay, TimeProvider time)
    {
        lock (_gate)
        {
            _lastSettings = reply;
            _repushTimer?.Dispose();
            _repushTimer = repushDelay > TimeSpan.Zero ? time.CreateTimer(static s => ((TelemetrySession)s!).Repush(), this, repushDelay, Timeout.InfiniteTimeSpan) : null;
        }

        TrySend(reply);
    }

    /// <summary>Pushes the last Settings again (an unsolicited Settings is always accepted by the clients).</summary>
    public void Repush()
    {
        TelemetryCommand? settings;
        lock (_gate)
        {
            settings = _lastSettings;
        }

        if (settings is not null)
        {
            TrySend(settings);
        }
    }

    /// <summary>Writes queued commands until <see cref="Close"/> (then drains what is left) or the call fails.</summary>
    public async Task RunWriterAsync(GrpcCall call)
    {
        try
        {
            await foreach (TelemetryCommand command in _outbound.Reader.ReadAllAsync(call.CancellationToken).ConfigureAwait(false))
            {
                await call.WriteMessageAsync(command).ConfigureAwait(false);
            }
        }
        catch
        {
            // The read loop owns the call's outcome; make sure it notices and stops routing checks here.
            _alive = false;
            call.HttpContext.Abort();
            throw;
        }
    }

    /// <summary>The stream ended: no more checks here, unregister from every producer group, let the writer drain.</summary>
    public void Close()
    {
        lock (_gate)
        {
            _alive = false;
            _repushTimer?.Dispose();
            _repushTimer = null;
        }

        UnregisterProducer();
        _outbound.Writer.TryComplete();
    }
}

/// <summary>Open Telemetry sessions by client id.</summary>
internal sealed class TelemetrySessions
{
    private readonly object _gate = new();
    private readonly Dictionary<string, List<TelemetrySession>> _byClient = new(StringComparer.Ordinal);

    public void Add(TelemetrySession session)
    {
        lock (_gate)
        {
            if (!_byClient.TryGetValue(session.ClientId, out var list))
            {
                _byClient[session.ClientId] = list = [];
            }

            list.Add(session);
        }
    }

    public void Remove(TelemetrySession session)
    {
        lock (_gate)
        {
            if (_byClient.TryGetValue(session.ClientId, out var list) && list.Remove(session) && list.Count == 0)
            {
                _byClient.Remove(session.ClientId);
            }
        }
    }

    public void RepushSettings(string clientId)
    {
        foreach (TelemetrySession session in Of(clientId))
        {
            session.Repush();
        }
    }

    public void Terminate(string clientId)
    {
        foreach (TelemetrySession session in Of(clientId))
        {
            session.UnregisterProducer();
        }
    }

    private TelemetrySession[] Of(string clientId)
    {
        lock (_gate)
        {
            return _byClient.TryGetValue(clientId, out var list) ? [.. list] : [];
        }
    }
}
