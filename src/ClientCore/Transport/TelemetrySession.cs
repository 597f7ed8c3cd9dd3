using Apache.Rocketmq.V2;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// The Telemetry bidi stream to one broker endpoint. Opening it, the client writes its Settings; the server answers
/// with its own Settings and later pushes commands (check-backs) on it. When the stream breaks (broker restart,
/// network) it is re-opened with exponential backoff (1 s doubling to 10 s, reset once the server talks again) and
/// the Settings are re-sent, so the server re-registers the client, as the official clients do.
/// </summary>
internal sealed class TelemetrySession : IAsyncDisposable
{
    private static readonly TimeSpan MinBackoff = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxBackoff = TimeSpan.FromSeconds(10);

    private readonly RpcChannel _channel;
    private readonly Func<Settings> _settings;
    private readonly Action<Settings> _onSettings;
    private readonly Func<Endpoint, TelemetryCommand, CancellationToken, Task>? _onCommand;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _shutdown = new();
    private readonly HashSet<Task> _handlers = [];
    private volatile StreamingCall<TelemetryCommand>? _current;
    private volatile CancellationTokenSource? _callCancel;
    private int _callIndex;
    private volatile bool _stopping;
    private Task? _loop;

    public TelemetrySession(RpcChannel channel, Endpoint endpoint, Func<Settings> settings, Action<Settings> onSettings,
        Func<Endpoint, TelemetryCommand, CancellationToken, Task>? onCommand, ILogger logger)
    {
        _channel = channel;
        Endpoint = endpoint;
        _settings = settings;
        _onSettings = onSettings;
        _onCommand = onCommand;
        _logger = logger;
    }

    public Endpoint Endpoint { get; }

    /// <summary>Number of times a stream has been opened (tests observe reconnects through it).</summary>
    public int Connections { get; private set; }

    public void Start()
    {
        if (_loop is null)
        {
            _channel.AddressChanged += OnAddressChanged;
            _loop = Task.Run(RunAsync);
        }
    }

    // A call to another address of this endpoint failed and moved the endpoint on (a multi-address access point): a
    // stream still open on the old address is ended, so the reconnect goes where sends now go and the broker that
    // takes them can reach this client (check-backs).
    private void OnAddressChanged(Endpoint endpoint)
    {
        if (endpoint.Equals(Endpoint) && _current is not null && _channel.CurrentIndex(Endpoint) != Volatile.Read(ref _callIndex))
        {
            try
            {
                _callCancel?.Cancel();
            }
            catch (ObjectDisposedException)
            {
            }
        }
    }

    /// <summary>Writes the current Settings on the open stream (no-op while disconnected: the reconnect re-sends).
    /// The write is made with the session's own token: grpc-dotnet ties a write's token to the whole call, so a
    /// caller's would end the shared stream when cancelled. <paramref name="ct"/> only stops the caller's wait; the
    /// write goes on. Until 2026-12-05 it was the write's token: a send cancelled while its Settings write waited ended
    /// the producer's Telemetry stream, and check-backs with it (found by review).</summary>
    public Task ResendSettingsAsync(CancellationToken ct)
    {
        Task write = WriteSettingsAsync();
        return ct.CanBeCanceled && !write.IsCompleted ? write.WaitAsync(ct) : write;
    }

