using System.Globalization;
using System.Net;
using System.Security.Cryptography.X509Certificates;
using System.Text.RegularExpressions;
using Apache.Rocketmq.V2;
using HalfMsg.Broker.Tests.Admin;
using HalfMsg.Broker.Tests.Infrastructure;
using HalfMsg.Protocol.Grpc;
using HalfMsg.Protocol.Remoting;
using HalfMsg.TestKit;
using static HalfMsg.Broker.Tests.Infrastructure.RemotingBroker;

namespace HalfMsg.Broker.Tests.Hosting;

/// <summary>
/// TLS on the Remoting and name-server ports (<c>--remoting-tls</c>), against the real broker process. A Java 4.x client
/// with <c>-Dtls.enable=true</c> (or <c>ClientConfig.setUseTLS(true)</c>) opens every connection with a TLS handshake, as
/// Apache's broker and name server accept by default (<c>tls.server.mode=permissive</c>); until 2026-12-07 these ports
/// spoke cleartext only and such a client could not connect at all.
/// </summary>
public sealed class RemotingTlsTests
{
    private const int Queues = 8; // --queues-per-topic's default

    private static string? Thumbprint(X509Certificate? cert) => cert is null ? null : new X509Certificate2(cert).Thumbprint;

    /// <summary>A plain send, and a transactional half committed with END_TRANSACTION (one-way, as Java sends it), both
    /// pulled back on <paramref name="c"/>.</summary>
    private static async Task SendCommitAndPullAsync(RemotingTestClient c, string topic)
    {
        await SendAsync(c, topic, "plain over " + topic);
        var producer = new RemotingTransactionProducer(c, "PG_" + topic);
        await producer.HeartbeatAsync();
        var (uniq, half) = await producer.SendHalfAsync(topic, "half over " + topic);
        Assert.True(half.Code == ResponseCode.Success, $"half send failed: {half.Code} {half.Remark}");
        await producer.EndAsync(uniq, half, MessageSysFlag.TransactionCommitType);
        var got = await EventuallyAsync(() => PullAllAsync(c, "CG_" + topic, topic, Queues), all => all.Count >= 2,
            TimeSpan.FromSeconds(20), "the plain message and the committed half to be pulled");
        Assert.Equal(["half over " + topic, "plain over " + topic], got.Select(BodyOf).Order(StringComparer.Ordinal).ToList());
    }

    /// <summary>Whether the broker closed a cleartext connection before answering it (<c>required</c>).</summary>
    private static async Task<bool> ClearTextRefusedAsync(int port)
    {
        await using var plain = await RemotingTestClient.ConnectAsync(port);
        try
        {
            _ = await plain.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" }, timeout: TimeSpan.FromSeconds(20));
            return false;
        }
        catch (IOException)
        {
            // Closed: the pending request fails as soon as the connection does.
        }
        await plain.Closed.WaitAsync(TimeSpan.FromSeconds(20));
        return true;
    }

