using System.Net;
using System.Net.Sockets;
using System.Text;
using HalfMsg.Broker.Hosting;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// <see cref="PeerConnectionLimit"/> wired into Kestrel as the admin port wires it (the connection middleware before
/// the HTTP pipeline, <see cref="PeerConnectionLimit.TrackRequestsAsync"/> first in it), with a small limit and an
/// endpoint that holds its request until told: which connections are idle is Kestrel's real view, not a test's mark.
/// </summary>
public sealed class PeerConnectionLimitKestrelTests
{
    private const int Max = 4;

    private static async Task<Socket> ConnectAsync(int port, string from)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        socket.Bind(new IPEndPoint(IPAddress.Parse(from), 0));
        await socket.ConnectAsync(IPAddress.Loopback, port);
        return socket;
    }

    private static async Task SendAsync(Socket socket, string path, int port)
        => await socket.SendAsync(Encoding.ASCII.GetBytes($"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"));

    /// <summary>What the server sends before the deadline: its answer, null when it closed the connection first, or a
    /// note that it did neither.</summary>
    private static async Task<string?> ReceiveAsync(Socket socket, TimeSpan within)
    {
        var buffer = new byte[4096];
        using var cts = new CancellationTokenSource(within);
        try
        {
            int n = await socket.ReceiveAsync(buffer, SocketFlags.None, cts.Token);
            return n == 0 ? null : Encoding.ASCII.GetString(buffer, 0, n);
        }
        catch (SocketException)
        {
            return null; // reset: closed by the server
        }
        catch (OperationCanceledException)
        {
            return $"(nothing within {within.TotalSeconds} s: still open)";
        }
    }

    private static async Task WaitUntilAsync(Func<bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, what);
            await Task.Delay(20); // polling the server's own count
        }
    }

    /// <summary>
    /// Three connections with a request in progress and one silent fill the port: a new connection from another address
    /// closes the silent one, never one of the three; with all four busy the next is closed at once; released, the
    /// four answer 200. Until the evening session of 2026-12-07 a full admin port closed every new connection at once.
    /// </summary>
    [Fact]
    public async Task A_new_connection_closes_the_idle_one_never_one_with_a_request_in_progress_and_is_refused_when_none_is_idle()
    {
        var limit = new PeerConnectionLimit("test", Max, Max, NullLogger.Instance);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int started = 0, maxOpen = 0;
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            listen.Use(next => connection => limit.OnConnectionAsync(connection, next));
        }));
        await using WebApplication app = builder.Build();
        app.Use(limit.TrackRequestsAsync);
        app.Run(async context =>
        {
            InterlockedMax(ref maxOpen, limit.Open);
            if (context.Request.Path == "/slow")
            {
                Interlocked.Increment(ref started);
                await release.Task;
            }

            await context.Response.WriteAsync("ok");
        });
        await app.StartAsync();
        int port = new Uri(app.Urls.Single()).Port;

        var sockets = new List<Socket>();
        try
        {
            var slow = new List<Socket>();
            for (int i = 0; i < 3; i++)
            {
                Socket s = await ConnectAsync(port, "127.0.0.1");
                sockets.Add(s);
                slow.Add(s);
                await SendAsync(s, "/slow", port);
            }

            await WaitUntilAsync(() => Volatile.Read(ref started) == 3, "the three slow requests never started");
            Socket silent = await ConnectAsync(port, "127.0.0.1");
            sockets.Add(silent);
            await WaitUntilAsync(() => limit.Open == Max, "the silent connection was never counted");

            // A fifth from another address: the silent one makes room (127.0.0.1 holds the most, and of its four only
            // the silent one is idle), and the newcomer's request runs.
            Socket newcomer = await ConnectAsync(port, "127.0.0.2");
            sockets.Add(newcomer);
            slow.Add(newcomer);
            await SendAsync(newcomer, "/slow", port);
            Assert.Null(await ReceiveAsync(silent, TimeSpan.FromSeconds(20))); // closed by the server
            await WaitUntilAsync(() => Volatile.Read(ref started) == 4, "the newcomer's request never started");
            Assert.Equal(1, limit.Evicted);

            // All four busy: nothing is idle, so a sixth is closed at once.
            Socket over = await ConnectAsync(port, "127.0.0.3");
            sockets.Add(over);
            Assert.Null(await ReceiveAsync(over, TimeSpan.FromSeconds(20)));
            Assert.Equal(1, limit.Evicted);

            release.SetResult();
            foreach (Socket s in slow)
                Assert.StartsWith("HTTP/1.1 200", await ReceiveAsync(s, TimeSpan.FromSeconds(20)));
            Assert.InRange(Volatile.Read(ref maxOpen), 1, Max);
            Assert.InRange(limit.Open, 0, Max);
        }
        finally
        {
            release.TrySetResult();
            foreach (Socket s in sockets) s.Dispose();
            await app.StopAsync();
        }
    }

    /// <summary>A connection between two keep-alive requests is idle: it makes room for a newcomer of its own address.</summary>
    [Fact]
    public async Task A_keep_alive_connection_between_requests_makes_room_for_its_own_address()
    {
        var limit = new PeerConnectionLimit("test", 16, 2, NullLogger.Instance);
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, listen =>
        {
            listen.Protocols = HttpProtocols.Http1;
            listen.Use(next => connection => limit.OnConnectionAsync(connection, next));
        }));
        await using WebApplication app = builder.Build();
        app.Use(limit.TrackRequestsAsync);
        app.Run(context => context.Response.WriteAsync("ok"));
        await app.StartAsync();
        int port = new Uri(app.Urls.Single()).Port;

        var sockets = new List<Socket>();
        try
        {
            for (int i = 0; i < 3; i++)
            {
                Socket s = await ConnectAsync(port, "127.0.0.1");
                sockets.Add(s);
                await SendAsync(s, "/health", port);
                Assert.StartsWith("HTTP/1.1 200", await ReceiveAsync(s, TimeSpan.FromSeconds(20)));
            }

            // The longest idle of the address is closed (after what is left of its answer, if the body came on its own).
            string? rest;
            do rest = await ReceiveAsync(sockets[0], TimeSpan.FromSeconds(20));
            while (rest is not null && !rest.StartsWith("(nothing", StringComparison.Ordinal));
            Assert.Null(rest);
            Assert.Equal(1, limit.Evicted);
            Assert.Equal(2, limit.Open);
        }
        finally
        {
            foreach (Socket s in sockets) s.Dispose();
            await app.StopAsync();
        }
    }

    private static void InterlockedMax(ref int target, int value)
    {
        int seen;
        while ((seen = Volatile.Read(ref target)) < value && Interlocked.CompareExchange(ref target, value, seen) != seen)
        {
        }
    }
}
