using HalfMsg.ClientCore.Sql;
using System.Data.Common;

namespace HalfMsg.ConsumerClient.Idempotency;

/// <summary>
/// SQL for the consumed-messages table. Needs an "insert unless the key exists" statement that waits for a concurrent
/// inserter of the same key and then affects 0 rows if it committed. Built in: SQLite and PostgreSQL.
/// </summary>
public interface IConsumedDialect
{
    /// <summary>Display name.</summary>
    string Name { get; }

    /// <summary>DDL creating <paramref name="table"/> if missing: <c>consumer_group</c>, <c>message_id</c> (primary key
    /// together), <c>consumed_at</c>.</summary>
    string CreateTableSql(string table);

    /// <summary>Inserts (<c>@consumer_group</c>, <c>@message_id</c>), affecting 0 rows when the key exists.</summary>
    string InsertIfAbsentSql(string table);

    /// <summary>The parameter value to compare <c>consumed_at</c> with for a UTC time (<see cref="ConsumedSchema.PruneAsync"/>).
    /// Default: the <see cref="DateTime"/> itself (kind UTC).</summary>
    object ConsumedAtValue(DateTime utc) => utc;
}

/// <summary>Built-in dialects and detection.</summary>
public static class ConsumedDialects
{
    /// <summary>SQLite 3.24+.</summary>
    public static IConsumedDialect Sqlite { get; } = new Dialect("SQLite", "TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP", textTimes: true);

    /// <summary>PostgreSQL 9.5+.</summary>
    public static IConsumedDialect PostgreSql { get; } = new Dialect("PostgreSQL", "TIMESTAMPTZ NOT NULL DEFAULT now()", textTimes: false);

    /// <summary>Picks a built-in dialect from the provider type.</summary>
    /// <exception cref="NotSupportedException">Unknown provider: pass a dialect explicitly.</exception>
    public static IConsumedDialect Detect(DbConnection connection) => SqlSupport.Detect(connection, out string name) switch
    {
        SqlSupport.Provider.Sqlite => Sqlite,
        SqlSupport.Provider.PostgreSql => PostgreSql,
        _ => throw new NotSupportedException($"No built-in consumed-table dialect for {name}; pass an {nameof(IConsumedDialect)}."),
    };

    internal static string CheckIdentifier(string table) => SqlSupport.CheckIdentifier(table);

    private sealed class Dialect(string name, string timestampColumn, bool textTimes) : IConsumedDialect
    {
        public string Name => name;

        // SQLite's CURRENT_TIMESTAMP is UTC text: text order is time order.
        public object ConsumedAtValue(DateTime utc) =>
            textTimes ? utc.ToString("yyyy-MM-dd HH:mm:ss", System.Globalization.CultureInfo.InvariantCulture) : utc;

        public string CreateTableSql(string table) =>
            $"CREATE TABLE IF NOT EXISTS {CheckIdentifier(table)} (consumer_group VARCHAR(255) NOT NULL, message_id VARCHAR(128) NOT NULL, " +
            $"consumed_at {timestampColumn}, PRIMARY KEY (consumer_group, message_id))";

        public string InsertIfAbsentSql(string table) =>
            $"INSERT INTO {CheckIdentifier(table)} (consumer_group, message_id) VALUES (@consumer_group, @message_id) ON CONFLICT DO NOTHING";
    }
}

/// <summary>Creates the consumed-messages table.</summary>
public static class ConsumedSchema
{
    /// <summary>The default table name.</summary>
    public const string DefaultTable = "halfmsg_consumed";

