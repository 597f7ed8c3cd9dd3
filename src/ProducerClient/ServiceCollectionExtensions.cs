using HalfMsg.ClientCore;
using HalfMsg.ProducerClient;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a HalfMsg <see cref="Producer"/> in an <see cref="IServiceCollection"/>.</summary>
public static class ProducerServiceCollectionExtensions
{
    /// <summary>
    /// Registers one <see cref="Producer"/>, started with the host and disposed when it stops. Options come from
    /// <c>IOptions&lt;ProducerOptions&gt;</c> (bind them with the overload that takes an <see cref="IConfiguration"/>), then
    /// <paramref name="configure"/> (for what configuration cannot hold, such as the <see cref="ProducerOptions.TransactionChecker"/>);
    /// the host's <see cref="ILoggerFactory"/> is used unless the options name one. Resolve <see cref="Producer"/> after
    /// the host has started.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Returns the final options from the bound ones, e.g. <c>(sp, o) =&gt; o with { TransactionChecker = ... }</c>.</param>
    public static IServiceCollection AddHalfMsgProducer(this IServiceCollection services,
        Func<IServiceProvider, ProducerOptions, ProducerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions<ProducerOptions>();
        services.AddSingleton(sp =>
        {
            ProducerOptions options = sp.GetRequiredService<IOptions<ProducerOptions>>().Value;
            options = configure?.Invoke(sp, options) ?? options;
            if (options.LoggerFactory is null && sp.GetService<ILoggerFactory>() is { } loggers)
            {
                options = options with { LoggerFactory = loggers };
            }

            return new HostedClient<Producer>(ct => Producer.StartAsync(options, ct));
        });
        services.AddHostedService(sp => sp.GetRequiredService<HostedClient<Producer>>());
        services.AddSingleton(sp => sp.GetRequiredService<HostedClient<Producer>>().Client);
        return services;
    }

    /// <summary>
    /// As <see cref="AddHalfMsgProducer(IServiceCollection, Func{IServiceProvider, ProducerOptions, ProducerOptions}?)"/>, with the
    /// options bound from <paramref name="configuration"/> (e.g. the section <c>HalfMsg:Producer</c> with <c>Endpoints</c>,
    /// <c>Topics</c>, <c>RequestTimeout</c>, <c>Namespace</c>, <c>Credentials:AccessKey</c>/<c>AccessSecret</c>).
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">The configuration section holding <see cref="ProducerOptions"/>.</param>
    /// <param name="configure">Returns the final options from the bound ones.</param>
    public static IServiceCollection AddHalfMsgProducer(this IServiceCollection services, IConfiguration configuration,
        Func<IServiceProvider, ProducerOptions, ProducerOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<ProducerOptions>().Bind(configuration);
        return services.AddHalfMsgProducer(configure);
    }
}
