using System.Data.Common;

namespace HalfMsg.ProducerClient.Barrier;

/// <summary>
/// The check-back side of the barrier (dtm's sub-transaction barrier applied to two-phase messages). It tries to
/// insert (transaction id, <c>rolled_back</c>) in its own transaction:
/// <list type="bullet">
/// <item>inserted: the business transaction never committed, and now never can (its own barrier insert will
/// conflict), so <see cref="TransactionResolution.Rollback"/>;</item>
/// <item>the business transaction is still open: the insert waits on its lock, then continues as below;</item>
/// <item>conflict with <c>committed</c>: <see cref="TransactionResolution.Commit"/>;</item>
/// <item>conflict with <c>rolled_back</c> (an earlier check): <see cref="TransactionResolution.Rollback"/>.</item>
/// </list>
/// Correct whether the local transaction has not started, is in progress, rolled back, or committed.
/// <para>What a check waits for depends on the database (see <see cref="BarrierDialects"/>): on PostgreSQL only the
/// business transaction of the same id; on SQLite any write transaction in the same file. It waits at most
/// <see cref="LockWait"/>; then it answers <see cref="TransactionResolution.Unknown"/> and the broker asks again at
/// its next check (each check counts towards the broker's check limit, so set the wait above your longest write
/// transaction).</para>
/// </summary>
public sealed class BarrierChecker : ITransactionChecker
{
    private readonly Func<DbConnection> _connectionFactory;
    private readonly IBarrierDialect _dialect;
    // The table ExecuteAsync writes.
    private const string Table = BarrierSchema.DefaultTable;

    /// <summary>The lock wait when none is given: 30 s.</summary>
    public static readonly TimeSpan DefaultLockWait = TimeSpan.FromSeconds(30);

    /// <summary>Creates a checker opening connections with <paramref name="connectionFactory"/> (a new, unopened
    /// connection per check; it is disposed after the check).</summary>
    /// <param name="connectionFactory">A new, unopened connection per check.</param>
    /// <param name="dialect">The database's barrier SQL.</param>
    /// <param name="lockWait">How long a check waits for another transaction's lock (<see cref="DefaultLockWait"/> when null).</param>
    /// <remarks>It reads the table <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
    /// writes, <see cref="BarrierSchema.DefaultTable"/>. Until 2026-12-05 it took a table name the producer did not: a
    /// checker on another table answered Rollback for every committed transaction whose decision was lost (found by review).</remarks>
    public BarrierChecker(Func<DbConnection> connectionFactory, IBarrierDialect dialect, TimeSpan? lockWait = null)
    {
        _connectionFactory = connectionFactory ?? throw new ArgumentNullException(nameof(connectionFactory));
        _dialect = dialect ?? throw new ArgumentNullException(nameof(dialect));
        LockWait = lockWait ?? DefaultLockWait;
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(LockWait, TimeSpan.Zero, nameof(lockWait));
    }

    /// <summary>How long a check waits for a lock held by another transaction before answering Unknown.</summary>
    public TimeSpan LockWait { get; }

