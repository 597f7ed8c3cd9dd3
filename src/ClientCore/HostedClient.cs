using Microsoft.Extensions.Hosting;

namespace HalfMsg.ClientCore;

/// <summary>
/// A client registered in dependency injection and started with the host: <see cref="IHostedService.StartAsync"/>
/// creates it (route lookups, Telemetry, the broker's Settings), <see cref="IHostedService.StopAsync"/> stops it within
/// the host's shutdown token (when a stop function was given) and disposes it (NotifyClientTermination, streams
/// closed). Resolve the client only after the host has started.
/// </summary>
/// <typeparam name="TClient">The client type.</typeparam>
public sealed class HostedClient<TClient> : IHostedService, IAsyncDisposable
    where TClient : class, IAsyncDisposable
{
    private readonly Func<CancellationToken, Task<TClient>> _start;
    private readonly Func<TClient, CancellationToken, Task>? _stop;
    private TClient? _client;

    /// <summary>Creates the hosted client; <paramref name="start"/> creates and starts the client.</summary>
    public HostedClient(Func<CancellationToken, Task<TClient>> start) : this(start, stop: null)
    {
    }

    /// <summary>Creates the hosted client; <paramref name="start"/> creates and starts the client, <paramref name="stop"/>
    /// (if any) stops it gracefully within the host's shutdown token before it is disposed.</summary>
    public HostedClient(Func<CancellationToken, Task<TClient>> start, Func<TClient, CancellationToken, Task>? stop)
    {
        _start = start ?? throw new ArgumentNullException(nameof(start));
        _stop = stop;
    }

    /// <summary>The started client.</summary>
    /// <exception cref="InvalidOperationException">The host has not started yet (or has stopped).</exception>
    public TClient Client => _client ?? throw new InvalidOperationException(
        $"The {typeof(TClient).Name} is started by the host: resolve it after IHost.StartAsync (for example inside a hosted service or a request).");

    /// <inheritdoc />
    public async Task StartAsync(CancellationToken cancellationToken) => _client ??= await _start(cancellationToken).ConfigureAwait(false);

    /// <summary>Stops the client with the host's <paramref name="cancellationToken"/> (its shutdown timeout), then
    /// disposes it.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        TClient? client = Interlocked.Exchange(ref _client, null);
        if (client is null)
        {
            return;
        }

        try
        {
            if (_stop is not null)
            {
                await _stop(client, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            await client.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        TClient? client = Interlocked.Exchange(ref _client, null);
        if (client is not null)
        {
            await client.DisposeAsync().ConfigureAwait(false);
        }
    }
}
