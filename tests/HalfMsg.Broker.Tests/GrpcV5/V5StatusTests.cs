using Apache.Rocketmq.V2;
using HalfMsg.Broker.Core;
using HalfMsg.Broker.FrontEnds.GrpcV5;

namespace HalfMsg.Broker.Tests.GrpcV5;

public sealed class V5StatusTests
{
    public static TheoryData<BrokerStatus> AllStatuses() => [.. Enum.GetValues<BrokerStatus>()];

    [Theory]
    [MemberData(nameof(AllStatuses))]
    public void Every_broker_status_maps_to_a_real_code(BrokerStatus status)
    {
        Code code = V5Status.ToCode(status);
        // Code 0 makes the Node client throw UnsupportedException; only Ok may map to OK.
        Assert.NotEqual(Code.Unspecified, code);
        Assert.Equal(status == BrokerStatus.Ok, code == Code.Ok);
    }

    [Fact]
    public void A_conflicting_decision_maps_to_INVALID_TRANSACTION_ID_and_an_unknown_or_forgotten_one_to_NOT_FOUND()
    {
        // Both make the official clients throw (Node: BadRequestException / NotFoundException, neither retried); ours
        // tells "decided the other way" from "outcome not known here" (review 2026-12-02, transactions #10).
        Assert.Equal(Code.NotFound, V5Status.ToCode(BrokerStatus.TransactionNotFound));
        Assert.Equal(Code.InvalidTransactionId, V5Status.ToCode(BrokerStatus.TransactionConflict));
        Assert.Equal(Code.InvalidTransactionId, V5Status.ToCode(BrokerStatus.InvalidTransactionId));
        Assert.Equal(Code.InvalidReceiptHandle, V5Status.ToCode(BrokerStatus.InvalidReceiptHandle));
        Assert.Equal(Code.MessageNotFound, V5Status.ToCode(BrokerStatus.MessageNotFound));
    }

    [Fact]
    public void Combined_status_is_the_common_code_or_multiple_results()
    {
        Assert.Equal(Code.Ok, V5Status.Combine([V5Status.Ok(), V5Status.Ok()]).Code);
        Assert.Equal(Code.MultipleResults, V5Status.Combine([V5Status.Ok(), V5Status.Of(Code.BadRequest, "x")]).Code);
    }
}
