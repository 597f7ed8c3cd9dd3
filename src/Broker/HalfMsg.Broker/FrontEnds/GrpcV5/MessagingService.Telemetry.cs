using HalfMsg.Protocol.Grpc;
using Apache.Rocketmq.V2;
using Google.Protobuf.WellKnownTypes;
using Grpc.Core;
using Status = Apache.Rocketmq.V2.Status;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.FrontEnds.GrpcV5;

internal sealed partial class MessagingService
{
    /// <summary>
    /// The bidi Telemetry stream: the client sends Settings (first message, and again every 5 minutes); we answer
    /// <c>status OK + merged Settings</c> and push them again ~1.5 s later (the Node client's startup race, reference
    /// §2a). A producer's stream becomes the check-back channel of each of its publishing topics. The stream stays
    /// open until the client half-closes (→ grpc-status 0) or goes away; then it is unregistered. A blank client id
    /// is refused with CLIENT_ID_REQUIRED: check-backs are routed by it.
    /// </summary>
    public override async Task Telemetry(IAsyncStreamReader<TelemetryCommand> requestStream, IServerStreamWriter<TelemetryCommand> responseStream,
        ServerCallContext context)
    {
        string clientId = ClientId(context);
        if (string.IsNullOrWhiteSpace(clientId))
        {
            // A status-only command makes the client reject its startup with this status (as for UNAUTHORIZED).
            await responseStream.WriteAsync(new TelemetryCommand { Status = V5Status.Of(Code.ClientIdRequired, "x-mq-client-id is required") })
                .ConfigureAwait(false);
            await V5CallInterceptor.AwaitHalfCloseAsync(requestStream, context).ConfigureAwait(false);
            return;
        }

        // Whether this stream's checks carry check tokens: read once from the stream's headers (OptsInToCheckTokens).
        var headers = context.GetHttpContext().Request.Headers;
        bool optedIn = OptsInToCheckTokens(headers);
        var session = new TelemetrySession(clientId, _options.TelemetryQueueBudget,
            AnswerBudget.Of(context.GetHttpContext(), _options.AnswerBudgetPerConnection), _options.TelemetryStallTimeout)
        {
            KeptSettings = KeptSettingsBudget.Of(context.GetHttpContext(), MaxKeptSettingsBytesPerConnection),
            Namespace = V5Namespace.Of(context),
            OptedInToCheckTokens = optedIn,
            SendsCheckTokens = optedIn || EchoesCheckIds(headers[RocketMqHeaders.Language].ToString().Trim()),
            // Checks queued and never written (the stream ended for not reading, or went away) go back to the core.
            ReturnUnsent = (id, checks) => _engine.ReturnUnsentChecksAsync(id, checks, _stopping),
            // Checks refused for want of room are offered again once the queue has room.
            RoomAgain = _engine.RequestCheckPass,
        };
        _sessions.Add(session);
        using var reading = CancellationTokenSource.CreateLinkedTokenSource(context.CancellationToken, session.Ended, _stopping);
        Task writer = session.RunWriterAsync(responseStream, context.CancellationToken);
        try
        {
            while (await requestStream.MoveNext(reading.Token).ConfigureAwait(false))
            {
                TelemetryCommand command = requestStream.Current;
                switch (command.CommandCase)
                {
                    case TelemetryCommand.CommandOneofCase.Settings:
                        OnSettings(session, command.Settings);
                        break;
                    default:
                        // Thread stack traces and verify results (which Node puts in the wrong oneof) need no answer.
                        LogTelemetryIgnored(session.ClientId, command.CommandCase);
                        break;
                }
            }
        }
        catch (OperationCanceledException) when (_stopping.IsCancellationRequested && !session.Ended.IsCancellationRequested
            && !context.CancellationToken.IsCancellationRequested)
        {
            // The broker is stopping: the stream ends with status OK (what was queued is written first, below), as when
            // the client half-closes; the client opens a new one once it reconnects.
        }
        catch (OperationCanceledException) when (session.Ended.IsCancellationRequested && !context.CancellationToken.IsCancellationRequested)
        {
            // Ended by the broker: say why, with a gRPC status (as the proxy does for Telemetry failures).
            throw new RpcException(new Grpc.Core.Status(StatusCode.Aborted, session.EndReason ?? "session ended"));
        }
        finally
        {
            session.Close();
            _sessions.Remove(session);
            // What is queued is written first (the stopping broker's Settings, a replaced stream's re-push), within the
            // answers' write bound; a session ended for not reading writes nothing more than the write under way, within
            // InFlightWriteGrace. Then the status thrown above (ABORTED with the reason) follows what was written, as
            // for a replaced stream: until 2026-12-07 a stream ended for not reading was always reset, though a client
            // that reads, only slower than a burst of check-backs came, could have been told why (found by review).
            // A writer still parked for HTTP/2 window past its bound leaves a stream that may never end, and no status
            // can pass the data that waits for the window: it is reset, so the call, the session and what it holds go
            // now. Until late on 2026-12-06 this waited for the writer however long: a Telemetry stream ended for not
            // reading never ended, and kept its queue charged to the connection's answer budget (found by review).
            // Stopping, the bound is short: the host gives the whole stop a few seconds.
            TimeSpan bound = _stopping.IsCancellationRequested ? StoppingDrainBound : _options.AnswerWriteTimeout;
            // The stream is reset before its parked write is cancelled: cancelled first, that write resets it with CANCEL.
            bool reset = false;
            var http = context.GetHttpContext();
            if (!await session.WhenWriterDoneAsync(bound, _time, () =>
                {
                    reset = true;
                    ResetUnread(http);
                }).ConfigureAwait(false))
            {
                LogTelemetryReset(clientId, session.EndReason ?? "its writes did not finish");
                if (!reset) ResetUnread(http);
            }
        }
    }

