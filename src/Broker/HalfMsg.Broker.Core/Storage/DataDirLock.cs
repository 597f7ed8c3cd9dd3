using System.Globalization;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Exclusive use of a data directory by one broker for as long as it runs. Two brokers on one log would interleave
/// their appends and truncations and corrupt each other.
/// </summary>
/// <remarks>
/// <c>&lt;data&gt;/broker.lock</c> is opened with <see cref="FileShare.None"/>, which .NET on Linux and macOS turns into
/// <c>flock(LOCK_EX | LOCK_NB)</c> (and Windows into a sharing mode): the kernel releases it when the process ends in
/// any way, kill -9 included, so a stale lock cannot survive its holder. A lock held this way cannot be read by
/// others (their open takes a shared flock and fails), so the holder's pid goes into <c>broker.pid</c> beside it,
/// written after the lock is taken; it is informational only and never decides who holds the lock.
/// </remarks>
public sealed class DataDirLock : IDisposable
{
    public const string LockFileName = "broker.lock";
    public const string PidFileName = "broker.pid";

    private readonly FileStream _lock;

    private DataDirLock(string directory, FileStream lockFile)
    {
        Directory = directory;
        _lock = lockFile;
    }

    /// <summary>The locked directory (full path).</summary>
    public string Directory { get; }

    /// <summary>Takes the lock or throws <see cref="DataDirLockedException"/> naming the holder.</summary>
    public static DataDirLock Acquire(string dataDir)
    {
        string dir = Path.GetFullPath(dataDir);
        System.IO.Directory.CreateDirectory(dir);
        string lockPath = Path.Combine(dir, LockFileName);
        FileStream file;
        try
        {
            file = new FileStream(lockPath, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1, FileOptions.None);
        }
        catch (IOException ex) when (ex is not FileNotFoundException and not DirectoryNotFoundException && IsSharingViolation(ex))
        {
            throw new DataDirLockedException(dir, ReadHolderPid(dir), ex);
        }
        try
        {
            string pid = Environment.ProcessId.ToString(CultureInfo.InvariantCulture);
            File.WriteAllText(Path.Combine(dir, PidFileName), pid + "\n");
            return new DataDirLock(dir, file);
        }
        catch
        {
            file.Dispose();
            throw;
        }
    }

    // .NET reports a held flock as an IOException with HResult EWOULDBLOCK (11 on Linux, 35 on macOS) or, on Windows,
    // ERROR_SHARING_VIOLATION (0x80070020).
    private static bool IsSharingViolation(IOException ex)
        => ex.HResult is 11 or 35 or unchecked((int)0x80070020) || ex.Message.Contains("being used by another process", StringComparison.Ordinal);

    private static int? ReadHolderPid(string dir)
    {
        try
        {
            var text = File.ReadAllText(Path.Combine(dir, PidFileName)).Trim();
            return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int pid) ? pid : null;
        }
        catch (IOException)
        {
            return null;
        }
        catch (UnauthorizedAccessException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        // The pid file stays: it is only read while the lock is held by someone, who will have rewritten it.
        _lock.Dispose();
    }
}

/// <summary>Another process holds the data dir. The message is one line naming the dir and the holder's pid.</summary>
public sealed class DataDirLockedException(string directory, int? holderPid, Exception? inner = null)
    : IOException($"data dir '{directory}' is in use by another broker (pid {holderPid?.ToString(CultureInfo.InvariantCulture) ?? "unknown"}); " +
        "stop it first or use another data dir", inner)
{
    public string Directory { get; } = directory;
    public int? HolderPid { get; } = holderPid;
}
