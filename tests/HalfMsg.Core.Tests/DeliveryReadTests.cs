using HalfMsg.Broker.Core;
using HalfMsg.Broker.Core.Model;
using HalfMsg.Broker.Core.Storage;

namespace HalfMsg.Core.Tests;

/// <summary>
/// FasterLog reads every record from the device, even one still in memory; without the record's size it reads the
/// entry header first and then the rest. A delivery knows the size from its queue entry, so each delivered body costs
/// one device read.
/// </summary>
public sealed class DeliveryReadTests
{
    [Fact]
    public async Task Each_delivered_body_is_one_device_read_and_matches_what_was_sent()
    {
        FaultInjectionDevice? device = null;
        await using var h = await EngineHarness.StartAsync(o => o with { WrapLogDevice = d => device = new FaultInjectionDevice(d) });
        var sent = new List<string>();
        for (int i = 0; i < 24; i++)
        {
            string body = $"m{i}-" + new string('x', 700 + 37 * i); // sizes on both sides of a 512-byte sector
            sent.Add(body);
            if (i % 2 == 0)
            {
                Assert.True((await h.Engine.SendAsync(h.Draft("t", body))).IsOk);
            }
            else
            {
                string tx = await h.SendHalfAsync("t", body);
                Assert.True((await h.Engine.EndTransactionAsync(tx, null, TransactionResolution.Commit, DecisionSource.Client)).IsOk);
            }
        }

        int before = Volatile.Read(ref device!.Reads);
        var got = new List<string>();
        while (got.Count < sent.Count) got.AddRange((await h.ReceiveWhenVisibleAsync("g", "t", batch: 8)).Select(m => m.Text()));

        Assert.Equal(sent.Order(), got.Order());
        Assert.Equal(sent.Count, Volatile.Read(ref device.Reads) - before);
    }
}