    /// <inheritdoc />
    public async ValueTask<TransactionResolution> CheckAsync(MessageView message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        return await CheckAsync(message.TransactionId ?? message.MessageId, message.Properties.GetValueOrDefault(BarrierOwner.Property),
            message.BornTimestamp, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Resolves <paramref name="transactionId"/> (the same decision as the <see cref="ITransactionChecker"/> entry
    /// point, for a half whose birth is not known: once <see cref="BarrierSchema.PruneAsync"/> has run, a transaction
    /// without a row is answered Unknown).</summary>
    public Task<TransactionResolution> CheckAsync(string transactionId, CancellationToken cancellationToken)
        => CheckAsync(transactionId, null, null, cancellationToken);

    /// <summary>Resolves <paramref name="transactionId"/>, a half born at <paramref name="bornTimestamp"/> (by the
    /// producer's clock): a transaction without a row is answered Rollback unless
    /// <see cref="BarrierSchema.PruneAsync"/> may have deleted its row, then Unknown.</summary>
    public Task<TransactionResolution> CheckAsync(string transactionId, DateTimeOffset? bornTimestamp, CancellationToken cancellationToken)
        => CheckAsync(transactionId, null, bornTimestamp, cancellationToken);

    // owner: the half's barrier owner stamp (null when the half carries none: not sent by ExecuteAsync).
    private async Task<TransactionResolution> CheckAsync(string transactionId, string? owner, DateTimeOffset? bornTimestamp,
        CancellationToken cancellationToken)
    {
        ArgumentException.ThrowIfNullOrEmpty(transactionId);
        try
        {
            return await DecideAsync(transactionId, owner, bornTimestamp, cancellationToken).ConfigureAwait(false);
        }
        catch (DbException ex) when (_dialect.IsLockWaitTimeout(ex))
        {
            // Another transaction held the lock longer than LockWait: no answer yet; the broker asks again.
            return TransactionResolution.Unknown;
        }
    }

    private async Task<TransactionResolution> DecideAsync(string transactionId, string? owner, DateTimeOffset? bornTimestamp,
        CancellationToken cancellationToken)
    {
        await using DbConnection connection = _connectionFactory();
        if (connection.State != System.Data.ConnectionState.Open)
        {
            await connection.OpenAsync(cancellationToken).ConfigureAwait(false);
        }

        await _dialect.PrepareConnectionAsync(connection, LockWait, cancellationToken).ConfigureAwait(false);
        try
        {
            return await DecideOnAsync(connection, transactionId, owner, bornTimestamp, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            await RestoreAsync(connection).ConfigureAwait(false);
        }
    }

    // The connection's own lock wait back before it goes to its pool (after the transaction below has ended). Not with the
    // check's token, which may be what ended the check. A failure here must not replace the check's answer or error: a
    // broken connection is not pooled again.
    private async Task RestoreAsync(DbConnection connection)
    {
        if (connection.State != System.Data.ConnectionState.Open)
        {
            return;
        }

        try
        {
            using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await _dialect.RestoreConnectionAsync(connection, timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is DbException or InvalidOperationException or OperationCanceledException or FormatException)
        {
        }
    }

    private async Task<TransactionResolution> DecideOnAsync(DbConnection connection, string transactionId, string? owner, DateTimeOffset? bornTimestamp,
        CancellationToken cancellationToken)
    {
        await BarrierSchema.EnsureCreatedOnceAsync(connection, _dialect, cancellationToken, Table).ConfigureAwait(false);
        // Another database's transaction (another service on the topic, or an instance with its own database): this
        // table cannot tell, and a Rollback here would drop an event that may have committed there. The broker asks again.
        if (owner is not null && owner != await BarrierOwner.GetAsync(connection, _dialect, Table, cancellationToken).ConfigureAwait(false))
            return TransactionResolution.Unknown;
        await using DbTransaction transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        if (await BarrierStore.TryInsertAsync(connection, transaction, _dialect, transactionId, BarrierStore.RolledBack, cancellationToken, Table, LockWait).ConfigureAwait(false))
        {
            // No row: never committed, unless a prune deleted it. Read after the insert, so a prune that deleted the
            // row before it is seen (a prune records its cut-off before deleting anything).
            if (await BarrierStore.MayBePrunedAsync(connection, transaction, _dialect, bornTimestamp, cancellationToken, Table).ConfigureAwait(false))
            {
                await transaction.RollbackAsync(cancellationToken).ConfigureAwait(false);
                return TransactionResolution.Unknown;
            }

            await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
            return TransactionResolution.Rollback;
        }

        string? state = await BarrierStore.GetStateAsync(connection, transaction, _dialect, transactionId, cancellationToken, Table).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
        return state switch
        {
            BarrierStore.Committed => TransactionResolution.Commit,
            BarrierStore.RolledBack => TransactionResolution.Rollback,
            _ => TransactionResolution.Unknown,
        };
    }
}