    /// <summary>Creates <paramref name="table"/> if missing. <paramref name="connection"/> must be open.</summary>
    public static Task EnsureCreatedAsync(DbConnection connection, IConsumedDialect dialect, string table = DefaultTable,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dialect);
        return SqlSupport.EnsureTableAsync(connection, table, dialect.CreateTableSql(table), cancellationToken);
    }

    internal static Task EnsureCreatedOnceAsync(DbConnection connection, IConsumedDialect dialect, string table, CancellationToken ct) =>
        SqlSupport.EnsureTableOnceAsync(connection, table, () => dialect.CreateTableSql(table), ct);

    /// <summary>
    /// Deletes the rows of messages consumed longer than <paramref name="olderThan"/> ago (by <c>consumed_at</c>),
    /// <paramref name="batchSize"/> rows per database transaction, and returns how many it deleted. Run it from a
    /// scheduled job; consumers may run meanwhile.
    /// <para>Before deleting, it records the cut-off for each consumer group that has rows to delete (a row with the
    /// message id <c>halfmsg:pruned-before</c>, whose <c>consumed_at</c> is the cut-off). A message of that group born
    /// (by the producer's clock) before the cut-off plus <see cref="PruneClockSkew"/> that finds no row may have been
    /// consumed and its row deleted: <see cref="ConsumeOnce"/> does not apply it again as new but throws
    /// <see cref="ConsumedRowPrunedException"/> (nothing committed; the message is not acknowledged, comes again and,
    /// after the broker's maximum delivery attempts, goes to the dead letter topic, for an operator to check). Until
    /// 2026-12-06 such a redelivery was applied a second time. So choose <paramref name="olderThan"/> above the longest
    /// time a message can come back after it was consumed (a lost ack comes back after the invisible duration; a dead
    /// letter re-driven, or a queue re-consumed from an earlier offset, whenever an operator does it) and above the
    /// longest a group's backlog can lag: a message of the group first delivered that late is refused the same way.</para>
    /// </summary>
    /// <param name="connection">An open connection.</param>
    /// <param name="dialect">The database's SQL.</param>
    /// <param name="olderThan">Rows consumed longer ago than this are deleted; at least <see cref="MinPruneAge"/> (1 hour).</param>
    /// <param name="batchSize">Rows deleted per database transaction (1 to 100,000).</param>
    /// <param name="table">The consumed-messages table.</param>
    /// <param name="cancellationToken">Stops between batches.</param>
    public static async Task<long> PruneAsync(DbConnection connection, IConsumedDialect dialect, TimeSpan olderThan, int batchSize = 1000,
        string table = DefaultTable, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentNullException.ThrowIfNull(dialect);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(olderThan, TimeSpan.Zero);
        if (olderThan < MinPruneAge)
        {
            // A message without a row born before the cut-off plus PruneClockSkew is refused: with a short age that is
            // every message of the group still in flight, and a job running every few minutes would send the group's
            // whole traffic to the DLQ (found by review of the guard, 2026-12-06).
            throw new ArgumentOutOfRangeException(nameof(olderThan), olderThan,
                $"olderThan must be at least {MinPruneAge}: a message of a pruned group born before the cut-off plus {PruneClockSkew} and not yet consumed is refused as possibly consumed (ConsumedRowPrunedException).");
        }

        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(batchSize, 100_000);
        string t = ConsumedDialects.CheckIdentifier(table);
        await EnsureCreatedOnceAsync(connection, dialect, table, cancellationToken).ConfigureAwait(false);
        object cutOff = dialect.ConsumedAtValue(DateTime.UtcNow - olderThan);
        // The cut-off is committed before any row goes: a consumer that then finds a row missing also finds the cut-off.
        // Only for the groups losing rows now: a group with nothing pruned keeps every message it has not seen applicable.
        await using (DbTransaction transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false))
        {
            await ExecAsync(connection, transaction,
                $"UPDATE {t} SET consumed_at = @cut_off WHERE message_id = '{PrunedBeforeRow}' AND consumed_at < @cut_off AND consumer_group IN " +
                $"(SELECT consumer_group FROM {t} WHERE consumed_at < @cut_off AND message_id <> '{PrunedBeforeRow}')", cutOff, cancellationToken).ConfigureAwait(false);
            await ExecAsync(connection, transaction,
                $"INSERT INTO {t} (consumer_group, message_id, consumed_at) SELECT DISTINCT x.consumer_group, '{PrunedBeforeRow}', @cut_off FROM {t} x " +
                $"WHERE x.consumed_at < @cut_off AND x.message_id <> '{PrunedBeforeRow}' AND NOT EXISTS " +
                $"(SELECT 1 FROM {t} y WHERE y.consumer_group = x.consumer_group AND y.message_id = '{PrunedBeforeRow}') " +
                // Two prunes at once (a job on every replica) both find no cut-off row on PostgreSQL; the second's insert
                // waited for the first and failed on the key (found by review). The first's cut-off stays, earlier than the
                // second's by the time between them, well inside PruneClockSkew.
                "ON CONFLICT DO NOTHING", cutOff, cancellationToken).ConfigureAwait(false);
            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        }
        // Row values in IN: SQLite 3.15+ and PostgreSQL.
        return await SqlSupport.DeleteInBatchesAsync(connection,
            $"DELETE FROM {t} WHERE (consumer_group, message_id) IN " +
            $"(SELECT consumer_group, message_id FROM {t} WHERE consumed_at < @cut_off AND message_id <> '{PrunedBeforeRow}' LIMIT @batch)",
            [("@cut_off", cutOff)], batchSize, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The shortest <c>olderThan</c> <see cref="PruneAsync"/> takes: 1 hour.</summary>
    public static readonly TimeSpan MinPruneAge = TimeSpan.FromHours(1);

    /// <summary>How far a producer's clock (a message's born time) may be behind the clocks of the database and the
    /// pruning job (the cut-off) for <see cref="PruneAsync"/>'s guard: 10 minutes.</summary>
    public static readonly TimeSpan PruneClockSkew = TimeSpan.FromMinutes(10);

    /// <summary>The message id of a group's row holding its newest prune cut-off (in <c>consumed_at</c>). Message ids of
    /// RocketMQ never hold a colon.</summary>
    internal const string PrunedBeforeRow = "halfmsg:pruned-before";

    /// <summary>Whether <paramref name="consumerGroup"/> had rows pruned with a cut-off after
    /// <paramref name="bornUtc"/> minus <see cref="PruneClockSkew"/>: a message born then may have been consumed and
    /// its row deleted. One look-up by the table's key.</summary>
    internal static async Task<bool> MayBePrunedAsync(DbConnection connection, DbTransaction transaction, IConsumedDialect dialect, string table,
        string consumerGroup, DateTime bornUtc, CancellationToken ct)
    {
        await using DbCommand command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = $"SELECT COUNT(*) FROM {ConsumedDialects.CheckIdentifier(table)} " +
            $"WHERE consumer_group = @consumer_group AND message_id = '{PrunedBeforeRow}' AND consumed_at > @born";
        AddParameter(command, "@consumer_group", consumerGroup);
        AddParameter(command, "@born", dialect.ConsumedAtValue(bornUtc - PruneClockSkew));
        return Convert.ToInt64(await command.ExecuteScalarAsync(ct).ConfigureAwait(false), System.Globalization.CultureInfo.InvariantCulture) > 0;
    }

    private static async Task ExecAsync(DbConnection connection, DbTransaction transaction, string sql, object cutOff, CancellationToken ct)
    {
        await using DbCommand command = connection.CreateCommand();
        command.Transaction = transaction;
        command.CommandText = sql;
        AddParameter(command, "@cut_off", cutOff);
        await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
    }

    private static void AddParameter(DbCommand command, string name, object value)
    {
        DbParameter p = command.CreateParameter();
        p.ParameterName = name;
        p.Value = value;
        command.Parameters.Add(p);
    }
}

