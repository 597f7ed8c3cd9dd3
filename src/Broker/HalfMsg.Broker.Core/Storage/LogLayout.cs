using System.Globalization;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// The page size a log was created with, kept in <c>log/layout</c> next to the log. It cannot change later: FasterLog
/// addresses are byte positions, and a scan that meets the zero padding at the end of a page jumps to the next page
/// boundary, so reading a log with larger pages than it was written with would skip every record between an old page
/// end and the next new page boundary. A log written before this file existed used 4 MiB pages (2^22).
/// </summary>
internal static class LogLayout
{
    public const string FileName = "layout";
    public const int LegacyPageSizeBits = 22;

    /// <summary>
    /// The page size to open the log in <paramref name="directory"/> with, so that a record of
    /// <paramref name="maxRecordSize"/> bytes fits. A new log gets the smallest page that fits, recorded durably before
    /// the first record; an existing log keeps its own, and if that is too small the log cannot be opened with this
    /// configuration (<see cref="LogLayoutException"/>).
    /// </summary>
    public static int Resolve(string directory, int maxRecordSize)
    {
        Directory.CreateDirectory(directory);
        string path = Path.Combine(directory, FileName);
        int required = RecordLimits.PageSizeBitsForRecord(maxRecordSize);
        int bits;
        if (File.Exists(path))
        {
            bits = Parse(path);
        }
        else if (Directory.EnumerateFileSystemEntries(directory).Any(e => IsLogFile(Path.GetFileName(e))))
        {
            bits = LegacyPageSizeBits;
        }
        else
        {
            Write(directory, required);
            return required;
        }

        if (bits < required)
        {
            int fits = RecordLimits.BodyCapacity(bits);
            throw new LogLayoutException(
                $"the log in '{directory}' was created with {Mib(1L << bits)} pages, which hold bodies of up to {fits} bytes; " +
                $"a maximum message size of {maxRecordSize - RecordLimits.MaxRecordOverhead} bytes needs {Mib(1L << required)} pages. " +
                $"Set the maximum message size to {fits} or less, or start with a new data dir.");
        }
        if (!File.Exists(path)) Write(directory, bits);
        return bits;
    }

    /// <summary>
    /// Whether a directory entry is evidence of a log written before the layout file: a FasterLog segment
    /// (<c>broker.log.N</c>), <see cref="SlotLogCommitManager"/>'s <c>commit-meta</c>, or FASTER's own commit files
    /// (<c>log-commits</c>). Nothing else is: the log may have a mount of its own, and a freshly formatted one holds
    /// <c>lost+found</c>; a kill -9 may leave the start's write probe or <c>layout.tmp</c>.
    /// </summary>
    private static bool IsLogFile(string name)
    {
        if (name is SlotLogCommitManager.FileName or RecordLog.LegacyCommitsDirectory) return true;
        string segmentPrefix = RecordLog.DeviceFileName + ".";
        return name.Length > segmentPrefix.Length && name.StartsWith(segmentPrefix, StringComparison.Ordinal)
            && name.AsSpan(segmentPrefix.Length).IndexOfAnyExceptInRange('0', '9') < 0;
    }

    private static int Parse(string path)
    {
        foreach (var line in File.ReadAllLines(path))
        {
            var parts = line.Split('=', 2, StringSplitOptions.TrimEntries);
            if (parts.Length == 2 && parts[0] == "page-size-bits"
                && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out int bits) && bits is >= 12 and <= 30)
                return bits;
        }
        throw new LogLayoutException($"'{path}' does not say the log's page size (expected a line 'page-size-bits=N')");
    }

    private static void Write(string directory, int bits)
    {
        string path = Path.Combine(directory, FileName);
        string tmp = path + ".tmp";
        using (var file = new FileStream(tmp, FileMode.Create, FileAccess.Write, FileShare.None))
        {
            var text = System.Text.Encoding.ASCII.GetBytes(
                $"# FasterLog page size of this log; fixed when the log was created (see LogLayout.cs)\npage-size-bits={bits}\n");
            file.Write(text);
            file.Flush(flushToDisk: true);
        }
        File.Move(tmp, path, overwrite: true);
        DirectorySync.Fsync(directory);
    }

    private static string Mib(long bytes) => bytes >= 1 << 20 ? $"{bytes >> 20} MiB" : $"{bytes >> 10} KiB";
}

/// <summary>The existing log cannot be opened with this configuration; the message says what to change.</summary>
public sealed class LogLayoutException(string message) : IOException(message);
