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
/// A new HTTP/2 connection whose set-up fails with an I/O error (the broker starts answering the connection preface and
/// then closes or resets the connection before any request was written on it): a connection failure, so the call goes to
/// the next address of a multi-address access point; with TLS no hint about client certificates, which a broker
/// refuses before it answers. A connection that ends after the request's HEADERS reached the broker is not one: the
/// broker may have the request. The evening session of 2026-12-07.
/// </summary>
public sealed class ConnectionSetupFailureTests
{
    private static AsyncUnaryCall<HeartbeatResponse> Heartbeat(MessagingService.MessagingServiceClient c, CallOptions o) =>
        c.HeartbeatAsync(new HeartbeatRequest(), o);

    public static TheoryData<bool, bool> Shapes => new() { { false, false }, { false, true }, { true, false }, { true, true } };

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task A_first_address_that_ends_the_connection_while_answering_the_preface_is_passed_over_within_the_call(bool tls, bool reset)
    {
        // The broker's first bytes were read (the wait for its answer is over), and the handler writes no request before
        // the broker's whole SETTINGS frame: the connection ends before its first request, always. (A broker that sends
        // its whole SETTINGS and then closes is passed over the same way when its close is read before the request is
        // written; after that, the broker may have the request, see below.)
        // Until the evening session of 2026-12-07 the call failed (Unavailable, the handler's "An HTTP/2 connection could
        // not be established ..." under an HttpRequestException that is not a connection failure), with TLS said it
        // might be a refused client certificate, and only later calls went to the second address.
        int calls = 0;
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var server = await TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, certificate: tls ? certificate : null);
        await using var peer = new FailingPeer(FailingPeer.Moment.Answering, reset, tls ? certificate : null);
        string endpoints = $"{peer.Endpoint};{server.Endpoint}";
        var endpoint = Endpoint.Parse(endpoints);
        using var channel = new RpcChannel(new ClientConfig(endpoints, null, TimeSpan.FromSeconds(20), null, null, Tls(endpoints, tls),
            connectTimeout: TimeSpan.FromSeconds(2), failbackInterval: Timeout.InfiniteTimeSpan));

        await channel.UnaryAsync(endpoint, Heartbeat, null, default);
        Assert.Equal(1, channel.CurrentIndex(endpoint));
        Assert.Equal(1, peer.Connections);
        Assert.Equal(1, Volatile.Read(ref calls));
    }

    [Theory]
    [MemberData(nameof(Shapes))]
    public async Task A_first_address_that_ends_the_connection_after_the_request_reached_it_fails_the_call_without_a_certificate_hint(bool tls, bool reset)
    {
        // The request's HEADERS reached the broker: it may have the request, so the call is not taken to the next address
        // (later calls are); and a broker that answered the preface did not refuse a client certificate.
        int calls = 0;
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var server = await TestGrpcServer.StartAsync(s => s.OnHeartbeat = (_, _) =>
        {
            Interlocked.Increment(ref calls);
            return Task.FromResult(new HeartbeatResponse { Status = new Status { Code = Code.Ok } });
        }, certificate: tls ? certificate : null);
        await using var peer = new FailingPeer(FailingPeer.Moment.Request, reset, tls ? certificate : null);
        string endpoints = $"{peer.Endpoint};{server.Endpoint}";
        var endpoint = Endpoint.Parse(endpoints);
        using var channel = new RpcChannel(new ClientConfig(endpoints, null, TimeSpan.FromSeconds(20), null, null, Tls(endpoints, tls),
            connectTimeout: TimeSpan.FromSeconds(2), failbackInterval: Timeout.InfiniteTimeSpan));

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(endpoint, Heartbeat, null, default));
        Assert.False(RpcChannel.IsConnectFailure(ex), ex.ToString());
        Assert.DoesNotContain("client certificate", ex.Message, StringComparison.Ordinal);
        Assert.Equal(0, Volatile.Read(ref calls));
        Assert.Equal(1, channel.CurrentIndex(endpoint)); // later calls go to the second
    }

    [Fact]
    public async Task With_tls_a_single_address_that_ends_the_connection_after_answering_gets_no_certificate_hint()
    {
        // The hint is for a connection ended before the broker's first bytes (how a TLS 1.3 broker refuses a client
        // certificate); until the evening session of 2026-12-07 it was given for any failure of a call's start.
        using X509Certificate2 certificate = TlsSilentListener.SelfSigned();
        await using var peer = new FailingPeer(FailingPeer.Moment.Request, reset: false, certificate);
        var endpoint = Endpoint.Parse(peer.Endpoint);
        using var channel = new RpcChannel(new ClientConfig(peer.Endpoint, null, TimeSpan.FromSeconds(20), null, null, Tls(peer.Endpoint, true),
            connectTimeout: TimeSpan.FromSeconds(2)));

        var ex = await Assert.ThrowsAsync<TransportException>(() => channel.UnaryAsync(endpoint, Heartbeat, null, default));
        Assert.DoesNotContain("client certificate", ex.Message, StringComparison.Ordinal);
    }

    private static ClientTls? Tls(string endpoints, bool tls) => tls
        ? ClientTls.Create("ProducerOptions", endpoints, useTls: true, new TlsOptions { AllowUntrustedServerCertificate = true }, null)
        : null;
}
