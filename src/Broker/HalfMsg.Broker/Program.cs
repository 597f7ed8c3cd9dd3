using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Hosting;

// HalfMsgBroker: a RocketMQ-compatible transactional message broker. See README.md for flags and architecture.
// Exit codes: 0 stopped cleanly; 2 refused to start (invalid configuration, data dir in use by another broker, a log
// that cannot hold the configured maximum message size); 74 storage failure (the data dir is not writable, or the log
// failed while running): restart it once the disk is fixed.
if (args.Any(a => a is "--help" or "-h"))
{
    Console.Out.Write(BrokerConfiguration.HelpText());
    return 0;
}
if (args.Any(a => a is "--version"))
{
    Console.Out.WriteLine($"HalfMsgBroker {BrokerConfiguration.Version}");
    return 0;
}
try
{
    var host = await BrokerHost.StartAsync(args);
    try
    {
        await host.WaitForShutdownAsync();
    }
    finally
    {
        await host.DisposeAsync();
    }
    return host.ExitCode;
}
catch (BrokerConfigurationException ex)
{
    // One line that names the flag to change; nothing has been recovered or opened yet.
    Console.Error.WriteLine($"halfmsg-broker: {ex.Message}");
    return BrokerHost.ExitConfiguration;
}
catch (DataDirLockedException ex)
{
    Console.Error.WriteLine($"halfmsg-broker: {ex.Message}");
    return BrokerHost.ExitConfiguration;
}
catch (LogLayoutException ex)
{
    Console.Error.WriteLine($"halfmsg-broker: invalid configuration: {ex.Message}");
    return BrokerHost.ExitConfiguration;
}
catch (StorageFailureException ex)
{
    Console.Error.WriteLine($"halfmsg-broker: {ex.Message}");
    return BrokerHost.ExitStorageFailure;
}
