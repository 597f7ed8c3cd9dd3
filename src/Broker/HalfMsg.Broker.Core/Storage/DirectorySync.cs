using System.Runtime.InteropServices;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>
/// fsync of a directory, so that a file created or renamed in it survives a power loss (POSIX: the new name is durable
/// only once the directory is synced). .NET has no API for it; on Linux and macOS this opens the directory and fsyncs
/// it, elsewhere it does nothing (Windows makes renames durable with the file).
/// </summary>
public static class DirectorySync
{
    /// <summary>Syncs <paramref name="directory"/>; throws <see cref="IOException"/> if the sync itself fails.</summary>
    public static void Fsync(string directory)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        int fd = Open(directory, 0 /* O_RDONLY */);
        if (fd < 0) throw new IOException($"cannot open directory '{directory}' to sync it (errno {Marshal.GetLastPInvokeError()})");
        try
        {
            if (FsyncFd(fd) != 0) throw new IOException($"fsync of directory '{directory}' failed (errno {Marshal.GetLastPInvokeError()})");
        }
        finally
        {
            Close(fd);
        }
    }

    [DllImport("libc", EntryPoint = "open", SetLastError = true)]
    private static extern int Open([MarshalAs(UnmanagedType.LPUTF8Str)] string path, int flags);

    [DllImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static extern int FsyncFd(int fd);

    [DllImport("libc", EntryPoint = "close", SetLastError = true)]
    private static extern int Close(int fd);
}
