using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using HalfMsg.Broker.FrontEnds.Remoting;
using HalfMsg.Broker.Hosting;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.TestKit;
using Microsoft.Extensions.DependencyInjection;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// Review 2026-12-07 (Remoting TLS): with <c>--remoting-tls auto</c> (the default) a Remoting connection first waits for
/// its first byte (PortTls) for as long as a session may stay idle. That wait heeded only the connection's close, not
/// Kestrel's close request at a stop, so a connection that had sent nothing yet (a TCP health probe, a client between
/// connect and its first request) held the stop for the host's whole shutdown timeout (8 s), where a session is ended at
/// once (ShutdownAndStartTests: the idle Remoting connection).
/// </summary>
public sealed class RemotingSilentConnectionStopTests
{
    private static string P(int port) => port.ToString(CultureInfo.InvariantCulture);

    [Theory]
    [InlineData("auto")]
    [InlineData("required")]
    public async Task Stopping_with_a_silent_remoting_connection_open_does_not_wait_the_shutdown_timeout(string tls)
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-silentstop-" + Guid.NewGuid().ToString("N")[..12]);
        int remoting = FreePorts.Next();
        var host = await BrokerHost.StartAsync(["--data-dir", dir, "--grpc-port", P(FreePorts.Next()), "--http-port", P(FreePorts.Next()),
            "--remoting-port", P(remoting), "--namesrv-port", "0", "--remoting-tls", tls]);
        bool stopped = false;
        try
        {
            using var silent = new TcpClient();
            await silent.ConnectAsync(IPAddress.Loopback, remoting);
            // The connection is counted (the limit comes before the first byte's wait): it is in that wait now.
            var server = host.Services.GetRequiredService<RemotingServer>();
            await RemotingBroker.EventuallyAsync(() => Task.FromResult(server.Connections), n => n == 1, TimeSpan.FromSeconds(20),
                "the silent connection accepted");
            var sw = Stopwatch.StartNew();
            stopped = true;
            await host.DisposeAsync();
            // Not the 8 s backstop (HostOptions.ShutdownTimeout): the connection was ended, not waited out.
            Assert.True(sw.Elapsed < TimeSpan.FromSeconds(5), $"stopping took {sw.Elapsed.TotalSeconds:0.0} s with a silent Remoting connection open");
        }
        finally
        {
            if (!stopped) await host.DisposeAsync();
            try { Directory.Delete(dir, true); } catch (IOException) { }
        }
    }
}
