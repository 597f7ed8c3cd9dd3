using HalfMsg.Broker.Hosting;

// HalfMsgBroker: a RocketMQ-compatible transactional message broker. See README.md for flags and architecture.
try
{
    await using var host = await BrokerHost.StartAsync(args);
    await host.WaitForShutdownAsync();
    return 0;
}
catch (BrokerConfigurationException ex)
{
    Console.Error.WriteLine($"halfmsg-broker: invalid configuration: {ex.Message}");
    return 2;
}
