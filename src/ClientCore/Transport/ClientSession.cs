using System.Collections.Concurrent;
using Apache.Rocketmq.V2;
using Microsoft.Extensions.Logging;

namespace HalfMsg.ClientCore.Transport;

/// <summary>
/// What every RocketMQ 5 client does regardless of its role: route lookups against the access point, one
/// Telemetry session per broker endpoint found in the routes, Heartbeat every 10 s, route refresh every 30 s,
/// and NotifyClientTermination on shutdown. Producers and consumers plug in their Settings and command handler.
/// </summary>
internal sealed class ClientSession : IAsyncDisposable
{
    private static readonly TimeSpan HeartbeatPeriod = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan RouteRefreshPeriod = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan SettingsResyncPeriod = TimeSpan.FromMinutes(5);

    private readonly ClientType _clientType;
    private readonly Resource? _group;
    private readonly Func<Settings> _settings;
    private readonly Func<Endpoint, TelemetryCommand, CancellationToken, Task>? _onCommand;
    private readonly ConcurrentDictionary<string, IReadOnlyList<MessageQueue>> _routes = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<Endpoint, TelemetrySession> _telemetry = new();
    private readonly TaskCompletionSource _firstSettings = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _shutdown = new();
    private readonly List<Task> _timers = [];
    private volatile Settings? _serverSettings;
    private int _disposed;

    public ClientSession(ClientConfig config, ClientType clientType, Resource? group, Func<Settings> settings,
        Func<Endpoint, TelemetryCommand, CancellationToken, Task>? onCommand, HttpMessageHandler? handler = null)
    {
        Config = config;
        Channel = new RpcChannel(config, handler);
        _clientType = clientType;
        _group = group;
        _settings = settings;
        _onCommand = onCommand;
        Logger = config.LoggerFactory.CreateLogger("HalfMsg.Client");
    }

    public ClientConfig Config { get; }
    public RpcChannel Channel { get; }
    public ILogger Logger { get; }

    /// <summary>The Settings the server last pushed (null until the first arrives).</summary>
    public Settings? ServerSettings => _serverSettings;

    public CancellationToken ShutdownToken => _shutdown.Token;

    public IEnumerable<Endpoint> Endpoints => _telemetry.Keys;

    /// <summary>Queries the routes of <paramref name="topics"/>, opens Telemetry to their brokers, and waits for the
    /// server's Settings (at most request timeout + 3 s, like the official C# client; then it carries on).</summary>
    public async Task StartAsync(IEnumerable<string> topics, CancellationToken ct)
    {
        bool any = false;
        foreach (string topic in topics)
        {
            any = true;
            await GetRouteAsync(topic, ct).ConfigureAwait(false);
        }

        if (any)
        {
            try
            {
                await _firstSettings.Task.WaitAsync(Config.RequestTimeout + TimeSpan.FromSeconds(3), ct).ConfigureAwait(false);
            }
            catch (TimeoutException)
            {
                Logger.LogWarning("No Settings received from the server after {Timeout}; continuing with defaults", Config.RequestTimeout + TimeSpan.FromSeconds(3));
            }
        }

        _timers.Add(Task.Run(HeartbeatLoopAsync));
        _timers.Add(Task.Run(RouteRefreshLoopAsync));
        _timers.Add(Task.Run(SettingsResyncLoopAsync));
    }

    /// <summary>Cached route of <paramref name="topic"/>, fetched on first use.</summary>
    public async Task<IReadOnlyList<MessageQueue>> GetRouteAsync(string topic, CancellationToken ct)
    {
        if (_routes.TryGetValue(topic, out IReadOnlyList<MessageQueue>? route))
        {
            return route;
        }

        // Startup tries 3 times (1 s, then 2 s apart), as the official clients do.
        for (int attempt = 1; ; attempt++)
        {
            try
            {
                return await FetchRouteAsync(topic, ct).ConfigureAwait(false);
            }
            catch (ClientException ex) when (ex.IsRetryable && attempt < 3)
            {
                Logger.LogDebug(ex, "QueryRoute {Topic} attempt {Attempt} failed", topic, attempt);
                await Task.Delay(TimeSpan.FromSeconds(attempt), ct).ConfigureAwait(false);
            }
        }
    }

    private async Task<IReadOnlyList<MessageQueue>> FetchRouteAsync(string topic, CancellationToken ct)
    {
        var request = new QueryRouteRequest { Topic = Resource(topic), Endpoints = Config.AccessPoint.ToProto() };
        QueryRouteResponse response = await Channel.UnaryAsync(Config.AccessPoint, (c, o) => c.QueryRouteAsync(request, o), null, ct)
            .ConfigureAwait(false);
        StatusChecker.Check(response.Status, null);
        var queues = new List<MessageQueue>(response.MessageQueues.Count);
        foreach (MessageQueue mq in response.MessageQueues)
        {
            if (mq.Broker?.Endpoints is null || mq.Broker.Endpoints.Addresses.Count == 0)
            {
                continue;
            }

            queues.Add(mq);
            EnsureTelemetry(Endpoint.FromProto(mq.Broker.Endpoints));
        }

        if (queues.Count == 0)
        {
            throw new NotFoundException(Code.TopicNotFound, $"The route of topic '{topic}' has no reachable queue.");
        }

        _routes[topic] = queues;
        return queues;
    }

