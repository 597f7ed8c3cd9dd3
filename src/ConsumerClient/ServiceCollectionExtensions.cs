using HalfMsg.ClientCore;
using HalfMsg.ConsumerClient;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers a HalfMsg <see cref="PushConsumer"/> in an <see cref="IServiceCollection"/>.</summary>
public static class ConsumerServiceCollectionExtensions
{
    /// <summary>
    /// Registers one <see cref="PushConsumer"/> that consumes while the host runs: started with the host, disposed
    /// (in-flight handlers finished) when it stops. Options come from <c>IOptions&lt;PushConsumerOptions&gt;</c> (bind
    /// them with the overload that takes an <see cref="IConfiguration"/>), then <paramref name="configure"/>, which must supply the
    /// <see cref="PushConsumerOptions.Handler"/>; the host's <see cref="ILoggerFactory"/> is used unless the options
    /// name one.
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configure">Returns the final options from the bound ones, e.g. <c>(sp, o) =&gt; o with { Handler = ... }</c>.</param>
    public static IServiceCollection AddHalfMsgPushConsumer(this IServiceCollection services,
        Func<IServiceProvider, PushConsumerOptions, PushConsumerOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(configure);
        services.AddOptions<PushConsumerOptions>();
        services.AddSingleton(sp =>
        {
            PushConsumerOptions options = configure(sp, sp.GetRequiredService<IOptions<PushConsumerOptions>>().Value);
            if (options.LoggerFactory is null && sp.GetService<ILoggerFactory>() is { } loggers)
            {
                options = options with { LoggerFactory = loggers };
            }

            return new HostedClient<PushConsumer>(ct => PushConsumer.StartAsync(options, ct), (consumer, ct) => consumer.StopAsync(ct));
        });
        services.AddHostedService(sp => sp.GetRequiredService<HostedClient<PushConsumer>>());
        services.AddSingleton(sp => sp.GetRequiredService<HostedClient<PushConsumer>>().Client);
        return services;
    }

    /// <summary>
    /// As <see cref="AddHalfMsgPushConsumer(IServiceCollection, Func{IServiceProvider, PushConsumerOptions, PushConsumerOptions})"/>,
    /// with the options bound from <paramref name="configuration"/> (e.g. the section <c>HalfMsg:Consumer</c> with
    /// <c>Endpoints</c>, <c>ConsumerGroup</c>, <c>Subscriptions:&lt;topic&gt;</c> = tag expression, <c>MaxConcurrency</c>, ...).
    /// </summary>
    /// <param name="services">The service collection.</param>
    /// <param name="configuration">The configuration section holding <see cref="PushConsumerOptions"/>.</param>
    /// <param name="configure">Returns the final options from the bound ones; must supply the handler.</param>
    public static IServiceCollection AddHalfMsgPushConsumer(this IServiceCollection services, IConfiguration configuration,
        Func<IServiceProvider, PushConsumerOptions, PushConsumerOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configuration);
        services.AddOptions<PushConsumerOptions>().Bind(configuration);
        return services.AddHalfMsgPushConsumer(configure);
    }
}
