using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Protocol.Tests;

/// <summary>The stored layout's properties carry a 16-bit length: what does not fit is left out, never thrown.</summary>
public sealed class StoredMessageCodecTests
{
    private static RemotingMessage Message(Dictionary<string, string> props) => new() { Topic = "T", Body = "b"u8.ToArray(), Properties = props };

    [Fact]
    public void Properties_over_32767_bytes_keep_the_system_ones_and_the_user_ones_that_fit()
    {
        var m = Message(new()
        {
            ["first"] = "1", ["huge"] = new string('x', 40_000), [MessageConst.UniqueKey] = "ID", [MessageConst.Tags] = "T",
            [MessageConst.Keys] = "k1 k2", ["last"] = "2",
        });
        byte[] bytes = StoredMessageCodec.Encode(m, out var dropped);
        Assert.Equal(["huge"], dropped);
        var back = Assert.Single(StoredMessageCodec.DecodeAll(bytes));
        Assert.Equal(new Dictionary<string, string>
        {
            ["first"] = "1", [MessageConst.UniqueKey] = "ID", [MessageConst.Tags] = "T", [MessageConst.Keys] = "k1 k2", ["last"] = "2",
        }, back.Properties);
    }

    [Fact]
    public void Keys_too_long_for_the_layout_are_left_out_before_the_id_and_tag()
    {
        var m = Message(new() { [MessageConst.UniqueKey] = "ID", [MessageConst.Tags] = "T", [MessageConst.Keys] = new string('k', 33_000), ["u"] = "v" });
        var back = Assert.Single(StoredMessageCodec.DecodeAll(StoredMessageCodec.Encode(m, out var dropped)));
        Assert.Equal([MessageConst.Keys], dropped);
        Assert.Equal(("ID", "T", "v"), (back.Properties[MessageConst.UniqueKey], back.Properties[MessageConst.Tags], back.Properties["u"]));
    }

    [Fact]
    public void Properties_that_fit_exactly_are_written_whole_in_their_order()
    {
        // "p" 0x01 value 0x02: 3 bytes plus the value.
        var m = Message(new() { ["p"] = new string('y', StoredMessageCodec.MaxPropertiesBytes - 3) });
        var back = Assert.Single(StoredMessageCodec.DecodeAll(StoredMessageCodec.Encode(m, out var dropped)));
        Assert.Empty(dropped);
        Assert.Equal(StoredMessageCodec.MaxPropertiesBytes - 3, back.Properties["p"].Length);
    }
}
