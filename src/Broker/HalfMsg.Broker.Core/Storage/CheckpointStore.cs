using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// Checkpoint files on disk: written whole to a temporary name, fsynced, renamed into place, and the directory
/// fsynced, so a checkpoint is either absent or complete after a crash. A checkpoint is only deleted once a newer one
/// is durable, and the chain before the newest is kept (see <see cref="Checkpointer"/>), so a later damaged file
/// still leaves one to fall back on.
/// </summary>
internal sealed class CheckpointStore(string directory, ILogger logger)
{
    private const string Prefix = "checkpoint-";
    private const string Suffix = ".bin";
    private const string TemporarySuffix = ".tmp";

    public string Directory { get; } = directory;

    /// <summary>Checkpoint files, newest (highest covered address) first.</summary>
    public IReadOnlyList<string> ListNewestFirst()
    {
        if (!System.IO.Directory.Exists(Directory)) return [];
        return System.IO.Directory.GetFiles(Directory, Prefix + "*" + Suffix).OrderDescending(StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// Deletes the temporary files of checkpoint writes a crash interrupted (<c>checkpoint-&lt;covered&gt;.bin.tmp</c>):
    /// each can be as large as a checkpoint, and its name is reused only for the same covered address, so a crash loop
    /// would leak disk without bound. Only names this store writes are deleted. Call once at start, with the data
    /// directory locked: no write of this store's is under way then, and no other broker's can be.
    /// </summary>
    public void DeleteInterruptedWrites()
    {
        if (!System.IO.Directory.Exists(Directory)) return;
        foreach (var tmp in System.IO.Directory.GetFiles(Directory, Prefix + "*" + Suffix + TemporarySuffix))
        {
            // The pattern's * matches anything ("checkpoint-old.bin.tmp" too): only a checkpoint's own name plus the suffix is ours.
            if (!TryParseCovered(tmp[..^TemporarySuffix.Length], out _)) continue;
            try
            {
                File.Delete(tmp);
                logger.LogInformation("Deleted {File}, left by a checkpoint write that did not complete", tmp);
            }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                logger.LogWarning(ex, "Could not delete {File}, left by a checkpoint write that did not complete", tmp);
            }
        }
    }

    /// <summary>A checkpoint being written: content goes to a temporary file until <see cref="CompleteAsync"/>.</summary>
    public sealed class Pending(FileStream file, string tmp, string final) : IAsyncDisposable
    {
        public Stream Stream { get; } = new BufferedStream(file, 1 << 16);
        internal FileStream File => file;
        internal string Temporary => tmp;
        internal string Final => final;
        public async ValueTask DisposeAsync()
        {
            await Stream.DisposeAsync().ConfigureAwait(false);
            try { System.IO.File.Delete(tmp); } catch (IOException) { }
        }
    }

    public Pending Begin(long covered)
    {
        System.IO.Directory.CreateDirectory(Directory);
        string final = Path.Combine(Directory, $"{Prefix}{covered:x16}{Suffix}");
        string tmp = final + TemporarySuffix;
        return new Pending(new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.None), tmp, final);
    }

    /// <summary>
    /// fsyncs the file, renames it into place, fsyncs the directory, then deletes the files that cover less than
    /// <paramref name="deleteBelow"/> (none when null): a delta needs every file back to its whole checkpoint, and the
    /// chain before it is the fallback should a file of the newest chain be damaged.
    /// </summary>
    public async Task CompleteAsync(Pending pending, long? deleteBelow, CancellationToken ct)
    {
        await pending.Stream.FlushAsync(ct).ConfigureAwait(false);
        pending.File.Flush(flushToDisk: true);
        await pending.Stream.DisposeAsync().ConfigureAwait(false);
        File.Move(pending.Temporary, pending.Final, overwrite: true);
        // Without this the rename may not survive a crash: the directory entry is data of its own.
        FsyncDirectory(Directory);
        // Only now may older ones go.
        if (deleteBelow is not { } below) return;
        foreach (var old in ListNewestFirst())
        {
            if (!TryParseCovered(old, out long covered) || covered >= below) continue;
            try { File.Delete(old); } catch (IOException ex) { logger.LogWarning(ex, "Could not delete old checkpoint {File}", old); }
        }
    }

    /// <summary>Where checkpoints that cover more log than the log holds are moved (kept for an operator, never loaded).</summary>
    public const string AheadOfLogDirectory = "ahead-of-log";

    /// <summary>
    /// Moves checkpoint files whose covered address is beyond <paramref name="logTail"/> into <see cref="AheadOfLogDirectory"/>
    /// and returns their names. A checkpoint is written only once the log it covers is durable, so such a file means the
    /// log lost its end (or its commit metadata). Loading it would apply state to addresses the log no longer has, which
    /// new records then reuse; leaving it in place would let it be loaded once the log grows past it.
    /// </summary>
    public IReadOnlyList<string> SetAsideAheadOf(long logTail)
    {
        var moved = new List<string>();
        foreach (var file in ListNewestFirst())
        {
            if (!TryParseCovered(file, out long covered) || covered <= logTail) continue;
            string aside = Path.Combine(Directory, AheadOfLogDirectory);
            System.IO.Directory.CreateDirectory(aside);
            string target = Path.Combine(aside, Path.GetFileName(file));
            if (File.Exists(target)) target += "." + DateTime.UtcNow.ToString("yyyyMMddTHHmmssfff", System.Globalization.CultureInfo.InvariantCulture);
            File.Move(file, target);
            FsyncDirectory(aside);
            moved.Add(Path.GetFileName(file));
        }
        if (moved.Count > 0) FsyncDirectory(Directory);
        return moved;
    }

    public static bool TryParseCovered(string file, out long covered)
    {
        var name = Path.GetFileName(file);
        covered = 0;
        return name.StartsWith(Prefix, StringComparison.Ordinal) && name.EndsWith(Suffix, StringComparison.Ordinal)
            && long.TryParse(name.AsSpan(Prefix.Length, name.Length - Prefix.Length - Suffix.Length), System.Globalization.NumberStyles.HexNumber, null, out covered);
    }

    private static void FsyncDirectory(string path)
    {
        if (!OperatingSystem.IsLinux() && !OperatingSystem.IsMacOS()) return; // Windows has no directory fsync; NTFS journals renames.
        int fd = Native.open(path, 0 /* O_RDONLY */);
        if (fd < 0) throw new IOException($"could not open directory {path} to fsync it (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (Native.fsync(fd) != 0) throw new IOException($"fsync of directory {path} failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            Native.close(fd);
        }
    }

    private static partial class Native
    {
        [DllImport("libc", SetLastError = true)]
        public static extern int open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);
        [DllImport("libc", SetLastError = true)]
        public static extern int fsync(int fd);
        [DllImport("libc", SetLastError = true)]
        public static extern int close(int fd);
    }
}

/// <summary>How checkpoint files are named: <c>checkpoint-&lt;covered address, 16 hex digits&gt;.bin</c>.</summary>
public static class CheckpointStoreNames
{
    /// <summary>The covered address of a checkpoint file, or -1 if the name is not one.</summary>
    public static long Covered(string file) => CheckpointStore.TryParseCovered(file, out var covered) ? covered : -1;
}