    /// <summary>
    /// Resets a stream whose writes are stuck because its client does not read. No status can reach that client: HTTP/2
    /// sends the trailers (grpc-status) after the stream's data, which waits for the window the client does not open.
    /// The reset is ENHANCE_YOUR_CALM, which the gRPC clients turn into RESOURCE_EXHAUSTED (the gRPC HTTP/2 mapping:
    /// "bandwidth exhausted") when they next read. Until 2026-12-07 the parked write was cancelled first, which reset the
    /// stream with CANCEL (the clients report CANCELLED, as if they had cancelled it themselves), and the Abort after it
    /// (INTERNAL_ERROR) came too late to matter. The reason is in the broker's log only.
    /// </summary>
    internal static void ResetUnread(Microsoft.AspNetCore.Http.HttpContext http)
    {
        if (http.Features.Get<Microsoft.AspNetCore.Http.Features.IHttpResetFeature>() is { } reset)
        {
            reset.Reset(EnhanceYourCalm);
        }
        else
        {
            http.Abort();
        }
    }

    /// <summary>HTTP/2 error code ENHANCE_YOUR_CALM (RFC 9113 §7).</summary>
    private const int EnhanceYourCalm = 0xb;

    /// <summary>How long a stopping broker lets a Telemetry stream write what is queued before it resets it.</summary>
    private static readonly TimeSpan StoppingDrainBound = TimeSpan.FromSeconds(2);

    /// <summary>
    /// Whether a Telemetry stream's checks carry check tokens (<see cref="TelemetrySession.SendsCheckTokens"/>): our
    /// ProducerClient asks for them (<see cref="CheckTokenIds.AcceptHeader"/>); so does the <c>x-mq-language</c> of an
    /// official client that echoes the transaction id it is sent and gives its checker none (<see cref="EchoesCheckIds(string)"/>).
    /// Any other gets the plain id, as before: DOTNET without the header may be an older build of ours, which hands the id
    /// to its checker (a BarrierChecker would look the tokenized id up and answer Rollback); the official Rust client
    /// hands it to its checker too (<c>TransactionChecker = Fn(String, MessageView)</c>), the C++ client puts it in the
    /// message its checker is given (<c>extension().transaction_id</c>); a stream without <c>x-mq-language</c>, or with one
    /// no Apache client sends, is no known client. Until the afternoon session of 2026-12-07 every language but DOTNET
    /// got tokens: a Rust checker that looked its transaction id up found none (found by review).
    /// </summary>
    private static bool OptsInToCheckTokens(Microsoft.AspNetCore.Http.IHeaderDictionary headers)
        => headers[CheckTokenIds.AcceptHeader].ToString() == CheckTokenIds.AcceptValue;

    /// <summary>The <c>x-mq-language</c> of an official client that echoes a check's transaction id verbatim and keeps it
    /// from its checker: Java (ProducerImpl), Node (which says HTTP; Producer.onRecoverOrphanedTransactionCommand), Go
    /// (producer.go; it sets no source on its answer, see TryToDecision) and Python (producer.py).</summary>
    private static bool EchoesCheckIds(string language)
        => language.Equals("JAVA", StringComparison.OrdinalIgnoreCase) || language.Equals("HTTP", StringComparison.OrdinalIgnoreCase)
            || language.Equals("GOLANG", StringComparison.OrdinalIgnoreCase) || language.Equals("PYTHON", StringComparison.OrdinalIgnoreCase);

