using System.Buffers.Binary;
using System.IO.Hashing;

namespace HalfMsg.Broker.FrontEnds;

/// <summary>
/// Whether a compressed body inflated whole. .NET's <see cref="System.IO.Compression.ZLibStream"/> and
/// <see cref="System.IO.Compression.GZipStream"/> end without an error when their input stops early (in the deflate
/// data, or in the checksum trailer, which is then not verified either): what they inflated so far looks like the whole
/// body. The trailer at the very end of the input must therefore match the inflated bytes.
/// </summary>
internal static class CompressedBodyTrailer
{
    /// <summary>zlib (RFC 1950): the input ends with the Adler-32 of all the inflated bytes, big-endian.</summary>
    public static bool ZlibEnded(ReadOnlySpan<byte> input, ReadOnlySpan<byte> inflated)
        => input.Length >= 2 + 2 + 4 && BinaryPrimitives.ReadUInt32BigEndian(input[^4..]) == Adler32(inflated);

    /// <summary>gzip (RFC 1952): the input ends with the last member's CRC-32 and its size modulo 2^32, little-endian.
    /// Members may follow one another (.NET inflates them all into one body): the last member's bytes are the last
    /// ISIZE of the inflated ones.</summary>
    public static bool GzipEnded(ReadOnlySpan<byte> input, ReadOnlySpan<byte> inflated)
    {
        if (input.Length < 10 + 2 + 8) return false;
        uint crc = BinaryPrimitives.ReadUInt32LittleEndian(input[^8..]);
        uint size = BinaryPrimitives.ReadUInt32LittleEndian(input[^4..]);
        // Bodies are far below 4 GiB, so ISIZE is the member's whole size.
        if (size > (uint)inflated.Length) return false;
        return Crc32.HashToUInt32(inflated[^(int)size..]) == crc;
    }

    private static uint Adler32(ReadOnlySpan<byte> data)
    {
        const uint Mod = 65521;
        const int Run = 5552; // the most bytes before b can overflow 32 bits
        uint a = 1, b = 0;
        while (!data.IsEmpty)
        {
            int n = Math.Min(Run, data.Length);
            foreach (byte x in data[..n])
            {
                a += x;
                b += a;
            }
            a %= Mod;
            b %= Mod;
            data = data[n..];
        }
        return (b << 16) | a;
    }
}
