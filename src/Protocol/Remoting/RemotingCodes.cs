namespace HalfMsg.Protocol.Remoting;

/// <summary>
/// RocketMQ Remoting request codes (apache/rocketmq <c>remoting/.../protocol/RequestCode.java</c>). Only the codes this
/// project speaks or deliberately refuses are listed.
/// </summary>
public static class RequestCode
{
    public const int SendMessage = 10;
    public const int PullMessage = 11;
    public const int QueryMessage = 12;
    public const int QueryConsumerOffset = 14;
    public const int UpdateConsumerOffset = 15;
    public const int UpdateAndCreateTopic = 17;
    public const int GetAllTopicConfig = 21;
    public const int SearchOffsetByTimestamp = 29;
    public const int GetMaxOffset = 30;
    public const int GetMinOffset = 31;
    public const int GetEarliestMsgStoreTime = 32;
    public const int ViewMessageById = 33;
    public const int HeartBeat = 34;
    public const int UnregisterClient = 35;
    public const int ConsumerSendMsgBack = 36;
    public const int EndTransaction = 37;
    public const int GetConsumerListByGroup = 38;
    public const int CheckTransactionState = 39;
    public const int NotifyConsumerIdsChanged = 40;
    public const int LockBatchMq = 41;
    public const int UnlockBatchMq = 42;
    public const int GetAllConsumerOffset = 43;
    /// <summary>A consumer's non-TAG subscription, checked before the Java client starts (MQClientInstance.checkClientInBroker).</summary>
    public const int CheckClientConfig = 46;
    public const int GetKvConfig = 101;
    public const int RegisterBroker = 103;
    public const int UnregisterBroker = 104;
    public const int GetRouteInfoByTopic = 105;
    public const int GetBrokerClusterInfo = 106;
    /// <summary>mqadmin updateSubGroup: a SubscriptionGroupConfig as JSON in the body (of it, only groupName and
    /// consumeMessageOrderly are read).</summary>
    public const int UpdateAndCreateSubscriptionGroup = 200;
    public const int DeleteTopicInBroker = 215;
    public const int GetAllTopicListFromNameServer = 206;
    public const int GetConsumeStats = 208;
    public const int DeleteTopicInNameSrv = 216;
    public const int GetConsumerRunningInfo = 307;
    public const int ConsumeMessageDirectly = 309;
    public const int SendMessageV2 = 310;
    public const int SendBatchMessage = 320;
    /// <summary>RocketMQ 5.3.1+: recall a timer message before its delivery time (DefaultMQProducer.recallMessage).</summary>
    public const int RecallMessage = 370;
}

/// <summary>Remoting response codes (<c>ResponseCode.java</c> / <c>RemotingSysResponseCode.java</c>).</summary>
public static class ResponseCode
{
    public const int Success = 0;
    public const int SystemError = 1;
    public const int SystemBusy = 2;
    public const int RequestCodeNotSupported = 3;
    public const int TransactionFailed = 4;
    public const int MessageIllegal = 13;
    public const int ServiceNotAvailable = 14;
    public const int NoPermission = 16;
    public const int TopicNotExist = 17;
    public const int TopicExistAlready = 18;
    public const int PullNotFound = 19;
    public const int PullRetryImmediately = 20;
    public const int PullOffsetMoved = 21;
    public const int QueryNotFound = 22;
    public const int SubscriptionParseFailed = 23;
    public const int SubscriptionNotExist = 24;
    public const int SubscriptionNotLatest = 25;
    public const int SubscriptionGroupNotExist = 26;
    public const int InvalidParameter = 29;
    public const int IllegalOperation = 604;
}

/// <summary>Language codes of the Remoting header (<c>LanguageCode.java</c>); JSON carries the name, ROCKETMQ the byte.</summary>
public static class LanguageCode
{
    private static readonly string[] Names = ["JAVA", "CPP", "DOTNET", "PYTHON", "DELPHI", "ERLANG", "RUBY", "OTHER", "HTTP", "GO", "PHP", "OMS", "RUST", "NODE_JS"];

    public const byte Java = 0;
    public const byte DotNet = 2;
    public const byte Other = 7;

    public static string NameOf(byte code) => code < Names.Length ? Names[code] : "OTHER";

    public static byte CodeOf(string? name)
    {
        int i = name is null ? -1 : Array.IndexOf(Names, name);
        return i < 0 ? Other : (byte)i;
    }
}

/// <summary>MessageSysFlag bits.</summary>
public static class MessageSysFlag
{
    public const int Compressed = 0x1;
    public const int MultiTags = 0x2;
    public const int TransactionNotType = 0;
    public const int TransactionPreparedType = 0x4;
    public const int TransactionCommitType = 0x8;
    public const int TransactionRollbackType = 0xC;
    public const int TransactionTypeMask = 0xC;
    public const int BornHostV6 = 0x10;
    public const int StoreHostV6 = 0x20;
    public const int InnerBatch = 0x80;
    public const int CompressionTypeMask = 0x700;
    public const int CompressionLz4 = 0x100;
    public const int CompressionZstd = 0x200;
    public const int CompressionZlib = 0x300;
}

/// <summary>PullSysFlag bits of PULL_MESSAGE's <c>sysFlag</c>.</summary>
public static class PullSysFlag
{
    public const int CommitOffset = 0x1;
    public const int Suspend = 0x2;
    public const int Subscription = 0x4;
    public const int ClassFilter = 0x8;
    public const int LitePull = 0x10;
}

/// <summary>Well-known message property keys (<c>MessageConst.java</c>).</summary>
public static class MessageConst
{
    public const string Keys = "KEYS";
    public const string Tags = "TAGS";
    public const string DelayLevel = "DELAY";
    public const string RetryTopic = "RETRY_TOPIC";
    public const string RealTopic = "REAL_TOPIC";
    public const string RealQueueId = "REAL_QID";
    public const string TransactionPrepared = "TRAN_MSG";
    public const string ProducerGroup = "PGROUP";
    public const string UniqueKey = "UNIQ_KEY";
    public const string MaxReconsumeTimes = "MAX_RECONSUME_TIMES";
    public const string ReconsumeTime = "RECONSUME_TIME";
    public const string OriginMessageId = "ORIGIN_MESSAGE_ID";
    public const string CheckImmunityTimeInSeconds = "CHECK_IMMUNITY_TIME_IN_SECONDS";
    public const string TransactionId = "__transactionId__";
    public const string TransactionCheckTimes = "TRANSACTION_CHECK_TIMES";
    public const string MsgRegion = "MSG_REGION";
    public const string TraceOn = "TRACE_ON";
    public const string ShardingKey = "__SHARDINGKEY";
    public const string TimerDeliverMs = "TIMER_DELIVER_MS";
    public const string TimerDelaySec = "TIMER_DELAY_SEC";
    public const string TimerDelayMs = "TIMER_DELAY_MS";
    public const string WaitStoreMsgOk = "WAIT";
    public const string MinOffset = "MIN_OFFSET";
    public const string MaxOffset = "MAX_OFFSET";
}
