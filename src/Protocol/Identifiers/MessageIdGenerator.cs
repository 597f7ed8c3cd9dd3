using System.Buffers.Binary;
using System.Diagnostics;
using System.Net.NetworkInformation;
using System.Security.Cryptography;

namespace HalfMsg.Protocol.Identifiers;

/// <summary>
/// Generates RocketMQ 5 "v1" message ids, the format the official clients use:
/// 17 bytes rendered as 34 upper-case hex characters,
/// <c>0x01 | MAC (6 bytes) | pid (2 bytes) | seconds since 2021-01-01Z (4 bytes) | sequence (4 bytes)</c>,
/// all big-endian. Ids received from clients are opaque: the broker must accept any non-empty id and only
/// uses this generator for ids it mints itself.
/// </summary>
public sealed class MessageIdGenerator
{
    /// <summary>Total byte length of an id.</summary>
    public const int ByteLength = 17;

    /// <summary>Length of the hex string form.</summary>
    public const int Length = ByteLength * 2;

    /// <summary>Version byte of this layout.</summary>
    public const byte Version = 0x01;

    private static readonly DateTimeOffset Epoch = new(2021, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly byte[] _prefix = new byte[9]; // version | mac | pid — fixed for the process
    private readonly TimeProvider _time;
    private int _sequence;

    /// <summary>Process-wide shared instance (ids are unique per process via its sequence).</summary>
    public static MessageIdGenerator Shared { get; } = new();

    /// <summary>Creates a generator using the machine's MAC address and process id.</summary>
    public MessageIdGenerator()
        : this(TimeProvider.System)
    {
    }

    /// <summary>Creates a generator with a custom clock (for tests).</summary>
    public MessageIdGenerator(TimeProvider time)
    {
        _time = time ?? throw new ArgumentNullException(nameof(time));
        _prefix[0] = Version;
        GetMacAddress(_prefix.AsSpan(1, 6));
        BinaryPrimitives.WriteUInt16BigEndian(_prefix.AsSpan(7, 2), unchecked((ushort)Environment.ProcessId));
    }

    /// <summary>Returns a new id. Thread-safe; allocates only the result string.</summary>
    public string Next()
    {
        Span<byte> id = stackalloc byte[ByteLength];
        _prefix.CopyTo(id);
        long seconds = (long)(_time.GetUtcNow() - Epoch).TotalSeconds;
        BinaryPrimitives.WriteUInt32BigEndian(id.Slice(9, 4), unchecked((uint)seconds));
        BinaryPrimitives.WriteUInt32BigEndian(id.Slice(13, 4), unchecked((uint)Interlocked.Increment(ref _sequence)));
        return Convert.ToHexString(id);
    }

    /// <summary>
    /// True if <paramref name="id"/> looks like a v1 id (34 hex digits starting with <c>01</c>). Informational only:
    /// never reject client-supplied ids on this basis.
    /// </summary>
    public static bool IsWellFormed(string? id)
    {
        if (id is null || id.Length != Length || id[0] != '0' || id[1] != '1')
        {
            return false;
        }

        foreach (char c in id)
        {
            if (!char.IsAsciiHexDigit(c))
            {
                return false;
            }
        }

        return true;
    }

    // Lower 6 bytes of the first non-loopback interface's hardware address
    // (all-zero addresses skipped); otherwise random bytes, so two hosts are unlikely to share a prefix.
    private static void GetMacAddress(Span<byte> destination)
    {
        try
        {
            foreach (NetworkInterface nic in NetworkInterface.GetAllNetworkInterfaces())
            {
                if (nic.NetworkInterfaceType == NetworkInterfaceType.Loopback)
                {
                    continue;
                }

                byte[] mac = nic.GetPhysicalAddress().GetAddressBytes();
                if (mac.Length >= 6 && mac.AsSpan().ContainsAnyExcept((byte)0))
                {
                    mac.AsSpan(mac.Length - 6).CopyTo(destination);
                    return;
                }
            }
        }
        catch (NetworkInformationException ex)
        {
            Debug.WriteLine($"MAC lookup failed, using random node id: {ex.Message}");
        }
        catch (PlatformNotSupportedException)
        {
            // e.g. sandboxed environments; fall through to random
        }

        RandomNumberGenerator.Fill(destination);
    }
}
