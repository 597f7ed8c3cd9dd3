using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;

namespace HalfMsg.Fuzz.Capture;

/// <summary>
/// A TCP proxy on 127.0.0.1 in front of one broker port that records every Remoting frame passing in either direction,
/// byte for byte, as it went over the wire (frames are cut by their length prefix; nothing is re-encoded).
/// </summary>
public sealed class RecordingProxy : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<Task> _pumps = [];
    private readonly Task _accept;

    public RecordingProxy(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        _accept = Task.Run(AcceptLoopAsync);
    }

    public int Port => ((IPEndPoint)_listener.LocalEndpoint).Port;

    /// <summary>Frames in arrival order; <c>ToServer</c> is true for client-to-broker frames.</summary>
    public ConcurrentQueue<(bool ToServer, byte[] Frame)> Frames { get; } = new();

    private readonly List<MemoryStream> _clientStreams = [];

    /// <summary>The raw client-to-broker bytes of each connection so far (any protocol, e.g. h2c), at most 1 MiB each.</summary>
    public IReadOnlyList<byte[]> ClientStreams()
    {
        lock (_clientStreams) return _clientStreams.Select(s => s.ToArray()).ToList();
    }

    private async Task AcceptLoopAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try { client = await _listener.AcceptTcpClientAsync(_stop.Token); }
            catch (Exception) { return; }
            var server = new TcpClient();
            try { await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token); }
            catch (Exception) { client.Dispose(); server.Dispose(); continue; }
            lock (_pumps)
            {
                _pumps.Add(PumpAsync(client, server, toServer: true));
                _pumps.Add(PumpAsync(server, client, toServer: false));
            }
        }
    }

    private async Task PumpAsync(TcpClient from, TcpClient to, bool toServer)
    {
        var pending = new List<byte>();
        var buf = new byte[64 * 1024];
        var raw = new MemoryStream();
        bool remoting = true;
        if (toServer) lock (_clientStreams) _clientStreams.Add(raw);
        try
        {
            var input = from.GetStream();
            var output = to.GetStream();
            while (true)
            {
                int n = await input.ReadAsync(buf, _stop.Token);
                if (n == 0) break;
                await output.WriteAsync(buf.AsMemory(0, n), _stop.Token);
                if (toServer) lock (_clientStreams) if (raw.Length < 1 << 20) raw.Write(buf, 0, n);
                if (remoting) pending.AddRange(buf.AsSpan(0, n));
                while (remoting && pending.Count >= 4)
                {
                    int total = BinaryPrimitives.ReadInt32BigEndian(System.Runtime.InteropServices.CollectionsMarshal.AsSpan(pending));
                    if (total < 4 || total > 64 * 1024 * 1024) { pending.Clear(); remoting = false; break; } // not Remoting: stop cutting
                    if (pending.Count < 4 + total) break;
                    Frames.Enqueue((toServer, pending.GetRange(0, 4 + total).ToArray()));
                    pending.RemoveRange(0, 4 + total);
                }
            }
        }
        catch (Exception)
        {
            // a side closed
        }
        finally
        {
            from.Dispose();
            to.Dispose();
        }
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _listener.Stop();
        Task[] pumps;
        lock (_pumps) pumps = [.. _pumps];
        try { await Task.WhenAll(pumps.Append(_accept)).WaitAsync(TimeSpan.FromSeconds(5)); } catch (Exception) { }
        _stop.Dispose();
    }
}
