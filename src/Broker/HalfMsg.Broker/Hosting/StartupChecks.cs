using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Broker.Hosting;

/// <summary>
/// Checks that would otherwise fail late (after recovery, inside Kestrel, as a stack trace): the data directory is a
/// directory we can write, and each port is free on its address. Each failure is one line that names the flag to change.
/// </summary>
internal static class StartupChecks
{
    public static void Run(BrokerOptions options)
    {
        CheckDataDir(options.DataDir);
        CheckPort(options.Bind, options.GrpcPort, "--grpc-port", "--bind");
        CheckPort(options.AdminBind, options.HttpPort, "--http-port", "--admin-bind");
        CheckPort(options.Bind, options.RemotingPort, "--remoting-port", "--bind");
        // --remoting-port 0 turns the embedded name server off too (RemotingEndpoint): its port is not opened, so it is not
        // checked (until 2026-12-05 a gRPC-only broker was refused when a co-located name server held 9876; found by review).
        if (options.RemotingPort != 0) CheckPort(options.Bind, options.NameServerPort, "--namesrv-port", "--bind");
    }

    private static void CheckDataDir(string dataDir)
    {
        string full = Path.GetFullPath(dataDir);
        if (File.Exists(full))
            throw new BrokerConfigurationException($"--data-dir {full} is a file; point --data-dir at a directory (it is created if missing)");
        try
        {
            Directory.CreateDirectory(full);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new BrokerConfigurationException($"--data-dir {full} cannot be created: {ex.Message}");
        }
        // Whether it takes a durable write is the storage's own check at open (a storage failure, exit 74).
    }

    private static void CheckPort(string bind, int port, string portFlag, string bindFlag)
    {
        if (port == 0) return;
        var listener = new TcpListener(IPAddress.Parse(bind), port);
        try
        {
            listener.Start();
        }
        catch (SocketException ex) when (ex.SocketErrorCode == SocketError.AddressAlreadyInUse)
        {
            throw new BrokerConfigurationException($"{portFlag} {port} is already in use on {bind}; stop the other process or choose another {portFlag}");
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.AddressNotAvailable)
        {
            throw new BrokerConfigurationException($"{bindFlag} {bind} is not an address of this machine");
        }
        catch (SocketException ex) when (ex.SocketErrorCode is SocketError.AccessDenied)
        {
            throw new BrokerConfigurationException($"{portFlag} {port} needs privileges this process does not have; choose a port above 1023");
        }
        finally
        {
            listener.Stop();
        }
    }
}
