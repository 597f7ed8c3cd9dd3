using System.Security.Cryptography.X509Certificates;
using Apache.Rocketmq.V2;
using Grpc.Core;
using HalfMsg.Client.Tests.Infrastructure;
using HalfMsg.ClientCore;
using HalfMsg.ClientCore.Transport;
using Endpoint = HalfMsg.ClientCore.Transport.Endpoint;
using Status = Apache.Rocketmq.V2.Status;

namespace HalfMsg.Client.Tests;

/// <summary>
/// With TLS, an address that completes the handshake and then says nothing at HTTP/2 (a TLS-terminating load balancer
/// without a backend, a hung broker): with another address to go to, the broker's first bytes after the handshake are
/// awaited for ConnectTimeout only (the afternoon session of 2026-12-07); an address alone is waited for within the
/// call's deadline, as before.
/// </summary>
public sealed class TlsSilentAddressTests
{
    private static AsyncUnaryCall<HeartbeatResponse> Heartbeat(MessagingService.MessagingServiceClient c, CallOptions o) =>
        c.HeartbeatAsync(new HeartbeatRequest(), o);

    private static ClientTls Tls(string endpoints) =>
        ClientTls.Create("ProducerOptions", endpoints, useTls: true, new TlsOptions { AllowUntrustedServerCertificate = true }, null)!;

    [Fact]
    public async Task With_tls_a_first_address_that_handshakes_and_then_stays_silent_is_passed_over_at_the_connect_timeout()
    {
        // Until the afternoon session of 2026-12-07 the connection counted as made once TLS was (SocketsHttpHandler
        // does TLS after the connect callback, so the cleartext preface check could not run): the request was written
        // into it and the call waited for its deadline (20 s here), or the HTTP/2 keep-alive ping's (about 10 s), failed,
        // and no call moved to the second address.
        int calls = 0;
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var server = await TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, certificate: certificate);
        await using var silent = new TlsSilentListener();
        string endpoints = $"{silent.Endpoint};{server.Endpoint}";
        var endpoint = Endpoint.Parse(endpoints);
        using var channel = new RpcChannel(new ClientConfig(endpoints, null, TimeSpan.FromSeconds(20), null, null, Tls(endpoints),
            connectTimeout: TimeSpan.FromSeconds(1), failbackInterval: Timeout.InfiniteTimeSpan));

        var watch = System.Diagnostics.Stopwatch.StartNew();
        await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        Assert.InRange(watch.Elapsed, TimeSpan.Zero, TimeSpan.FromSeconds(8));
        Assert.Equal(1, channel.CurrentIndex(endpoint));
        Assert.Equal(1, silent.Handshakes); // the handshake was made: only the HTTP/2 answer was missing
        Assert.Equal(1, Volatile.Read(ref calls));

        for (int i = 0; i < 5; i++)
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        }

        Assert.Equal(6, Volatile.Read(ref calls));
        Assert.Equal(1, silent.Connections); // not tried again on every call
    }

    [Fact]
    public async Task With_tls_a_first_address_that_resets_the_connection_after_the_handshake_is_passed_over_within_the_call()
    {
        // The connection is reset after the handshake, before the broker's HTTP/2 answer: nothing of the request was
        // written, so the call goes to the second address. Until the afternoon session of 2026-12-07 it failed there,
        // and was no connection failure, so it did not go on.
        int calls = 0;
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var server = await TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, certificate: certificate);
        await using var closing = new TlsSilentListener(resetAfterHandshake: true);
        string endpoints = $"{closing.Endpoint};{server.Endpoint}";
        var endpoint = Endpoint.Parse(endpoints);
        using var channel = new RpcChannel(new ClientConfig(endpoints, null, TimeSpan.FromSeconds(20), null, null, Tls(endpoints),
            connectTimeout: TimeSpan.FromSeconds(1), failbackInterval: Timeout.InfiniteTimeSpan));

        await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        Assert.Equal(1, channel.CurrentIndex(endpoint));
        Assert.Equal(1, closing.Handshakes);
        Assert.Equal(1, Volatile.Read(ref calls));
    }

    [Fact]
    public async Task With_tls_a_server_that_sends_its_settings_before_reading_the_client_preface_is_answered_through_the_preface_wait()
    {
        // A Netty server (grpc-java, as Apache RocketMQ's proxy) sends its SETTINGS as soon as the connection is up,
        // before the client's preface: the wait for the broker's answer after the handshake (an address of several)
        // reads them, and the handler's preface is not sent twice (the proxy checks the first 24 bytes and relays
        // the rest to a backend that would refuse a second preface).
        int calls = 0;
        await using var backend = await TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        });
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var server = new SettingsFirstTlsProxy(backend.Port, certificate);
        await using var refused = new TlsSilentListener(resetAfterHandshake: true); // a second address: the wait applies
        string endpoints = $"{server.Endpoint};{refused.Endpoint}";
        var endpoint = Endpoint.Parse(endpoints);
        using var channel = new RpcChannel(new ClientConfig(endpoints, null, TimeSpan.FromSeconds(20), null, null, Tls(endpoints),
            connectTimeout: TimeSpan.FromSeconds(2), failbackInterval: Timeout.InfiniteTimeSpan));

        for (int i = 0; i < 5; i++)
        {
            await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        }

        Assert.Equal(5, Volatile.Read(ref calls));
        Assert.Equal(0, channel.CurrentIndex(endpoint));
        Assert.Equal(1, server.SettingsFirst);
        Assert.Equal(0, refused.Connections);
    }

    [Fact]
    public async Task With_tls_a_single_address_that_handshakes_and_then_stays_silent_holds_the_call_to_its_deadline_only()
    {
        // An address alone has no other to pass over to: its connection is not cut short at ConnectTimeout.
        await using var silent = new TlsSilentListener();
        var endpoint = Endpoint.Parse(silent.Endpoint);
        // ConnectTimeout 1 s: the handshake (bounded by the handler at twice that) is made even on a loaded machine.
        using var channel = new RpcChannel(new ClientConfig(silent.Endpoint, null, TimeSpan.FromSeconds(3), null, null, Tls(silent.Endpoint),
            connectTimeout: TimeSpan.FromSeconds(1)));

        var watch = System.Diagnostics.Stopwatch.StartNew();
        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(endpoint, Heartbeat, null, default));
        Assert.InRange(watch.Elapsed, TimeSpan.FromMilliseconds(2900), TimeSpan.FromSeconds(10));
        Assert.True(ex.GrpcStatus == StatusCode.DeadlineExceeded, ex.ToString());
        Assert.Equal(1, silent.Handshakes);
    }
}
