using System.Reflection;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Hosting;
using HalfMsg.Cli;
using HalfMsg.TestKit;

namespace HalfMsg.Ops.Tests;

/// <summary>
/// `halfmsg message find --key` while the broker's message index is still rebuilt after a start (review 2026-12-06):
/// it said "no message with key ... in the index" (exit 3) for a message the rebuild had not reached yet. Now it prints
/// the broker's IndexWarming reason (still exit 3), and warns that a list found meanwhile may be partial. Its own broker:
/// the warm-up is started by reflection and never ends, which the shared fixture's other tests must not see.
/// </summary>
public sealed class MessageFindWarmingTests : IAsyncLifetime
{
    private readonly string _dataDir = Path.Combine(Path.GetTempPath(), "halfmsg-ops-warm-" + Guid.NewGuid().ToString("N")[..12]);
    private BrokerHost _host = null!;
    private int _httpPort;

    public async Task InitializeAsync()
    {
        _httpPort = FreePorts.Next();
        _host = await BrokerHost.StartAsync(["--data-dir", _dataDir, "--grpc-port", FreePorts.Next().ToString(), "--http-port", _httpPort.ToString(),
            "--remoting-port", "0", "--namesrv-port", "0", "--queues-per-topic", "1"]);
    }

    public async Task DisposeAsync()
    {
        await _host.DisposeAsync();
        try { Directory.Delete(_dataDir, true); } catch (IOException) { }
    }

    private async Task<(int ExitCode, string Out, string Err)> Halfmsg(params string[] args)
    {
        using var output = new StringWriter();
        using var error = new StringWriter();
        int code = await HalfMsgCli.RunAsync([.. args, "--url", $"http://127.0.0.1:{_httpPort}"], output, error, _ => null);
        return (code, output.ToString(), error.ToString());
    }

    [Fact]
    public async Task Message_find_during_the_index_warm_up_says_so()
    {
        Assert.True((await _host.Engine.SendAsync(new MessageDraft { Topic = "warm-orders", MessageId = "warm-1", Keys = ["order-warm"], Body = new byte[] { 1 } })).IsOk);
        var before = await Halfmsg("message", "find", "--key", "order-warm");
        Assert.Equal(ExitCodes.Ok, before.ExitCode);
        Assert.Equal("", before.Err);

        // What BrokerEngine.StartIndexRebuild does at start (internal to the core: reached by reflection here).
        typeof(HalfMsg.Broker.Core.Diagnostics.MessageIndex).GetMethod("BeginWarmup", BindingFlags.Instance | BindingFlags.NonPublic)!
            .Invoke(_host.Engine.MessageIndex, null);

        var none = await Halfmsg("message", "find", "--key", "order-not-reached-yet");
        Assert.Equal(ExitCodes.NotFound, none.ExitCode);
        Assert.Contains("still being rebuilt", none.Err);
        Assert.DoesNotContain("no message with key 'order-not-reached-yet' in the index", none.Err);

        var partial = await Halfmsg("message", "find", "--key", "order-warm");
        Assert.Equal(ExitCodes.Ok, partial.ExitCode);
        Assert.Contains("warm-1", partial.Out);
        Assert.Contains("still being rebuilt", partial.Err);
    }
}
