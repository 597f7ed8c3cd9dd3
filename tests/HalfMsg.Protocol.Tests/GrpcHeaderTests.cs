using HalfMsg.Protocol.Grpc;

namespace HalfMsg.Protocol.Tests;

public sealed class GrpcHeaderTests
{
    public static TheoryData<string, TimeSpan> ValidTimeouts => new()
    {
        { "2980m", TimeSpan.FromMilliseconds(2980) },
        { "1S", TimeSpan.FromSeconds(1) },
        { "5H", TimeSpan.FromHours(5) },
        { "3M", TimeSpan.FromMinutes(3) },
        { "100u", TimeSpan.FromTicks(1000) },
        { "10n", TimeSpan.FromTicks(1) },      // rounded up to one tick, never zero
        { "0m", TimeSpan.Zero },
        { "99999999S", TimeSpan.FromSeconds(99_999_999) },
    };

    [Theory]
    [MemberData(nameof(ValidTimeouts))]
    public void A_valid_grpc_timeout_is_parsed(string value, TimeSpan expected)
    {
        Assert.True(GrpcTimeout.TryParse(value, out var timeout));
        Assert.Equal(expected, timeout);
    }

    [Theory]
    [InlineData("")]
    [InlineData("m")]
    [InlineData("123456789m")]
    [InlineData("10x")]
    [InlineData("-1m")]
    [InlineData("+1m")]
    [InlineData(" 1m")]
    [InlineData("1 m")]
    [InlineData("10")]
    [InlineData(null)]
    public void An_invalid_grpc_timeout_is_rejected(string? value)
    {
        Assert.False(GrpcTimeout.TryParse(value, out _));
    }

    [Theory]
    [InlineData(2980, "2980m")]
    [InlineData(0.5, "1m")]
    [InlineData(0, "1n")]
    public void A_timeout_is_formatted_so_it_parses_back(double milliseconds, string expected)
    {
        string formatted = GrpcTimeout.Format(TimeSpan.FromMilliseconds(milliseconds));

        Assert.Equal(expected, formatted);
        Assert.True(GrpcTimeout.TryParse(formatted, out _));
    }

    [Theory]
    [InlineData("plain ascii message", "plain ascii message")]
    [InlineData("100% done", "100%25 done")]
    [InlineData("line\nbreak", "line%0Abreak")]
    [InlineData("café", "caf%C3%A9")]
    [InlineData("主题不存在", "%E4%B8%BB%E9%A2%98%E4%B8%8D%E5%AD%98%E5%9C%A8")]
    [InlineData("emoji 😀 %", "emoji %F0%9F%98%80 %25")]
    [InlineData("", "")]
    public void A_grpc_message_is_percent_encoded_and_decodes_back(string message, string encoded)
    {
        Assert.Equal(encoded, GrpcMessageEncoding.Encode(message));
        Assert.Equal(message, GrpcMessageEncoding.Decode(encoded));
    }

    [Theory]
    [InlineData("50%", "50%")]
    [InlineData("%G1", "%G1")]
    [InlineData("%4", "%4")]
    [InlineData("%c3%a9", "é")]
    public void A_malformed_or_lower_case_escape_is_decoded_leniently(string value, string expected)
    {
        Assert.Equal(expected, GrpcMessageEncoding.Decode(value));
    }

    [Theory]
    [InlineData("application/grpc", true)]
    [InlineData("application/grpc+proto", true)]
    [InlineData("application/grpc; charset=utf-8", true)]
    [InlineData("application/grpcx", false)]
    [InlineData("application/json", false)]
    [InlineData(null, false)]
    public void The_grpc_content_type_is_recognised(string? contentType, bool expected)
    {
        Assert.Equal(expected, GrpcHeaders.IsGrpcContentType(contentType));
    }

    [Fact]
    public void Every_messaging_service_method_has_a_distinct_path()
    {
        Assert.Equal(17, GrpcMethods.All.Count);
        Assert.Equal(17, GrpcMethods.All.Distinct().Count());
        Assert.All(GrpcMethods.All, p => Assert.StartsWith("/apache.rocketmq.v2.MessagingService/", p));
        Assert.Equal("/apache.rocketmq.v2.MessagingService/EndTransaction", GrpcMethods.EndTransaction);
    }

    [Fact]
    public void Every_method_path_names_an_rpc_of_the_proto_service()
    {
        var service = Apache.Rocketmq.V2.ServiceReflection.Descriptor.FindTypeByName<Google.Protobuf.Reflection.ServiceDescriptor>("MessagingService");
        var fromProto = service.Methods.Select(m => $"/{service.FullName}/{m.Name}").ToHashSet();

        Assert.Equal(fromProto, GrpcMethods.All.ToHashSet());
    }

    [Fact]
    public void Grpc_status_codes_use_the_standard_numbering()
    {
        Assert.Equal(0, (int)GrpcStatusCode.OK);
        Assert.Equal(4, (int)GrpcStatusCode.DeadlineExceeded);
        Assert.Equal(8, (int)GrpcStatusCode.ResourceExhausted);
        Assert.Equal(12, (int)GrpcStatusCode.Unimplemented);
        Assert.Equal(13, (int)GrpcStatusCode.Internal);
        Assert.Equal(16, (int)GrpcStatusCode.Unauthenticated);
    }
}