/// <summary>
/// Exactly-once effects on top of at-least-once delivery: the message's id is recorded in the same local transaction
/// as the handler's writes, so a redelivered message (ack lost, invisible duration expired, consumer crash) finds its
/// id already recorded and its writes are skipped.
/// </summary>
public static class ConsumeOnce
{
    /// <summary>
    /// In one transaction on <paramref name="connection"/> (opened if needed): inserts (<paramref name="consumerGroup"/>,
    /// message id) into <c>halfmsg_consumed</c> (created if missing) and, only if that row is new, runs
    /// <paramref name="writes"/>; then commits. If the writes throw, everything is rolled back and the exception
    /// propagates (do not ack: the message is redelivered). A concurrent duplicate waits for the first to finish.
    /// Either way the caller acks afterwards.
    /// </summary>
    /// <returns>True when the writes ran; false when the message had already been processed.</returns>
    public static Task<bool> ExecuteAsync(DbConnection connection, string consumerGroup, ReceivedMessage message,
        Func<DbTransaction, CancellationToken, Task> writes, CancellationToken cancellationToken = default) =>
        ExecuteAsync(connection, consumerGroup, message, writes, dialect: null, ConsumedSchema.DefaultTable, cancellationToken);

    /// <summary>As the shorter overload with an explicit dialect (null: detect) and table name.</summary>
    public static async Task<bool> ExecuteAsync(DbConnection connection, string consumerGroup, ReceivedMessage message,
        Func<DbTransaction, CancellationToken, Task> writes, IConsumedDialect? dialect, string table, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(message);
        return await ExecuteAsync(connection, consumerGroup, message.MessageId, message.BornTimestamp, writes, dialect, table, cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>The same, keyed by a message id (for callers that do not hold a <see cref="ReceivedMessage"/>). Without
    /// the message's born time, a redelivery after <see cref="ConsumedSchema.PruneAsync"/> deleted its row is applied
    /// again: pass it with the overload that takes <c>bornTimestamp</c>.</summary>
    public static Task<bool> ExecuteAsync(DbConnection connection, string consumerGroup, string messageId,
        Func<DbTransaction, CancellationToken, Task> writes, IConsumedDialect? dialect = null, string table = ConsumedSchema.DefaultTable,
        CancellationToken cancellationToken = default) =>
        ExecuteAsync(connection, consumerGroup, messageId, bornTimestamp: null, writes, dialect, table, cancellationToken);

    /// <summary>
    /// The same, keyed by a message id, with the message's born time (the producer's clock; null: not known). A message
    /// whose row is missing and that was born before a prune's cut-off of the group (<see cref="ConsumedSchema.PruneAsync"/>,
    /// plus <see cref="ConsumedSchema.PruneClockSkew"/>) may have been consumed and its row deleted: nothing is run or
    /// committed and <see cref="ConsumedRowPrunedException"/> is thrown (the message is not acknowledged).
    /// </summary>
    public static async Task<bool> ExecuteAsync(DbConnection connection, string consumerGroup, string messageId, DateTimeOffset? bornTimestamp,
        Func<DbTransaction, CancellationToken, Task> writes, IConsumedDialect? dialect = null, string table = ConsumedSchema.DefaultTable,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(connection);
        ArgumentException.ThrowIfNullOrEmpty(consumerGroup);
        ArgumentException.ThrowIfNullOrEmpty(messageId);
        ArgumentNullException.ThrowIfNull(writes);
        dialect ??= ConsumedDialects.Detect(connection);
        if (connection.State != System.Data.ConnectionState.Open)
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        await ConsumedSchema.EnsureCreatedOnceAsync(connection, dialect, table, cancellationToken).ConfigureAwait(false);
        await using DbTransaction transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await using DbCommand command = connection.CreateCommand();
            command.Transaction = transaction;
            command.CommandText = dialect.InsertIfAbsentSql(table);
            command.CommandTimeout = 60;
            AddParameter(command, "@consumer_group", consumerGroup);
            AddParameter(command, "@message_id", messageId);
            bool fresh = await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
            // A missing row is a message never consumed, or one whose row a prune deleted: only its birth tells them apart
            // (it was consumed after it was born). Until 2026-12-06 both were applied as new, so a redelivery after the
            // prune ran its writes again; now a message the prune may have covered is refused rather than guessed at.
            // A born time at or before 1970 is none: the broker stores 0 for a producer that sent none (found by review).
            if (fresh && bornTimestamp is { } born && born > DateTimeOffset.UnixEpoch
                && await ConsumedSchema.MayBePrunedAsync(connection, transaction, dialect, table, consumerGroup, born.UtcDateTime, cancellationToken)
                    .ConfigureAwait(false))
            {
                throw new ConsumedRowPrunedException(messageId, consumerGroup, born);
            }

            if (fresh)
            {
                await writes(transaction, cancellationToken).ConfigureAwait(false);
                // PostgreSQL aborts a transaction at its first failed statement and a COMMIT of it rolls back without an
                // error: writes that caught such a failure and carried on would have the message acknowledged with
                // nothing applied, lost for good (found by review, 2026-12-05).
                await SqlSupport.EnsureTransactionUsableAsync(connection, transaction, ex => new ConsumeAbortedException(messageId, ex), cancellationToken)
                    .ConfigureAwait(false);
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            return fresh;
        }
        catch
        {
            try
            {
                await transaction.RollbackAsync(CancellationToken.None).ConfigureAwait(false);
            }
            catch (Exception)
            {
                // Broken connection: the database discards the transaction.
            }

            throw;
        }
    }

    private static void AddParameter(DbCommand command, string name, object value)
    {
        DbParameter p = command.CreateParameter();
        p.ParameterName = name;
        p.Value = value;
        command.Parameters.Add(p);
    }
}

/// <summary>Builds <see cref="PushConsumer"/> handlers that consume each message at most once per group.</summary>
public static class IdempotentHandler
{
    /// <summary>
    /// A handler that opens a connection from <paramref name="connectionFactory"/> and runs <paramref name="writes"/>
    /// through <see cref="ConsumeOnce"/>: a duplicate delivery is acknowledged without running the writes; an exception
    /// in the writes is a failure (redelivery).
    /// </summary>
    public static Func<ReceivedMessage, CancellationToken, Task<ConsumeResult>> Create(Func<DbConnection> connectionFactory,
        string consumerGroup, Func<ReceivedMessage, DbTransaction, CancellationToken, Task> writes, IConsumedDialect? dialect = null)
    {
        ArgumentNullException.ThrowIfNull(connectionFactory);
        ArgumentNullException.ThrowIfNull(writes);
        return async (message, ct) =>
        {
            await using DbConnection connection = connectionFactory();
            await ConsumeOnce.ExecuteAsync(connection, consumerGroup, message, (tx, c) => writes(message, tx, c), dialect,
                ConsumedSchema.DefaultTable, ct).ConfigureAwait(false);
            return ConsumeResult.Success;
        };
    }
}

/// <summary>
/// Thrown by <see cref="ConsumeOnce"/> when, after the writes returned, the local transaction could no longer commit: on
/// PostgreSQL a statement in it failed (the error was caught and the writes carried on, which leaves the transaction
/// aborted, and PostgreSQL would turn the COMMIT into a rollback without an error).
/// Nothing was committed; the message is not acknowledged (a push consumer's handler fails), so it is delivered again.
/// </summary>
public sealed class ConsumeAbortedException : Exception
{
    /// <summary>Creates the exception for <paramref name="messageId"/>.</summary>
    public ConsumeAbortedException(string messageId, Exception? innerException)
        : base($"The local transaction consuming message {messageId} can no longer commit (a statement in it failed and the transaction " +
            "was aborted); nothing was committed and the message will be delivered again.", innerException)
    {
        MessageId = messageId;
    }

    /// <summary>The message's id.</summary>
    public string MessageId { get; }
}

/// <summary>
/// Thrown by <see cref="ConsumeOnce"/> for a message whose consumed row is missing while its group's rows were pruned
/// with a cut-off after the message was born (<see cref="ConsumedSchema.PruneAsync"/>): it may have been applied and its
/// row deleted, so it is not applied again as new. Nothing was committed; the message is not acknowledged (a push
/// consumer's handler fails), so it comes again and, after the broker's maximum delivery attempts, goes to the dead
/// letter topic. Check whether its effects are there and apply it by hand if they are not.
/// </summary>
public sealed class ConsumedRowPrunedException : Exception
{
    /// <summary>Creates the exception for <paramref name="messageId"/> of <paramref name="consumerGroup"/>.</summary>
    public ConsumedRowPrunedException(string messageId, string consumerGroup, DateTimeOffset bornTimestamp)
        : base($"Message {messageId} (born {bornTimestamp:O}) has no consumed row in group {consumerGroup}, whose rows were pruned up to a " +
            "later time: it may have been applied already, so it is not applied again; nothing was committed. It will be delivered again " +
            "and end in the dead letter topic; check whether its effects are there.")
    {
        MessageId = messageId;
        ConsumerGroup = consumerGroup;
        BornTimestamp = bornTimestamp;
    }

    /// <summary>The message's id.</summary>
    public string MessageId { get; }

    /// <summary>The consumer group whose rows were pruned.</summary>
    public string ConsumerGroup { get; }

    /// <summary>When the producer created the message.</summary>
    public DateTimeOffset BornTimestamp { get; }
}
