using System.Buffers.Binary;
using System.Numerics;

namespace HalfMsg.Broker.Core.Storage;

/// <summary>CRC-32C (Castagnoli), hardware-accelerated through <see cref="BitOperations.Crc32C(uint, ulong)"/>.</summary>
public static class Crc32C
{
    public static uint Compute(ReadOnlySpan<byte> data, uint seed = 0)
    {
        uint crc = ~seed;
        while (data.Length >= 8)
        {
            crc = BitOperations.Crc32C(crc, BinaryPrimitives.ReadUInt64LittleEndian(data));
            data = data[8..];
        }
        foreach (var b in data) crc = BitOperations.Crc32C(crc, b);
        return ~crc;
    }
}