    [Fact]
    public async Task By_default_a_TLS_client_sends_commits_a_half_and_pulls_them_back_and_cleartext_still_works_with_the_gRPC_ports_certificate()
    {
        await using var broker = await BrokerProcess.StartAsync();
        string? remotingCert = null, nameServerCert = null, grpcCert = null;

        // The name server over TLS, as a Java client with tls.enable asks it for the route first.
        await using (var ns = await RemotingTestClient.ConnectTlsAsync(broker.NameServerPort, (_, cert, _, _) => { nameServerCert = Thumbprint(cert); return true; }))
        {
            var route = await ns.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" });
            Assert.Equal(ResponseCode.Success, route.Code);
        }

        string topic = Unique("RemotingTls");
        X509Certificate2? seen = null;
        await using (var secure = await RemotingTestClient.ConnectTlsAsync(broker.RemotingPort, (_, cert, _, _) =>
        {
            seen = cert is null ? null : new X509Certificate2(cert);
            remotingCert = seen?.Thumbprint;
            return true; // as the Java client's default tls.test.mode.enable=true: no verification
        }))
        {
            await SendCommitAndPullAsync(secure, topic);
        }

        // Cleartext on the same ports (ali-ons, Java without tls.enable), unchanged.
        await using (var plain = await RemotingTestClient.ConnectAsync(broker.RemotingPort))
        {
            await SendCommitAndPullAsync(plain, Unique("RemotingClear"));
        }
        await using (var plainNs = await RemotingTestClient.ConnectAsync(broker.NameServerPort))
        {
            Assert.Equal(ResponseCode.Success, (await plainNs.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" })).Code);
        }

        // One certificate for every port: the self-signed one made for gRPC is the one the Remoting ports serve.
        using (var grpc = new GrpcTestClient(broker.Endpoint, tls: (_, cert, _, _) => { grpcCert = Thumbprint(cert); return true; }))
        {
            var route = await grpc.UnaryAsync(GrpcMethods.QueryRoute, new QueryRouteRequest { Topic = new Resource { Name = topic } },
                QueryRouteResponse.Parser, timeout: TimeSpan.FromSeconds(20));
            Assert.NotNull(route.Response);
        }
        Assert.NotNull(seen);
        Assert.Equal(seen!.Subject, seen.Issuer);
        Assert.Contains(IPAddress.Loopback, seen.Extensions.OfType<X509SubjectAlternativeNameExtension>().Single().EnumerateIPAddresses());
        Assert.Equal(remotingCert, nameServerCert);
        Assert.Equal(remotingCert, grpcCert);

        // The ready line shows the Remoting ports and their TLS mode as it does the gRPC port's.
        Assert.Matches(new Regex($@"ready: gRPC \S+:{broker.GrpcPort} \(TLS auto, self-signed\), Remoting \S+:{broker.RemotingPort}, name server :{broker.NameServerPort} \(TLS auto, self-signed\)"),
            broker.Output);
    }

    [Fact]
    public async Task Required_closes_cleartext_connections_on_both_ports_and_serves_the_configured_certificate_and_off_answers_no_handshake()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-remoting-tls-" + Guid.NewGuid().ToString("N"));
        try
        {
            var (certificate, key, made) = GrpcTlsTests.WritePem(dir);
            await using (var broker = await BrokerProcess.StartAsync("--remoting-tls", "required", "--grpc-tls", "off",
                "--grpc-tls-certificate", certificate, "--grpc-tls-key", key))
            {
                string? thumbprint = null;
                await using (var secure = await RemotingTestClient.ConnectTlsAsync(broker.RemotingPort, (_, cert, _, _) => { thumbprint = Thumbprint(cert); return true; }))
                {
                    await SendCommitAndPullAsync(secure, Unique("RemotingTlsReq"));
                }
                Assert.Equal(made.Thumbprint, thumbprint);
                await using (var ns = await RemotingTestClient.ConnectTlsAsync(broker.NameServerPort))
                {
                    Assert.Equal(ResponseCode.Success, (await ns.InvokeAsync(RequestCode.GetRouteInfoByTopic, new() { ["topic"] = "TBW102" })).Code);
                }
                Assert.True(await ClearTextRefusedAsync(broker.RemotingPort), "a cleartext Remoting request was answered with --remoting-tls required");
                Assert.True(await ClearTextRefusedAsync(broker.NameServerPort), "a cleartext name-server request was answered with --remoting-tls required");
                // The broker keeps serving TLS clients after refusing cleartext ones.
                await using (var again = await RemotingTestClient.ConnectTlsAsync(broker.RemotingPort))
                {
                    await SendAsync(again, Unique("RemotingTlsAfter"), "after the refusals");
                }
                Assert.Contains("(TLS required)", broker.Output, StringComparison.Ordinal);
            }

            await using (var broker = await BrokerProcess.StartAsync("--remoting-tls", "off"))
            {
                // The handshake's first bytes read as a frame length far over the limit: the connection is closed.
                await Assert.ThrowsAnyAsync<Exception>(() => RemotingTestClient.ConnectTlsAsync(broker.RemotingPort, handshakeTimeout: TimeSpan.FromSeconds(20)));
                await Assert.ThrowsAnyAsync<Exception>(() => RemotingTestClient.ConnectTlsAsync(broker.NameServerPort, handshakeTimeout: TimeSpan.FromSeconds(20)));
                await using var plain = await RemotingTestClient.ConnectAsync(broker.RemotingPort);
                await SendCommitAndPullAsync(plain, Unique("RemotingTlsOff"));
                Assert.Matches(new Regex($@"Remoting \S+:{broker.RemotingPort}, name server :{broker.NameServerPort} \(TLS off\)"), broker.Output);
            }
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    [Fact]
    public async Task A_wrong_certificate_stops_the_start_with_its_flag_named_when_only_the_Remoting_port_uses_TLS()
    {
        string dir = Path.Combine(Path.GetTempPath(), "halfmsg-remoting-tls-bad-" + Guid.NewGuid().ToString("N"));
        try
        {
            var missing = await BrokerCli.RunAsync(["--grpc-tls", "off", "--remoting-tls", "required", "--grpc-tls-certificate", Path.Combine(dir, "nope.crt"),
                "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, missing.ExitCode);
            Assert.Contains("--grpc-tls-certificate: no file", missing.StdOut + missing.StdErr);
            var mode = await BrokerCli.RunAsync(["--remoting-tls", "maybe", "--data-dir", Path.Combine(dir, "data")]);
            Assert.NotEqual(0, mode.ExitCode);
            Assert.Contains("--remoting-tls must be 'auto', 'required' or 'off', not 'maybe'", mode.StdOut + mode.StdErr);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