    private void EnsureTelemetry(Endpoint endpoint)
    {
        if (_telemetry.ContainsKey(endpoint) || _shutdown.IsCancellationRequested)
        {
            return;
        }

        var session = new TelemetrySession(Channel, endpoint, _settings, OnSettings, _onCommand, Logger);
        if (_telemetry.TryAdd(endpoint, session))
        {
            session.Start();
        }
    }

    private void OnSettings(Settings settings)
    {
        _serverSettings = settings;
        _firstSettings.TrySetResult();
    }

    public Resource Resource(string name) => new() { Name = name, ResourceNamespace = Config.Namespace ?? string.Empty };

    private async Task HeartbeatLoopAsync()
    {
        using var timer = new PeriodicTimer(HeartbeatPeriod);
        try
        {
            while (await timer.WaitForNextTickAsync(_shutdown.Token).ConfigureAwait(false))
            {
                var request = new HeartbeatRequest { ClientType = _clientType };
                if (_group is not null)
                {
                    request.Group = _group;
                }

                foreach (Endpoint endpoint in _telemetry.Keys)
                {
                    try
                    {
                        HeartbeatResponse response = await Channel.UnaryAsync(endpoint, (c, o) => c.HeartbeatAsync(request, o), null,
                            _shutdown.Token).ConfigureAwait(false);
                        if (!StatusChecker.IsSuccess(response.Status))
                        {
                            Logger.LogDebug("Heartbeat to {Endpoint}: {Code} {Message}", endpoint, response.Status.Code, response.Status.Message);
                        }
                    }
                    catch (ClientException ex)
                    {
                        Logger.LogDebug("Heartbeat to {Endpoint} failed: {Message}", endpoint, ex.Message);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    private async Task RouteRefreshLoopAsync()
    {
        using var timer = new PeriodicTimer(RouteRefreshPeriod);
        try
        {
            while (await timer.WaitForNextTickAsync(_shutdown.Token).ConfigureAwait(false))
            {
                foreach (string topic in _routes.Keys)
                {
                    try
                    {
                        await FetchRouteAsync(topic, _shutdown.Token).ConfigureAwait(false);
                    }
                    catch (ClientException ex)
                    {
                        Logger.LogDebug("Route refresh of {Topic} failed: {Message}", topic, ex.Message);
                    }
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Writes the current Settings on every open Telemetry stream (e.g. after a new topic appeared). Every
    /// stream's write is started before any is waited for, and none takes <paramref name="ct"/>: it stops only the
    /// caller's wait. Until 2026-12-07 the writes were made one after another, so a caller cancelled while the first
    /// waited left the other brokers without the new Settings until the next reconnect or resync (found by review).</summary>
    public Task ResendSettingsAsync(CancellationToken ct)
    {
        Task[] writes = [.. _telemetry.Values.Select(session => session.ResendSettingsAsync(CancellationToken.None))];
        Task all = Task.WhenAll(writes);
        return ct.CanBeCanceled && !all.IsCompleted ? all.WaitAsync(ct) : all;
    }

    private async Task SettingsResyncLoopAsync()
    {
        using var timer = new PeriodicTimer(SettingsResyncPeriod);
        try
        {
            while (await timer.WaitForNextTickAsync(_shutdown.Token).ConfigureAwait(false))
            {
                await ResendSettingsAsync(_shutdown.Token).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    /// <summary>Stops the timers, sends NotifyClientTermination to every broker endpoint (failures are logged,
    /// never thrown), and closes the Telemetry streams.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        await _shutdown.CancelAsync().ConfigureAwait(false);
        try
        {
            await Task.WhenAll(_timers).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A timer loop that failed must not skip the termination notice and the streams' closing below.
            Logger.LogWarning(ex, "A background loop of the client had failed");
        }

        var notify = new NotifyClientTerminationRequest();
        if (_group is not null)
        {
            notify.Group = _group;
        }

        foreach (Endpoint endpoint in _telemetry.Keys)
        {
            try
            {
                await Channel.UnaryAsync(endpoint, (c, o) => c.NotifyClientTerminationAsync(notify, o), null, CancellationToken.None)
                    .ConfigureAwait(false);
            }
            catch (ClientException ex)
            {
                Logger.LogDebug("NotifyClientTermination to {Endpoint} failed: {Message}", endpoint, ex.Message);
            }
        }

        foreach (TelemetrySession session in _telemetry.Values)
        {
            await session.DisposeAsync().ConfigureAwait(false);
        }

        Channel.Dispose();
        _shutdown.Dispose();
    }

    /// <summary>The <c>user_agent</c> part of Settings.</summary>
    public static UA UserAgent() => new()
    {
        Language = Language.DotNet,
        Version = ClientConfig.Version,
        Platform = System.Runtime.InteropServices.RuntimeInformation.OSDescription,
        Hostname = Environment.MachineName,
    };
}
