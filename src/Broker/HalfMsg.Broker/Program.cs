using HalfMsg.Broker.Core.Storage;
using HalfMsg.Broker.Hosting;

// HalfMsgBroker: a RocketMQ-compatible transactional message broker. See README.md for flags and architecture.
// Exit codes: 0 stopped cleanly; 2 refused to start (invalid configuration, data dir in use by another broker, a log
// that cannot hold the configured maximum message size); 74 storage failure (the data dir is not writable, or the log
// failed while running; the broker then stops by itself): restart it once the disk is fixed; 1 any other failure.
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
catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
{
    // A file of the data dir that cannot be opened for writing (broker.lock or log/commit-meta owned by another user
    // after a run as root, a read-only mount of one file): a storage failure, one line. Until 2026-12-05 this was an
    // unhandled exception, a stack trace and SIGABRT (exit 134), which systemd's Restart=on-failure restarted in a loop
    // (found by review).
    Console.Error.WriteLine($"halfmsg-broker: storage failure: {ex.Message}");
    return BrokerHost.ExitStorageFailure;
}
catch (Exception ex)
{
    // Last resort: still one line, never a stack trace and SIGABRT.
    Console.Error.WriteLine($"halfmsg-broker: failed: {ex.GetType().Name}: {ex.Message}");
    return BrokerHost.ExitFailure;
}
