using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Protocol.Tests;

/// <summary>How a check-back's transaction id carries the half's check token (<see cref="CheckTokenIds"/>).</summary>
public sealed class CheckTokenIdsTests
{
    [Theory]
    [InlineData("0A01", "0A01~ck42", CheckTokenIds.Kind.Token, "0A01", 42)]
    [InlineData("0A01", "0A01~ck0", CheckTokenIds.Kind.Token, "0A01", 0)]
    [InlineData("0A01", "0A01", CheckTokenIds.Kind.None, "0A01", -1)]
    // A client-chosen id that looks tokenized is its own id when its message id says so.
    [InlineData("a~ck5", "a~ck5", CheckTokenIds.Kind.None, "a~ck5", -1)]
    [InlineData("a~ck5", "a~ck5~ck7", CheckTokenIds.Kind.Token, "a~ck5", 7)]
    [InlineData("0A01", "0A01~ck", CheckTokenIds.Kind.Malformed, "0A01~ck", -1)]
    [InlineData("0A01", "0A01~ck-1", CheckTokenIds.Kind.Malformed, "0A01~ck-1", -1)]
    [InlineData("0A01", "0A01~ck 1", CheckTokenIds.Kind.Malformed, "0A01~ck 1", -1)]
    [InlineData("0A01", "0A01~ck99999999999999999999", CheckTokenIds.Kind.Malformed, "0A01~ck99999999999999999999", -1)]
    // Another id than the message's: not this half's token (the core judges the id).
    [InlineData("0A01", "0B02~ck3", CheckTokenIds.Kind.None, "0B02~ck3", -1)]
    // No message id: the last separator splits it, and no digits after it is no token.
    [InlineData(null, "0A01~ck3", CheckTokenIds.Kind.Token, "0A01", 3)]
    [InlineData(null, "0A01~ckX", CheckTokenIds.Kind.None, "0A01~ckX", -1)]
    [InlineData("", "~ck3", CheckTokenIds.Kind.None, "~ck3", -1)]
    public void Parses_the_token_after_the_message_id(string? messageId, string id, CheckTokenIds.Kind kind, string transactionId, long token)
    {
        Assert.Equal(kind, CheckTokenIds.Parse(id, messageId, out string tx, out long t));
        Assert.Equal(transactionId, tx);
        Assert.Equal(token, t);
    }

    [Fact]
    public void Make_and_Strip_round_trip()
    {
        string id = CheckTokenIds.Make("01ABC", 1234567890123);
        Assert.Equal("01ABC~ck1234567890123", id);
        Assert.Equal("01ABC", CheckTokenIds.Strip(id, "01ABC"));
        Assert.Equal("01ABC", CheckTokenIds.Strip("01ABC", "01ABC"));
        Assert.Equal("01ABC~ckX", CheckTokenIds.Strip("01ABC~ckX", "01ABC"));
    }
}
