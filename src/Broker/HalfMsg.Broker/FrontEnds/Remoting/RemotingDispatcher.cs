using HalfMsg.Broker.FrontEnds;
using System.Text.Json;
using HalfMsg.Broker.Core;
using HalfMsg.Protocol.Remoting;

namespace HalfMsg.Broker.FrontEnds.Remoting;

/// <summary>
/// Routes a request to its processor (one file per request code under Processors/). Handlers translate between the
/// wire and the core; the core decides. A code we do not serve is answered REQUEST_CODE_NOT_SUPPORTED with the
/// connection kept open, as the Java broker does.
/// </summary>
internal sealed partial class RemotingDispatcher(RemotingServer server)
{
    private BrokerEngine Engine => server.Engine;
    private RemotingOptions Options => server.Options;
    private ILogger Logger => server.Logger;

    private static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = null };

    private static bool IsNameServerCode(int code) => code is RequestCode.GetRouteInfoByTopic or RequestCode.GetBrokerClusterInfo
        or RequestCode.GetAllTopicListFromNameServer or RequestCode.GetKvConfig or RequestCode.DeleteTopicInNameSrv;

    /// <summary>Load shedding shared with gRPC (<see cref="SendAdmission"/>): a send that gets no slot in time is SYSTEM_BUSY.</summary>
    private async ValueTask<RemotingCommand?> AdmitAsync(RemotingCommand request, Func<ValueTask<RemotingCommand?>> send)
    {
        if (server.Admission is not { } gate) return await send().ConfigureAwait(false);
        if (!await gate.TryEnterAsync(CancellationToken.None).ConfigureAwait(false))
            return RemotingCommand.ResponseTo(request, ResponseCode.SystemBusy, gate.BusyMessage);
        try
        {
            return await send().ConfigureAwait(false);
        }
        finally
        {
            gate.Exit();
        }
    }

    /// <summary>Answers one request (null: no answer). With <paramref name="mayPark"/> false a PULL_MESSAGE is served
    /// without suspending: its connection has <see cref="RemotingOptions.MaxParkedPullsPerConnection"/> parked already.
    /// <paramref name="room"/>: the room for the answer of a PULL_MESSAGE, VIEW_MESSAGE_BY_ID or QUERY_MESSAGE, taken before
    /// each body is read (null: no bound but the engine's).</summary>
    public ValueTask<RemotingCommand?> HandleAsync(RemotingSession session, RemotingCommand request, bool mayPark = true, PullReservation? room = null)
    {
        if (session.NameServerOnly && !IsNameServerCode(request.Code)) return new(NotSupported(request));
        if (!Authenticate(request, out var denied)) return new(denied);
        // After the signature check, which covers sysFlag.
        bool pastParkCap = false;
        if (!mayPark && request.Code == RequestCode.PullMessage && request.GetInt("sysFlag", 0) is int sysFlag && (sysFlag & PullSysFlag.Suspend) != 0)
        {
            request.Set("sysFlag", (long)(sysFlag & ~PullSysFlag.Suspend));
            pastParkCap = true;
        }
        return request.Code switch
        {
            RequestCode.GetRouteInfoByTopic => new(GetRouteInfoByTopic(session, request)),
            RequestCode.GetBrokerClusterInfo => new(GetBrokerClusterInfo(session, request)),
            RequestCode.GetAllTopicListFromNameServer => new(GetAllTopicList(request)),
            RequestCode.GetKvConfig => new(GetKvConfig(request)),
            RequestCode.UpdateAndCreateTopic => UpdateAndCreateTopicAsync(request),
            RequestCode.DeleteTopicInBroker => DeleteTopicInBrokerAsync(request),
            RequestCode.UpdateAndCreateSubscriptionGroup => UpdateAndCreateSubscriptionGroupAsync(request),
            RequestCode.DeleteTopicInNameSrv => new(DeleteTopicInNameServer(request)),
            RequestCode.HeartBeat => new(HeartBeat(session, request)),
            RequestCode.UnregisterClient => new(UnregisterClient(session, request)),
            RequestCode.CheckClientConfig => new(CheckClientConfig(request)),
            RequestCode.SendMessage or RequestCode.SendMessageV2 => AdmitAsync(request, () => SendMessageAsync(session, request)),
            RequestCode.SendBatchMessage => AdmitAsync(request, () => SendBatchMessageAsync(session, request)),
            RequestCode.EndTransaction => EndTransactionAsync(request),
            RequestCode.PullMessage => PullMessageAsync(session, request, pastParkCap, room),
            RequestCode.QueryConsumerOffset => new(QueryConsumerOffset(request)),
            RequestCode.UpdateConsumerOffset => UpdateConsumerOffsetAsync(request),
            RequestCode.GetMaxOffset => new(GetMaxOffset(request)),
            RequestCode.GetMinOffset => new(GetMinOffset(request)),
            RequestCode.SearchOffsetByTimestamp => SearchOffsetByTimestampAsync(request),
            RequestCode.ConsumerSendMsgBack => ConsumerSendMsgBackAsync(request),
            RequestCode.GetConsumerListByGroup => new(GetConsumerListByGroup(request)),
            RequestCode.LockBatchMq => new(LockBatchMq(session, request)),
            RequestCode.UnlockBatchMq => new(UnlockBatchMq(request)),
            RequestCode.GetConsumeStats => new(GetConsumeStats(request)),
            RequestCode.ViewMessageById => ViewMessageByIdAsync(session, request, room),
            RequestCode.QueryMessage => QueryMessageAsync(session, request, room),
            RequestCode.RecallMessage => RecallMessageAsync(session, request),
            _ => new(NotSupported(request)),
        };
    }

    private static RemotingCommand NotSupported(RemotingCommand request)
        => RemotingCommand.ResponseTo(request, ResponseCode.RequestCodeNotSupported, $" request type {request.Code} not supported");

    private static RemotingCommand Ok(RemotingCommand request) => RemotingCommand.ResponseTo(request, ResponseCode.Success);

    private static RemotingCommand Error(RemotingCommand request, int code, string remark) => RemotingCommand.ResponseTo(request, code, remark);

    /// <summary>Java's answer to a missing @CFNotNull header field.</summary>
    private static RemotingCommand Missing(RemotingCommand request, string field)
        => RemotingCommand.ResponseTo(request, ResponseCode.SystemError, $"the custom field <{field}> is null");

    private static byte[] JsonBody<T>(T value) => JsonSerializer.SerializeToUtf8Bytes(value, Json);

    private static JsonDocument? ParseBody(RemotingCommand request)
    {
        if (request.Body.IsEmpty) return null;
        // JsonDocument accepts strings that are not valid UTF-8 and GetString() then throws InvalidOperationException:
        // such a body is as unreadable as invalid JSON (found by the network fuzzer on HEART_BEAT, issue 13).
        if (!System.Text.Unicode.Utf8.IsValid(request.Body.Span)) return null;
        try
        {
            return JsonDocument.Parse(request.Body);
        }
        catch (JsonException)
        {
            return null;
        }
    }
}