    /// <summary>The same for the language of a client's Settings (<see cref="UA.Language"/>).</summary>
    private static bool EchoesCheckIds(Language language) => language is Language.Java or Language.NodeJs or Language.Golang or Language.Python;

    /// <summary>
    /// Largest Settings a Telemetry stream may send, serialized: its session keeps the answer, a copy of them, for the
    /// stream's life (to push again, <see cref="TelemetrySession.ReplySettings"/>). Room for the most topics a producer
    /// registers (<see cref="Remoting.RemotingSession.MaxProducerGroups"/>, 1,024) with 255-character names and a
    /// namespace each, about 400 KB; the official clients send well under a kilobyte. Until the late-night session of
    /// 2026-12-07 any Settings up to the message limit (5 MiB) was kept, on each of a connection's 200 streams: one
    /// connection could hold about 2 GB of them for as long as it stayed open (found by review).
    /// </summary>
    internal const int MaxSettingsBytes = 512 * 1024;

    /// <summary>
    /// Bytes of Settings replies the Telemetry streams of one connection keep in all, at most (<see cref="KeptSettingsBudget"/>):
    /// three streams of the largest Settings (<see cref="MaxSettingsBytes"/>: the kept reply adds its status, backoff and
    /// user agent, a little over it), or thousands of the official clients' (under
    /// a kilobyte each; the Node client's share one connection per process and endpoint). A stream whose Settings would
    /// pass it ends with RESOURCE_EXHAUSTED, keeping nothing; what a stream keeps is given back when it ends. Until the
    /// late-night session of 2026-12-07 only each stream's were bounded: 200 streams of 512 KiB, about 100 MB per
    /// connection, were kept for as long as the connection stayed open (found by review).
    /// </summary>
    internal const int MaxKeptSettingsBytesPerConnection = 4 * MaxSettingsBytes;

