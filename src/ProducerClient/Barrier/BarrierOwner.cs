using System.Collections.Concurrent;
using System.Data.Common;
using System.Security.Cryptography;

namespace HalfMsg.ProducerClient.Barrier;

/// <summary>
/// Which barrier database a half message's local transaction runs against. The broker checks a half back with any live
/// producer of its group, and with gRPC the group is the topic, so the check can reach another service (or an instance
/// with a database of its own) whose barrier table has never seen the transaction: inserting <c>rolled_back</c> there
/// succeeds, and its Rollback would drop an event whose local transaction committed (when the instance that sent the
/// half is gone, or its stream is reconnecting). So every barrier table holds an owner id, made once (a row with a
/// reserved id), <see cref="Producer.ExecuteAsync(DbConnection, Message, Func{DbTransaction, CancellationToken, Task}, CancellationToken)"/>
/// stamps each half with its table's owner id, and a <see cref="BarrierChecker"/> answers Unknown for a half stamped
/// with another's: the broker asks again, and an instance on the right database answers (found by review, 2026-12-05).
/// </summary>
internal static class BarrierOwner
{
    /// <summary>The half message's property that carries the owner id.</summary>
    public const string Property = "__HALFMSG_BARRIER_OWNER";

    /// <summary>The barrier row that holds the owner id (never a transaction id: those are hex).</summary>
    private const string RowId = "halfmsg:owner";

    private static readonly ConcurrentDictionary<string, string> Known = new(StringComparer.Ordinal);

    /// <summary>The owner id of the barrier table <paramref name="connection"/> reaches (open), made on first use.</summary>
    public static async Task<string> GetAsync(DbConnection connection, IBarrierDialect dialect, string table, CancellationToken ct)
    {
        string key = connection.DataSource + "|" + connection.Database + "|" + table;
        if (Known.TryGetValue(key, out string? owner)) return owner;
        await using DbTransaction transaction = await connection.BeginTransactionAsync(ct).ConfigureAwait(false);
        // 16 hex characters: the state column's width. Two processes racing: the first insert wins, both read it.
        string candidate = Convert.ToHexString(RandomNumberGenerator.GetBytes(8)).ToLowerInvariant();
        await BarrierStore.TryInsertAsync(connection, transaction, dialect, RowId, candidate, ct, table).ConfigureAwait(false);
        owner = await BarrierStore.GetStateAsync(connection, transaction, dialect, RowId, ct, table).ConfigureAwait(false)
            ?? throw new InvalidOperationException($"the barrier table {table} has no owner row after inserting it");
        await transaction.CommitAsync(ct).ConfigureAwait(false);
        return Known.GetOrAdd(key, owner);
    }
}
