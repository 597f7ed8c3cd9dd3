using System.Data.Common;
using HalfMsg.ConsumerClient.Idempotency;
using HalfMsg.ProducerClient.Barrier;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace HalfMsg.Client.Tests.Infrastructure;

/// <summary>A database the barrier / idempotency tests run against.</summary>
public interface ITestDatabase
{
    Func<DbConnection> Factory { get; }
    IBarrierDialect BarrierDialect { get; }
    IConsumedDialect ConsumedDialect { get; }
}

/// <summary>A real SQLite file in a temp dir (one per test class instance).</summary>
public sealed class SqliteDatabase : ITestDatabase, IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "halfmsg-sqlite-" + Guid.NewGuid().ToString("N"));

    public SqliteDatabase()
    {
        Directory.CreateDirectory(_dir);
        ConnectionString = new SqliteConnectionStringBuilder
        {
            DataSource = Path.Combine(_dir, "test.db"),
            DefaultTimeout = 30,
            Pooling = false,
        }.ToString();
    }

    public string ConnectionString { get; }
    public Func<DbConnection> Factory => () => new SqliteConnection(ConnectionString);
    public IBarrierDialect BarrierDialect => BarrierDialects.Sqlite;
    public IConsumedDialect ConsumedDialect => ConsumedDialects.Sqlite;

    public void Dispose()
    {
        try
        {
            Directory.Delete(_dir, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A throwaway PostgreSQL server shared by a test class (see <see cref="PostgresFactAttribute"/> for skipping).</summary>
public sealed class PostgresDatabase : ITestDatabase, IAsyncLifetime
{
    private PostgresServer? _server;

    public string ConnectionString => (_server ?? throw new InvalidOperationException(
        "PostgreSQL did not start: " + PostgresServer.LastError)).ConnectionString;

    public Func<DbConnection> Factory => () => new NpgsqlConnection(ConnectionString);
    public IBarrierDialect BarrierDialect => BarrierDialects.PostgreSql;
    public IConsumedDialect ConsumedDialect => ConsumedDialects.PostgreSql;

    public async Task InitializeAsync() => _server = await PostgresServer.TryStartAsync();

    public async Task DisposeAsync()
    {
        if (_server is not null)
        {
            await _server.DisposeAsync();
        }
    }
}

/// <summary>
/// A fact that needs PostgreSQL. Skipped (with a reason, visible in the test report) only when not running in CI
/// (env CI=true) and no PostgreSQL binaries are installed. In CI, or when binaries exist but the server fails to
/// start, the test FAILS with <see cref="PostgresServer.LastError"/>: it never passes silently.
/// </summary>
public sealed class PostgresFactAttribute : FactAttribute
{
    public PostgresFactAttribute()
    {
        bool ci = string.Equals(Environment.GetEnvironmentVariable("CI"), "true", StringComparison.OrdinalIgnoreCase);
        if (!ci && !BinariesInstalled())
        {
            Skip = "PostgreSQL is not installed (no initdb in $HALFMSG_PG_BINDIR, /usr/lib/postgresql/*/bin or PATH); run .ci/install-deps.sh";
        }
    }

    private static bool BinariesInstalled()
    {
        IEnumerable<string> dirs = [];
        if (Environment.GetEnvironmentVariable("HALFMSG_PG_BINDIR") is { Length: > 0 } env)
        {
            dirs = dirs.Append(env);
        }

        if (Directory.Exists("/usr/lib/postgresql"))
        {
            dirs = dirs.Concat(Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")));
        }

        dirs = dirs.Concat((Environment.GetEnvironmentVariable("PATH") ?? string.Empty).Split(Path.PathSeparator));
        return dirs.Any(d => d.Length > 0 && File.Exists(Path.Combine(d, "initdb")));
    }
}