    internal void OnSettings(TelemetrySession session, Settings settings)
    {
        // Ended with INVALID_ARGUMENT, as a Settings without publishing or subscription is (below): nothing of it is kept.
        int size = settings.CalculateSize();
        if (size > MaxSettingsBytes)
            throw new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument,
                $"settings of {size} bytes are larger than the {MaxSettingsBytes} bytes a Telemetry stream may keep"));
        // A client whose header names a language that echoes but whose Settings name another (.NET, Rust, C++...) gets no
        // tokens either, unless it opted in. The Settings come before the stream is registered for check-backs.
        if (session.SendsCheckTokens && !session.OptedInToCheckTokens && settings.UserAgent is { Language: not Language.Unspecified and var language }
            && !EchoesCheckIds(language))
        {
            session.SendsCheckTokens = false;
        }

        session.ClientType = settings.ClientType;
        Settings reply = settings.Clone();
        reply.Metric = new Metric { On = false };
        // Says which broker answers, so that our clients may use what only it accepts (several halves in one send).
        reply.UserAgent = BrokerAgent.Create(Hosting.BrokerConfiguration.Version);
        switch (settings.PubSubCase)
        {
            case Settings.PubSubOneofCase.Publishing:
                // Node asserts an exponential backoff (a missing one kills the process) and refuses every send when
                // max_body_size is 0. Type validation stays off: every queue accepts every type a client sends but LITE and PRIORITY,
                // which SendMessage refuses itself (V5MessageChecks.TypeRefusal), so no client's checks change.
                reply.BackoffPolicy = Backoff(3, TimeSpan.FromMilliseconds(10), TimeSpan.FromSeconds(1));
                reply.Publishing.MaxBodySize = _engine.Options.MaxMessageSize;
                reply.Publishing.ValidateMessageType = false;
                break;
            case Settings.PubSubOneofCase.Subscription:
                // The proxy's default (Apache's default group retry policy, customized): a failing message is retried
                // for about 1 h 46 min before it is dead-lettered. Until 2026-12-06 this was 1 s doubling to 10 s, and a
                // downstream outage of two minutes sent every message in flight to the DLQ (found by review).
                // max_attempts is the core's limit, after which it dead-letters. Node reads receive_batch_size without
                // a fallback (unset → batch 0); it reads no customized backoff and nacks with 0, as against the proxy
                // (it read our exponential one's seconds as milliseconds: 1 to 10 ms).
                reply.BackoffPolicy = new RetryPolicy
                {
                    MaxAttempts = _engine.Options.MaxDeliveryAttempts,
                    CustomizedBackoff = new CustomizedBackoff { Next = { _options.RetryDelays.Select(Duration.FromTimeSpan) } },
                };
                reply.Subscription.ReceiveBatchSize = DefaultBatchSize;
                reply.Subscription.LongPollingTimeout = Duration.FromTimeSpan(_options.LongPollingTimeout);
                // As the proxy (consumeMessageOrderly of the group's subscription config): a push consumer of an orderly
                // group consumes each batch in order, one message after another, and forwards what keeps failing to the
                // dead-letter queue itself. Until the order modes came (2026-12-06) it was always false.
                reply.Subscription.Fifo = _engine.IsOrderlyGroup(V5Namespace.Wrap(session.Namespace, settings.Subscription.Group?.Name ?? string.Empty));
                break;
            default:
                // As the proxy does (ClientActivity.processAndWriteClientSettings).
                throw new RpcException(new Grpc.Core.Status(StatusCode.InvalidArgument, "settings must carry publishing or subscription"));
        }

        // Kept before the stream registers as its topics' producer, so that Settings refused here leave nothing behind.
        if (!session.TryKeepSettings(new TelemetryCommand { Status = V5Status.Ok(), Settings = reply }))
        {
            // A session ended while its Settings were read (replaced by a newer stream of its client id, or ended for not
            // reading) keeps nothing either: its stream ends with why, as the read loop says it. Until the late-night
            // session of 2026-12-07 it ended with RESOURCE_EXHAUSTED, the connection's bound named and nothing kept
            // (found by review).
            if (!session.IsAlive) throw new RpcException(new Grpc.Core.Status(StatusCode.Aborted, session.EndReason ?? "session ended"));
            throw new RpcException(new Grpc.Core.Status(StatusCode.ResourceExhausted,
                $"settings of {size} bytes would pass the {MaxKeptSettingsBytesPerConnection} bytes of Settings the Telemetry streams of one connection may keep " +
                $"({session.KeptSettings?.Held ?? 0} kept by its streams now)"));
        }

        if (settings.PubSubCase == Settings.PubSubOneofCase.Publishing)
        {
            RegisterPublishing(session, settings.Publishing.Topics.Select(t => V5Namespace.Wrap(session.Namespace, t.Name)));
        }

        session.ReplySettings(_options.SettingsRepushDelay, _time);
    }

    /// <summary>
    /// Makes the stream the check-back channel of its publishing topics' groups. Past
    /// <see cref="Remoting.RemotingSession.MaxProducerGroups"/> groups per stream the rest are not registered: their halves
    /// get no check-backs over this stream (the admin page says no producer is connected). That is logged as a Warning,
    /// once per stream and at most <see cref="GrpcV5Options.BadInputLogsPerMinute"/> lines a minute over all streams (the
    /// client chooses how many topics it names, and how many streams it opens).
    /// </summary>
    internal void RegisterPublishing(TelemetrySession session, IEnumerable<string> topics)
    {
        int overCap = session.RegisterProducer(topics, _engine.Producers);
        if (overCap > 0 && _logger.IsEnabled(LogLevel.Warning) && session.TryClaimCapWarning() && _capLogLimit.TryEnter(out long suppressed))
        {
            LogProducerGroupCap(session.ClientId, Remoting.RemotingSession.MaxProducerGroups + overCap, Remoting.RemotingSession.MaxProducerGroups,
                overCap, suppressed);
        }
    }

    private static RetryPolicy Backoff(int maxAttempts, TimeSpan initial, TimeSpan max) => new()
    {
        MaxAttempts = maxAttempts,
        ExponentialBackoff = new ExponentialBackoff
        {
            Initial = Duration.FromTimeSpan(initial),
            Max = Duration.FromTimeSpan(max),
            Multiplier = 2,
        },
    };

    [LoggerMessage(Level = LogLevel.Warning,
        Message = "Telemetry stream of client {ClientId} publishes to {Topics} topics, more than the {Max} producer groups a stream may have: " +
                  "the last {Skipped} get no transaction check-backs over this stream ({Suppressed} more such streams not logged since the last line)")]
    private partial void LogProducerGroupCap(string clientId, int topics, int max, int skipped, long suppressed);

    [LoggerMessage(Level = LogLevel.Information, Message = "Telemetry stream of {ClientId} reset: {Reason}")]
    private partial void LogTelemetryReset(string clientId, string reason);

    [LoggerMessage(Level = LogLevel.Debug, Message = "Telemetry from {ClientId}: ignoring {Command}")]
    private partial void LogTelemetryIgnored(string clientId, TelemetryCommand.CommandOneofCase command);
}
