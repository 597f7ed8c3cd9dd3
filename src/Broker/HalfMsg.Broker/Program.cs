using HalfMsg.Broker.Hosting;

// HalfMsgBroker: a RocketMQ-compatible transactional message broker. See README.md for flags and architecture.
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
    await using var host = await BrokerHost.StartAsync(args);
    await host.WaitForShutdownAsync();
    return 0;
}
catch (BrokerConfigurationException ex)
{
    // One line that names the flag to change; nothing has been recovered or opened yet.
    Console.Error.WriteLine($"halfmsg-broker: {ex.Message}");
    return 2;
}