    private async Task WriteSettingsAsync()
    {
        if (_current is { } call)
        {
            try
            {
                await call.WriteAsync(new TelemetryCommand { Settings = _settings() }, _shutdown.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is ClientException or InvalidOperationException or ObjectDisposedException or OperationCanceledException)
            {
                // InvalidOperationException: grpc-dotnet's "the call is complete", when the stream ended after we took
                // it and before the loop cleared it. The reconnect re-sends the Settings. OperationCanceledException
                // (and ObjectDisposedException for the token source): the session is shutting down.
                _logger.LogDebug(ex, "Re-sending settings to {Endpoint} failed", Endpoint);
            }
        }
    }

    private async Task RunAsync()
    {
        TimeSpan backoff = MinBackoff;
        CancellationToken shutdown = _shutdown.Token;
        while (!_stopping && !shutdown.IsCancellationRequested)
        {
            try
            {
                using var callCancel = CancellationTokenSource.CreateLinkedTokenSource(shutdown);
                await using StreamingCall<TelemetryCommand> call = _channel.Telemetry(Endpoint, callCancel.Token, out int index);
                Volatile.Write(ref _callIndex, index);
                _callCancel = callCancel;
                Connections++;
                _current = call;
                await call.WriteAsync(new TelemetryCommand { Settings = _settings() }, shutdown).ConfigureAwait(false);
                while (await call.MoveNextAsync(shutdown).ConfigureAwait(false))
                {
                    backoff = MinBackoff;
                    Dispatch(call.Current);
                }

                _current = null;
                if (!_stopping)
                {
                    _logger.LogInformation("Telemetry stream to {Endpoint} was closed by the server; reconnecting", Endpoint);
                }
            }
            catch (OperationCanceledException) when (shutdown.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                _current = null;
                if (_stopping)
                {
                    break;
                }

                _logger.LogWarning("Telemetry stream to {Endpoint} failed ({Message}); retrying in {Delay}", Endpoint, ex.Message, backoff);
            }

            if (_stopping)
            {
                break;
            }

            try
            {
                await Task.Delay(backoff, shutdown).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                break;
            }

            backoff = TimeSpan.FromTicks(Math.Min(backoff.Ticks * 2, MaxBackoff.Ticks));
        }
    }

    private void Dispatch(TelemetryCommand command)
    {
        switch (command.CommandCase)
        {
            case TelemetryCommand.CommandOneofCase.Settings:
                _onSettings(command.Settings);
                break;
            case TelemetryCommand.CommandOneofCase.None:
                if (command.Status is { } status && !StatusChecker.IsSuccess(status))
                {
                    _logger.LogWarning("Telemetry from {Endpoint} reported {Code}: {Message}", Endpoint, status.Code, status.Message);
                }

                break;
            default:
                if (_onCommand is null)
                {
                    _logger.LogDebug("Ignoring telemetry command {Command} from {Endpoint}", command.CommandCase, Endpoint);
                    break;
                }

                // Handlers (e.g. a transaction check that queries a database) must not block the read loop.
                Task handler = Task.Run(() => _onCommand(Endpoint, command, _shutdown.Token));
                lock (_handlers)
                {
                    _handlers.Add(handler);
                }

                handler.ContinueWith(t =>
                {
                    if (t.Exception is { } ex)
                    {
                        _logger.LogError(ex.InnerException, "Handling {Command} from {Endpoint} failed", command.CommandCase, Endpoint);
                    }

                    lock (_handlers)
                    {
                        _handlers.Remove(t);
                    }
                }, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
                break;
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stopping = true;
        _channel.AddressChanged -= OnAddressChanged;

        // Half-close so the server ends the stream with OK (graceful), then give in-flight check handlers and the
        // server a moment before aborting.
        // Bounded: a write that never completes (a broker that stopped reading) must not hang the dispose; the cancel
        // below ends the call anyway.
        if (_current is { } current)
        {
            await current.CompleteRequestAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }

        Task[] handlers;
        lock (_handlers)
        {
            handlers = [.. _handlers];
        }

        try
        {
            await Task.WhenAll(handlers).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false);
        }
        catch (Exception)
        {
            // Logged by the continuation, or timed out.
        }

        if (_loop is not null)
        {
            try
            {
                await _loop.WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
            }
        }

        await _shutdown.CancelAsync().ConfigureAwait(false);
        if (_loop is not null)
        {
            await _loop.ConfigureAwait(false);
        }

        _shutdown.Dispose();
    }
}
